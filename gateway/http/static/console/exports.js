/* feedgate console: follow unfinished exports (and subject access copies) on the page. Each row
   in state queued or running asks /console/exports/<id>/progress every second and shows its
   progress; once it has finished (done, failed, cancelled) the page is loaded again, to show
   the files, their SHA-256 and the signing key. Plain JavaScript, no library. */
"use strict";
(function () {
  const EVERY_MS = 1000;

  function follow(row) {
    const id = row.dataset.export;
    const bar = row.querySelector("[data-progress]");
    const percent = row.querySelector("[data-percent]");
    const state = row.querySelector("[data-state-text]");
    async function poll() {
      let res;
      try {
        res = await fetch("/console/exports/" + encodeURIComponent(id) + "/progress",
          { credentials: "same-origin", cache: "no-store" });
      } catch (err) {
        setTimeout(poll, 5 * EVERY_MS); // the gateway is restarting: try again, slower
        return;
      }
      if (!res.ok || !(res.headers.get("Content-Type") || "").startsWith("application/json")) {
        if (state) state.textContent = "unknown (" + res.status + ")";
        return; // signed out, or no longer ours: stop
      }
      const data = await res.json();
      row.dataset.state = data.state;
      if (state) state.textContent = data.state;
      if (bar) bar.value = data.percent;
      if (percent) percent.textContent = data.percent + "%";
      if (data.unfinished) {
        setTimeout(poll, EVERY_MS);
      } else {
        window.location.reload();
      }
    }
    setTimeout(poll, EVERY_MS);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll('[data-export][data-state="queued"], [data-export][data-state="running"]').forEach(follow);
  });
})();
