/* feedgate console: the video wall (and a camera's own page, a wall of one). Each tile is a
   WHEP player (player.js); choosing a tile's camera or a layout of 1, 4, 9 or 16 tiles saves
   the layout for this principal (PUT /console/wall/layout); "Full screen" fills the screen
   with the wall, a double click with one tile. */
"use strict";
(function () {
  const grid = document.querySelector(".tiles[data-layout]");
  if (!grid || !window.FeedgatePlayer) return;
  const tiles = Array.from(grid.querySelectorAll(".tile"));
  const players = new Map();

  function attach(tile) {
    const old = players.get(tile);
    if (old) old.stop();
    players.delete(tile);
    const video = tile.querySelector("video");
    const badge = tile.querySelector(".state");
    const camera = tile.dataset.camera;
    const show = function (text, kind) {
      badge.textContent = text;
      badge.className = "state status " + kind;
      badge.title = text;
      tile.dataset.state = kind;
    };
    if (!camera) {
      video.srcObject = null;
      show("empty", "");
      return;
    }
    const player = new window.FeedgatePlayer(video, camera, {
      purpose: grid.dataset.purpose || "",
      onstate: show,
    });
    players.set(tile, player);
    player.start();
  }

  function cameras() {
    return tiles.map(function (t) { return t.dataset.camera || null; });
  }

  function visible() {
    const select = grid.querySelector("select");
    if (!select) return [];
    return Array.from(select.options).map(function (o) { return o.value; }).filter(Boolean);
  }

  async function save(count) {
    if (grid.dataset.save === "no" || !window.feedgate) return true;
    const n = count || tiles.length;
    const chosen = cameras().slice(0, n);
    const spare = visible().filter(function (c) { return chosen.indexOf(c) < 0; });
    while (chosen.length < n) chosen.push(spare.shift() || null);
    const res = await window.feedgate.api("PUT", "/console/wall/layout", { tiles: n, cameras: chosen });
    return res.ok;
  }

  tiles.forEach(attach);

  grid.addEventListener("change", function (ev) {
    const select = ev.target.closest("select");
    if (!select) return;
    const tile = select.closest(".tile");
    if (select.value) tile.dataset.camera = select.value;
    else delete tile.dataset.camera;
    attach(tile);
    save();
  });

  document.querySelectorAll("[data-tiles-choice]").forEach(function (button) {
    button.addEventListener("click", async function () {
      await save(Number(button.dataset.tilesChoice));
      window.location.assign("/console/wall");
    });
  });

  const full = document.querySelector("[data-fullscreen]");
  if (full) {
    full.addEventListener("click", function () {
      if (document.fullscreenElement) document.exitFullscreen();
      else grid.requestFullscreen().catch(function () {});
    });
  }
  grid.addEventListener("dblclick", function (ev) {
    const tile = ev.target.closest(".tile");
    if (!tile || ev.target.closest("select")) return;
    if (document.fullscreenElement) document.exitFullscreen();
    else tile.requestFullscreen().catch(function () {});
  });

  const purpose = document.querySelector("form[data-purpose]");
  if (purpose) {
    purpose.addEventListener("submit", function (ev) {
      ev.preventDefault();
      grid.dataset.purpose = purpose.elements.purpose.value.trim();
      tiles.forEach(attach);
    });
  }

  window.addEventListener("pagehide", function () {
    players.forEach(function (p) { p.stop(); });
  });
  window.feedgateWall = { players: players, tiles: tiles };
})();
