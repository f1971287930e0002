/* feedgate console: a camera's recording timeline, in plain JavaScript.

   It asks this gateway's /list (MediaMTX's playback API) for the recorded spans of the last
   24 hours and draws them on a bar (from a little before the first of them to now): recorded
   stretches filled, gaps (camera outages, gateway
   restarts) empty. A click on the bar plays the recording from that instant in the tile, cut
   by /get as an MP4 the <video> element seeks in with HTTP Range; "Live" goes back to the WHEP
   player. What a tenant may not play back (no right, past its grant's age) is not listed: the
   gateway answers for the signed-in user, with the purpose typed above if the grant needs one.

   A masked viewer (the page says data-masked) plays the gateway's masked HLS instead: /get
   would burn the whole clip in before its first byte, while each HLS segment (a few seconds,
   its own init and fragment) is burnt as it is asked for. The segments are appended in order
   to a Media Source (sequence mode: a gap between two recorded files just closes up), at most
   AHEAD_S seconds ahead of the picture, and what lies BEHIND_S behind it is dropped. A segment
   answered 503 (the gateway's transcodes all busy) is asked again after its Retry-After. */
"use strict";
(function () {
  const WINDOW_MS = 24 * 3600 * 1000;
  const CLIP_S = 300;
  const AHEAD_S = 20;
  const BEHIND_S = 30;
  const RETRIES = 5;

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

    let generation = 0; // a new click (or Live) stops the masked feed of the previous one

    function play(ms) {
      generation += 1;
      if (root.dataset.masked !== undefined) {
        playMasked(ms, generation);
      } else {
        video.src = "/get?" + query({ path: camera, start: iso(ms), duration: String(CLIP_S), format: "mp4" });
      }
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

    async function playMasked(ms, mine) {
      const url = "/hls/" + encodeURIComponent(camera) + "/index.m3u8?" +
        query({ start: iso(ms), duration: String(CLIP_S) });
      const segments = [];
      let first = null; // the capture time the first segment starts at (its key frame)
      try {
        const r = await fetch(url, { credentials: "same-origin" });
        if (!r.ok) {
          status.textContent = (await r.text()).trim() || `playback refused (${r.status})`;
          return;
        }
        let init = null;
        for (const line of (await r.text()).split("\n")) {
          const map = line.match(/^#EXT-X-MAP:URI="([^"]+)"/);
          const date = line.match(/^#EXT-X-PROGRAM-DATE-TIME:(.+)$/);
          if (date && first === null) first = Date.parse(date[1]);
          if (map) init = new URL(map[1], r.url).href;
          else if (line && !line.startsWith("#")) segments.push({ init: init, media: new URL(line, r.url).href });
        }
      } catch (e) {
        status.textContent = "recordings unavailable";
        return;
      }
      if (!segments.length || mine !== generation) return;
      const source = new MediaSource();
      video.src = URL.createObjectURL(source);
      video.play().catch(function () {});
      await new Promise(function (ok) { source.addEventListener("sourceopen", ok, { once: true }); });
      URL.revokeObjectURL(video.src);
      let buffer = null;
      try {
        for (const seg of segments) {
          const init = await segment(seg.init, mine);
          const media = await segment(seg.media, mine);
          if (init === null || media === null) return;
          if (buffer === null) {
            buffer = source.addSourceBuffer(mimeOf(init));
            buffer.mode = "sequence";
          }
          await ahead(mine);
          if (mine !== generation) return;
          await append(buffer, init);
          await append(buffer, media);
          if (seg === segments[0] && first !== null && ms > first) {
            // The first segment starts at the key frame before the instant clicked: go there.
            video.currentTime = Math.min((ms - first) / 1000, video.buffered.end(0) - 0.1);
          }
          await trim(buffer);
        }
        if (mine === generation && source.readyState === "open") source.endOfStream();
      } catch (e) {
        if (mine === generation) status.textContent = "this stretch cannot be played (" + e + ")";
      }
    }

    // One segment's bytes; null once another click took over or it stays refused.
    async function segment(url, mine) {
      for (let attempt = 0; attempt < RETRIES && mine === generation; attempt++) {
        const r = await fetch(url, { credentials: "same-origin" });
        if (r.ok) return new Uint8Array(await r.arrayBuffer());
        if (r.status !== 503) break;
        const wait = Math.min(30, Number(r.headers.get("Retry-After")) || 2);
        status.textContent = "the gateway is busy burning in masks; trying again";
        await new Promise(function (ok) { setTimeout(ok, wait * 1000); });
      }
      return null;
    }

    // Wait while the buffer holds AHEAD_S seconds more than the picture shows.
    async function ahead(mine) {
      while (mine === generation && video.buffered.length &&
             video.buffered.end(video.buffered.length - 1) - video.currentTime > AHEAD_S) {
        await new Promise(function (ok) { video.addEventListener("timeupdate", ok, { once: true }); });
      }
    }

    function append(buffer, bytes) {
      return new Promise(function (ok, fail) {
        buffer.addEventListener("updateend", ok, { once: true });
        buffer.addEventListener("error", fail, { once: true });
        buffer.appendBuffer(bytes);
      });
    }

    // Drop what lies more than BEHIND_S behind the picture (memory stays a minute or so).
    function trim(buffer) {
      const behind = video.currentTime - BEHIND_S;
      if (!(behind > 0 && video.buffered.length && video.buffered.start(0) < behind)) {
        return Promise.resolve();
      }
      return new Promise(function (ok) {
        buffer.addEventListener("updateend", ok, { once: true });
        buffer.remove(0, behind);
      });
    }

    bar.addEventListener("click", function (ev) {
      const box = bar.getBoundingClientRect();
      play(at((ev.clientX - box.left) / box.width));
    });
    live.addEventListener("click", function () {
      generation += 1;
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

  // The MIME type with codecs a Source Buffer needs, read from an init segment's sample
  // entries: avc1 with its avcC profile and level, and AAC (mp4a.40.2) or Opus when it has
  // sound (a track the Source Buffer is not told of fails the whole append, pictures too).
  function mimeOf(init) {
    const text = String.fromCharCode.apply(null, init.subarray(0, Math.min(init.length, 4096)));
    const codecs = [];
    const avcC = text.indexOf("avcC");
    if (avcC >= 0) {
      const hex = function (i) { return init[avcC + 5 + i].toString(16).padStart(2, "0"); };
      codecs.push("avc1." + hex(0) + hex(1) + hex(2));
    }
    if (text.indexOf("mp4a") >= 0) codecs.push("mp4a.40.2");
    else if (text.indexOf("Opus") >= 0) codecs.push("opus");
    return 'video/mp4; codecs="' + codecs.join(", ") + '"';
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-timeline]").forEach(setup);
  });
})();
