/* feedgate console: a camera's recording timeline, in plain JavaScript.

   It asks this gateway's /list (MediaMTX's playback API) for the recorded spans of the last
   24 hours and draws them on a bar (from a little before the first of them to now): recorded
   stretches filled, gaps (camera outages, gateway
   restarts) empty. A click on the bar plays the recording from that instant in the tile, cut
   by /get as an MP4 the <video> element seeks in with HTTP Range; "Live" goes back to the WHEP
   player. What a tenant may not play back (no right, past its grant's age) is not listed: the
   gateway answers for the signed-in user, with the purpose typed above if the grant needs one. */
"use strict";
(function () {
  const WINDOW_MS = 24 * 3600 * 1000;
  const CLIP_S = 300;

  function iso(ms) {
    return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
  }

  function purpose() {
    const input = document.querySelector("[data-purpose] input[name=purpose]");
    return input && input.value.trim() ? input.value.trim() : "";
  }

  function query(params) {
    const p = purpose();
    if (p) params.purpose = p;
    return new URLSearchParams(params).toString();
  }

  function setup(root) {
    const camera = root.dataset.camera;
    const bar = root.querySelector(".bar");
    const status = root.querySelector(".status");
    const live = root.querySelector("[data-live]");
    const tile = document.querySelector(`.tile[data-camera="${camera}"]`);
    const video = root.querySelector("video.playback");
    let end = Date.now();
    let start = end - WINDOW_MS;

    function at(fraction) {
      return start + fraction * (end - start);
    }

    async function load() {
      end = Date.now();
      start = end - WINDOW_MS;
      let spans = [];
      try {
        const r = await fetch("/list?" + query({ path: camera, start: iso(start), end: iso(end) }), {
          credentials: "same-origin",
        });
        if (!r.ok) {
          status.textContent = (await r.text()).trim() || `playback refused (${r.status})`;
          return;
        }
        spans = await r.json();
      } catch (e) {
        status.textContent = "recordings unavailable";
        return;
      }
      if (spans.length) {
        // The bar runs from a little before the first recording (within the 24 h) to now.
        const first = Date.parse(spans[0].start);
        start = Math.max(start, first - 0.05 * (end - first));
      }
      bar.replaceChildren();
      let seconds = 0;
      for (const span of spans) {
        const s = Date.parse(span.start);
        const el = document.createElement("span");
        el.className = "span";
        el.style.left = ((100 * (s - start)) / (end - start)).toFixed(3) + "%";
        el.style.width = Math.max(0.1, (100 * span.duration * 1000) / (end - start)).toFixed(3) + "%";
        el.title = `${span.start} for ${Math.round(span.duration)} s`;
        bar.appendChild(el);
        seconds += span.duration;
      }
      bar.dataset.spans = String(spans.length);
      status.textContent = spans.length
        ? `${spans.length} recorded stretch${spans.length > 1 ? "es" : ""}, ${Math.round(seconds / 60)} min in 24 h`
        : "nothing recorded in the last 24 hours";
    }

    function play(ms) {
      video.src = "/get?" + query({ path: camera, start: iso(ms), duration: String(CLIP_S), format: "mp4" });
      video.hidden = false;
      live.hidden = false;
      if (tile) tile.hidden = true;
      root.dataset.playing = iso(ms);
      const exporting = root.querySelector("[data-export-link]");
      if (exporting) {
        // The Exports page, with this stretch (the next five minutes) filled in.
        exporting.href = "/console/exports?" + new URLSearchParams({
          camera: camera, start: iso(ms), end: iso(Math.min(ms + CLIP_S * 1000, Date.now())),
        }).toString();
      }
      status.textContent = `playing from ${new Date(ms).toLocaleString()}`;
      video.play().catch(function () {});
    }

    bar.addEventListener("click", function (ev) {
      const box = bar.getBoundingClientRect();
      play(at((ev.clientX - box.left) / box.width));
    });
    live.addEventListener("click", function () {
      video.pause();
      video.removeAttribute("src");
      video.load();
      video.hidden = true;
      live.hidden = true;
      if (tile) tile.hidden = false;
      delete root.dataset.playing;
      load();
    });
    video.addEventListener("error", function () {
      status.textContent = "this stretch cannot be played (not recorded, or not for you)";
    });
    load();
    setInterval(load, 60000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-timeline]").forEach(setup);
  });
})();
