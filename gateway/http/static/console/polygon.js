/* feedgate console: drawing polygons over a picture, shared by the mask editor (masks.js) and
   the subject access redaction editor (redact.js). Points are fractions of the picture (0..1
   from the top left) drawn on an SVG of viewBox 0 0 1000 1000 laid over it, so a polygon fits
   every resolution. Plain JavaScript, no library. */
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";

  function el(name, attrs) {
    const node = document.createElementNS(NS, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    return node;
  }

  function pointsAttr(points) {
    return points.map(function (p) { return (p.x * 1000).toFixed(1) + "," + (p.y * 1000).toFixed(1); }).join(" ");
  }

  // The point of the picture under a pointer event, rounded to 1/10000.
  function at(svg, ev) {
    const box = svg.getBoundingClientRect();
    const clamp = function (v) { return Math.min(1, Math.max(0, v)); };
    return {
      x: Math.round(clamp((ev.clientX - box.left) / box.width) * 10000) / 10000,
      y: Math.round(clamp((ev.clientY - box.top) / box.height) * 10000) / 10000,
    };
  }

  function clear(svg) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
  }

  // The polygon being drawn (a polyline until it has three corners) and its corner handles.
  function drawEditing(svg, points) {
    if (points.length >= 2) {
      svg.appendChild(el(points.length >= 3 ? "polygon" : "polyline",
        { points: pointsAttr(points), class: "zone editing" }));
    }
    points.forEach(function (p, i) {
      svg.appendChild(el("circle", { cx: p.x * 1000, cy: p.y * 1000, r: 9, class: "corner", "data-corner": i }));
    });
  }

  window.feedgatePolygon = { el: el, pointsAttr: pointsAttr, at: at, clear: clear, drawEditing: drawEditing };
})();
