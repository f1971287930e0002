/* feedgate console: the subject access redaction editor. Zones are polygons over a still of
   the camera (drawn with polygon.js, the mask editor's drawing code), each blacked out over a
   time range; "Add zone" keeps the polygon being drawn with the range typed beside it, and
   the form sends them all as JSON in its "redactions" field (a polygon with three corners or
   more that was not added yet goes too). Under the drawing plays the window's footage (the
   playback API's /get), scrubbed with a slider, so a zone is drawn where the third party is
   and timed from the footage: what the camera recorded in the window, an hour at most at a
   time, picked from "Recorded"; without playback, a still of the camera. The copy is made
   by the gateway. */
"use strict";
(function () {
  const root = document.getElementById("redact-editor");
  const form = document.getElementById("copy-form");
  if (!root || !form) return;
  const poly = window.feedgatePolygon;
  const data = JSON.parse(root.dataset.redact);
  const svg = root.querySelector("svg.overlay");
  const still = root.querySelector("img.still");
  const video = root.querySelector("video.still");
  const scrub = form.elements.scrub;
  const clip = form.elements.clip;
  const shownAt = form.querySelector("[data-at]");
  let mediaStart = NaN; // when the footage's first frame was captured (ms since the epoch)
  const list = document.getElementById("zone-list");
  const status = document.getElementById("redact-status");
  const MAX_POINTS = 64;
  const MAX_ZONES = 32;
  const zones = []; // {id, points: [{x, y}], start, end}
  let current = [];
  let dragging = -1;
  let made = 0;

  function say(text, bad) {
    status.hidden = false;
    status.textContent = text;
    status.classList.toggle("bad", !!bad);
  }

  function draw() {
    poly.clear(svg);
    zones.forEach(function (z) {
      const shape = poly.el("polygon", { points: poly.pointsAttr(z.points), class: "zone", "data-zone": z.id });
      const title = poly.el("title", {});
      title.textContent = z.id + ": " + z.start + " to " + z.end;
      shape.appendChild(title);
      svg.appendChild(shape);
    });
    poly.drawEditing(svg, current);
  }

  function listed() {
    list.replaceChildren();
    if (!zones.length) {
      const none = document.createElement("li");
      none.className = "muted";
      none.textContent = "No zones yet.";
      list.appendChild(none);
    }
    zones.forEach(function (z, i) {
      const item = document.createElement("li");
      item.dataset.zone = z.id;
      item.textContent = z.id + ": " + z.points.length + " corners, black " + z.start.replace("T", " ") +
        " to " + z.end.replace("T", " ") + " ";
      const drop = document.createElement("button");
      drop.type = "button";
      drop.className = "link";
      drop.textContent = "remove";
      drop.addEventListener("click", function () { zones.splice(i, 1); listed(); draw(); });
      item.appendChild(drop);
      list.appendChild(item);
    });
    form.elements.redactions.value = JSON.stringify(zones);
  }

  function add() {
    if (current.length < 3) return say("Click at least three corners first.", true), false;
    if (zones.length >= MAX_ZONES) return say("At most " + MAX_ZONES + " zones.", true), false;
    made += 1;
    zones.push({ id: "zone-" + made, points: current, start: form.elements.zone_start.value, end: form.elements.zone_end.value });
    current = [];
    listed();
    draw();
    say(zones.length + " zone" + (zones.length > 1 ? "s" : "") + " to black out.", false);
    return true;
  }

  // A time as the page's datetime-local inputs show it: the deployment's local time.
  function localInput(ms) {
    const parts = {};
    new Intl.DateTimeFormat("en-GB", {
      timeZone: data.zone, year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
    }).formatToParts(new Date(ms)).forEach(function (p) { parts[p.type] = p.value; });
    return parts.year + "-" + parts.month + "-" + parts.day + "T" + parts.hour + ":" + parts.minute + ":" + parts.second;
  }

  function now() {
    return mediaStart + video.currentTime * 1000;
  }

  function showStill() {
    if (video) { video.hidden = true; video.removeAttribute("src"); }
    still.hidden = false;
    still.src = "/console/stills/" + encodeURIComponent(form.elements.camera.value);
  }

  // The recorded stretches of the chosen camera's window, as "Recorded" offers them.
  function clips() {
    return (data.clips || {})[form.elements.camera.value] || [];
  }

  function offerClips() {
    if (!clip) return;
    clip.replaceChildren();
    clips().forEach(function (c, i) {
      const option = document.createElement("option");
      option.value = String(i);
      option.textContent = c.label;
      clip.appendChild(option);
    });
  }

  // The chosen stretch of the chosen camera's footage under the drawing (/get, cut once and
  // kept a little while, so the first byte's request tells when the footage starts and the
  // <video>'s requests are served from the same cut).
  async function footage() {
    if (!video || !data.playback) return showStill();
    const chosen = (clip && clips()[Number(clip.value)]) || clips()[0] ||
      { start: data.clip_start, seconds: data.clip_seconds };
    const url = "/get?" + new URLSearchParams({
      path: form.elements.camera.value, start: chosen.start, duration: String(chosen.seconds),
      format: "mp4", purpose: data.purpose,
    }).toString();
    try {
      const res = await fetch(url, { credentials: "same-origin", headers: { Range: "bytes=0-0" } });
      mediaStart = Date.parse((res.headers.get("X-Media-Start") || "").replace(/(\.\d{3})\d+/, "$1"));
      if (!res.ok || isNaN(mediaStart)) return showStill();
    } catch (err) {
      return showStill();
    }
    video.src = url;
    video.hidden = false;
    still.hidden = true;
  }

  if (video) {
    video.addEventListener("loadedmetadata", function () {
      scrub.max = String(Math.floor(video.duration * 10) / 10);
      scrub.value = "0";
      video.currentTime = 0;
    });
    video.addEventListener("timeupdate", function () {
      if (shownAt && !isNaN(mediaStart)) shownAt.textContent = localInput(now()).replace("T", " ");
    });
    video.addEventListener("error", showStill);
    scrub.addEventListener("input", function () { video.currentTime = Number(scrub.value); });
  }

  svg.addEventListener("pointerdown", function (ev) {
    const corner = ev.target.closest("[data-corner]");
    if (corner) {
      dragging = Number(corner.dataset.corner);
      svg.setPointerCapture(ev.pointerId);
      ev.preventDefault();
      return;
    }
    if (current.length >= MAX_POINTS) return say("A zone has at most " + MAX_POINTS + " corners.", true);
    current.push(poly.at(svg, ev));
    draw();
  });
  svg.addEventListener("pointermove", function (ev) {
    if (dragging < 0) return;
    current[dragging] = poly.at(svg, ev);
    draw();
  });
  svg.addEventListener("pointerup", function () { dragging = -1; });

  form.addEventListener("click", function (ev) {
    const action = ev.target.closest("[data-action]");
    if (!action) return;
    if (action.dataset.action === "add") add();
    if (action.dataset.action === "undo") { current.pop(); draw(); }
    if ((action.dataset.action === "from" || action.dataset.action === "to") && !isNaN(mediaStart)) {
      const field = action.dataset.action === "from" ? form.elements.zone_start : form.elements.zone_end;
      field.value = localInput(now());
    }
  });
  form.elements.camera.addEventListener("change", function () { offerClips(); footage(); });
  if (clip) clip.addEventListener("change", footage);
  form.addEventListener("submit", function (ev) {
    if (current.length >= 3 && !add()) ev.preventDefault();
    form.elements.redactions.value = JSON.stringify(zones);
  });

  draw();
  offerClips();
  footage();
  window.feedgateRedact = { zones: zones };
})();
