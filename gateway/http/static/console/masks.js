/* feedgate console: the privacy mask editor. Masks are polygons over a still of the camera, in
   fractions of the picture (0..1 from the top left), drawn as SVG over the still: click to add
   a corner, drag a corner to move it. Saving and deleting go through the REST API
   (PUT/DELETE /v1/masks/<id>) with the page's CSRF value, where they are checked and audited. */
"use strict";
(function () {
  const root = document.getElementById("mask-editor");
  if (!root) return;
  const data = JSON.parse(root.dataset.editor);
  const svg = root.querySelector("svg.overlay");
  const form = document.getElementById("mask-form");
  const status = document.getElementById("mask-status");
  const poly = window.feedgatePolygon;
  const el = poly.el;
  const pointsAttr = poly.pointsAttr;
  const MAX_POINTS = 64;
  const masks = new Map(data.masks.map(function (m) { return [m.id, m]; }));
  let current = null; // the mask being edited: {id, points: [{x, y}], ...}
  let dragging = -1;

  function draw() {
    poly.clear(svg);
    masks.forEach(function (m) {
      if (current && m.id === current.id) return;
      const shape = el("polygon", { points: pointsAttr(m.points), class: "zone " + m.kind, "data-mask": m.id });
      const title = el("title", {});
      title.textContent = m.id + (m.label ? ": " + m.label : "");
      shape.appendChild(title);
      svg.appendChild(shape);
    });
    if (current) poly.drawEditing(svg, current.points);
  }

  function say(text, bad) {
    if (!status) return;
    status.hidden = false;
    status.textContent = text;
    status.classList.toggle("bad", !!bad);
    status.classList.toggle("good", !bad);
  }

  function select(id) {
    const m = masks.get(id);
    if (!m) return;
    current = JSON.parse(JSON.stringify(m));
    if (form) {
      form.elements.id.value = m.id;
      form.elements.id.readOnly = true;
      form.elements.label.value = m.label || "";
      form.elements.kind.value = m.kind;
      form.querySelectorAll('input[name="tenant_kinds"]').forEach(function (box) {
        box.checked = m.tenant_kinds.indexOf(box.value) >= 0;
      });
    }
    draw();
  }

  function fresh() {
    current = { id: "", points: [] };
    if (form) {
      form.reset();
      form.elements.id.readOnly = false;
    }
    draw();
  }

  function at(ev) {
    return poly.at(svg, ev);
  }

  document.addEventListener("click", function (ev) {
    const pick = ev.target.closest("[data-select]");
    if (pick) select(pick.dataset.select);
  });

  svg.addEventListener("pointerdown", function (ev) {
    const corner = ev.target.closest("[data-corner]");
    if (data.editable && corner) {
      dragging = Number(corner.dataset.corner);
      svg.setPointerCapture(ev.pointerId);
      ev.preventDefault();
      return;
    }
    const zone = ev.target.closest("[data-mask]");
    if (zone && (!current || current.points.length === 0)) {
      select(zone.dataset.mask);
      return;
    }
    if (!data.editable) return;
    if (!current) fresh();
    if (current.points.length >= MAX_POINTS) return say("A mask has at most " + MAX_POINTS + " corners.", true);
    current.points.push(at(ev));
    draw();
  });
  svg.addEventListener("pointermove", function (ev) {
    if (dragging < 0 || !current) return;
    current.points[dragging] = at(ev);
    draw();
  });
  svg.addEventListener("pointerup", function () { dragging = -1; });

  if (!form) return;
  form.addEventListener("click", async function (ev) {
    const action = ev.target.closest("[data-action]");
    if (!action) return;
    if (action.dataset.action === "new") fresh();
    if (action.dataset.action === "undo" && current) {
      current.points.pop();
      draw();
    }
    if (action.dataset.action === "delete" && current && masks.has(current.id)) {
      if (!window.confirm("Delete mask " + current.id + "? Viewers see what it covered at once.")) return;
      const res = await window.feedgate.api("DELETE", "/v1/masks/" + encodeURIComponent(current.id));
      if (!res.ok) return say((res.data && res.data.detail) || "refused", true);
      masks.delete(current.id);
      say("Deleted " + current.id + " (recorded in the audit log).", false);
      fresh();
    }
  });
  form.addEventListener("submit", async function (ev) {
    ev.preventDefault();
    if (!current || current.points.length < 3) return say("Click at least three corners first.", true);
    const id = form.elements.id.value.trim();
    const body = {
      id: id,
      camera_id: data.camera,
      points: current.points,
      kind: form.elements.kind.value,
      tenant_kinds: Array.from(form.querySelectorAll('input[name="tenant_kinds"]:checked')).map(function (b) { return b.value; }),
      label: form.elements.label.value.trim(),
    };
    const res = await window.feedgate.api("PUT", "/v1/masks/" + encodeURIComponent(id), body);
    if (!res.ok) {
      const d = res.data || {};
      return say((d.field ? d.field + ": " : "") + (d.detail || "refused (" + res.status + ")"), true);
    }
    masks.set(id, res.data);
    current = null;
    draw();
    say("Saved " + id + " (recorded in the audit log).", false);
    form.elements.id.readOnly = false;
  });

  draw();
  window.feedgateMasks = { masks: masks };
})();
