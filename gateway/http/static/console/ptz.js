/* feedgate console: steering a camera from its tile. Drag on the pad to pan and tilt (a
   ContinuousMove at the drag's velocity, refreshed while held, with a short Timeout so the
   camera stops by itself if this page vanishes; Stop on release), the mouse wheel over the
   picture or the pad to zoom (a RelativeMove), the camera's presets (go to one, save the
   current position as one), home, and who holds control now (the lock-state event stream,
   GET /v1/cameras/{id}/ptz/events). Every call is the REST API's, made as the signed-in
   principal with the page's CSRF value (console.js), and refused there as it would be anywhere
   else: the panel says why. On a camera's page the panel steers that camera; on the wall it
   steers the tile whose "Steer" button was pressed last (shown on the tiles of cameras the
   principal may steer). */
"use strict";
(function () {
  const panel = document.querySelector("[data-ptz-camera]");
  if (!panel || !window.feedgate) return;
  let camera = "";
  let base = "";
  let tile = null;
  const pad = panel.querySelector(".ptz-pad");
  const knob = panel.querySelector(".ptz-knob");
  const holder = panel.querySelector(".ptz-holder");
  const said = panel.querySelector(".ptz-said");
  const list = panel.querySelector(".ptz-presets");
  const form = panel.querySelector("form.ptz-save");
  const REFRESH_MS = 250; // a held drag re-sends its move this often
  const TIMEOUT_S = 0.6; // ...with this Timeout, so a vanished page stops the camera soon
  const state = { dragging: false, x: 0, y: 0, sent: 0, timer: null, busy: false };

  function say(text, bad) {
    said.textContent = text;
    said.classList.toggle("bad", !!bad);
  }

  async function call(method, path, body) {
    const res = await window.feedgate.api(method, base + path, body);
    if (!res.ok) {
      const d = res.data || {};
      say(d.detail || d.title || "refused (" + res.status + ")", true);
    }
    return res;
  }

  function until(iso) {
    if (!iso) return "";
    const t = new Date(iso);
    return " until " + t.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function showLock(lock) {
    panel.dataset.lock = lock.state;
    if (lock.state === "free") {
      holder.textContent = "Nobody is steering this camera.";
    } else if (lock.state === "reserved") {
      holder.textContent = "Reserved by " + lock.holder.tenant_kind + until(lock.until) +
        (lock.reason ? ": " + lock.reason : "");
    } else {
      holder.textContent = "Steered by " + lock.holder.tenant_kind + until(lock.until);
    }
  }

  // ---- the joystick ----------------------------------------------------------------------------

  function where(ev) {
    const r = pad.getBoundingClientRect();
    const x = ((ev.clientX - r.left) / r.width) * 2 - 1;
    const y = 1 - ((ev.clientY - r.top) / r.height) * 2; // up is +1, as ONVIF's tilt
    const clamp = function (v) { return Math.max(-1, Math.min(1, v)); };
    return [clamp(x), clamp(y)];
  }

  function placeKnob(x, y) {
    knob.style.left = ((x + 1) / 2) * 100 + "%";
    knob.style.top = ((1 - y) / 2) * 100 + "%";
  }

  async function sendMove() {
    if (state.busy) return;
    state.busy = true;
    try {
      const x = Math.round(state.x * 100) / 100;
      const y = Math.round(state.y * 100) / 100;
      const res = await call("POST", "/move", { kind: "continuous", pan: x, tilt: y, zoom: 0, timeout: TIMEOUT_S });
      if (res.ok) {
        showLock(res.data.lock);
        say("Moving (" + x.toFixed(2) + ", " + y.toFixed(2) + ")", false);
      } else {
        stopDrag(false);
      }
    } finally {
      state.busy = false;
    }
  }

  function stopDrag(sendStop) {
    if (!state.dragging) return;
    state.dragging = false;
    clearInterval(state.timer);
    state.timer = null;
    placeKnob(0, 0);
    pad.classList.remove("on");
    if (sendStop) {
      call("POST", "/stop").then(function (res) {
        if (res.ok) { showLock(res.data.lock); say("Stopped", false); }
      });
    }
  }

  pad.addEventListener("pointerdown", function (ev) {
    ev.preventDefault();
    pad.setPointerCapture(ev.pointerId);
    state.dragging = true;
    pad.classList.add("on");
    [state.x, state.y] = where(ev);
    placeKnob(state.x, state.y);
    sendMove();
    state.timer = setInterval(sendMove, REFRESH_MS);
  });
  pad.addEventListener("pointermove", function (ev) {
    if (!state.dragging) return;
    [state.x, state.y] = where(ev);
    placeKnob(state.x, state.y);
  });
  pad.addEventListener("pointerup", function () { stopDrag(true); });
  pad.addEventListener("pointercancel", function () { stopDrag(true); });
  pad.addEventListener("lostpointercapture", function () { stopDrag(true); });

  async function zoom(ev) {
    ev.preventDefault();
    const step = ev.deltaY < 0 ? 0.1 : -0.1; // wheel up zooms in
    const res = await call("POST", "/move", { kind: "relative", pan: 0, tilt: 0, zoom: step });
    if (res.ok) {
      showLock(res.data.lock);
      say(step > 0 ? "Zoomed in" : "Zoomed out", false);
    }
  }
  pad.addEventListener("wheel", zoom, { passive: false });

  // ---- presets and home ------------------------------------------------------------------------

  async function loadPresets() {
    const res = await call("GET", "/presets");
    if (!res.ok) return;
    list.replaceChildren();
    res.data.presets.forEach(function (p) {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = p.name;
      b.dataset.preset = p.token;
      li.appendChild(b);
      list.appendChild(li);
    });
    if (!res.data.presets.length) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = "No presets yet.";
      list.appendChild(li);
    }
  }

  list.addEventListener("click", async function (ev) {
    const b = ev.target.closest("button[data-preset]");
    if (!b) return;
    const res = await call("POST", "/goto", { preset: b.dataset.preset });
    if (res.ok) { showLock(res.data.lock); say("Gone to " + b.textContent, false); }
  });

  panel.querySelector("[data-ptz-home]").addEventListener("click", async function () {
    const res = await call("POST", "/goto", { home: true });
    if (res.ok) { showLock(res.data.lock); say("Gone home", false); }
  });

  form.addEventListener("submit", async function (ev) {
    ev.preventDefault();
    const name = form.elements.name.value.trim();
    if (!name) return;
    const res = await call("POST", "/presets", { name: name });
    if (res.ok) {
      form.reset();
      say("Saved preset " + name, false);
      loadPresets();
    }
  });

  // ---- who holds control -----------------------------------------------------------------------

  let events = null;
  function watch() {
    events = new EventSource(base + "/events");
    const on = function (ev) {
      const data = JSON.parse(ev.data);
      showLock(data);
      if (data.yours && data.type === "preempted") {
        stopDrag(false);
        say("Control taken by " + (data.by ? data.by.tenant_kind : "a higher priority") +
          (data.why ? ": " + data.why : ""), true);
      }
    };
    ["state", "lock", "preempted", "released", "reserved", "reservation_ended"].forEach(function (t) {
      events.addEventListener(t, on);
    });
    events.addEventListener("end", function () { events.close(); });
  }

  async function attach(id) {
    stopDrag(true);
    if (events) events.close();
    events = null;
    if (tile) {
      tile.removeEventListener("wheel", zoom);
      tile.classList.remove("steering");
    }
    camera = id;
    base = "/v1/cameras/" + encodeURIComponent(camera) + "/ptz";
    panel.dataset.ptzCamera = camera;
    panel.dataset.ready = "";
    panel.hidden = false;
    tile = document.querySelector('.tile[data-camera="' + CSS.escape(camera) + '"]');
    if (tile) {
      tile.addEventListener("wheel", zoom, { passive: false });
      tile.classList.add("steering");
    }
    const name = panel.querySelector(".ptz-name");
    if (name) name.textContent = camera;
    say("", false);
    pad.classList.remove("off");
    const res = await call("GET", "/status");
    if (!res.ok) {
      panel.dataset.ready = "refused";
      pad.classList.add("off");
      return;
    }
    showLock(res.data.lock);
    panel.dataset.ready = "yes";
    await loadPresets();
    watch();
  }

  // The wall: a "Steer" button on each tile whose camera the principal may steer.
  const steerable = (panel.dataset.ptzSteerable || "").split(",").filter(Boolean);
  function buttons() {
    document.querySelectorAll(".tile").forEach(function (t) {
      let b = t.querySelector("button[data-steer]");
      const may = t.dataset.camera && steerable.indexOf(t.dataset.camera) >= 0;
      if (may && !b) {
        b = document.createElement("button");
        b.type = "button";
        b.dataset.steer = "";
        b.className = "steer";
        b.textContent = "Steer";
        t.appendChild(b);
      } else if (!may && b) {
        b.remove();
      }
    });
  }
  document.addEventListener("click", function (ev) {
    const b = ev.target.closest("button[data-steer]");
    if (b) attach(b.closest(".tile").dataset.camera);
  });
  document.addEventListener("change", function (ev) {
    if (!ev.target.closest(".tile select")) return;
    buttons();
    if (camera && (!tile || tile.dataset.camera !== camera)) {
      stopDrag(true);
      if (events) events.close();
      panel.hidden = true;
      camera = "";
    }
  });

  window.addEventListener("pagehide", function () {
    stopDrag(true);
    if (events) events.close();
  });
  window.feedgatePtz = { panel: panel, reload: loadPresets, attach: attach };
  if (panel.dataset.ptzCamera) attach(panel.dataset.ptzCamera);
  else buttons();
})();
