/* feedgate console: calls to this gateway's REST API with the page's CSRF value, and the
   buttons that make them ([data-api]: kick a session, revoke a grant, issue a sign-in link).
   Plain JavaScript, no library; the session cookie goes with every same-origin request. */
"use strict";
(function () {
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.content : "";

  async function api(method, url, body) {
    const headers = { "X-CSRF-Token": csrf };
    const init = { method: method, headers: headers, credentials: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetch(url, init);
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (err) {
      data = { detail: text };
    }
    return { ok: res.ok, status: res.status, data: data };
  }

  function say(where, text, bad) {
    where.hidden = false;
    where.textContent = text;
    where.classList.toggle("bad", !!bad);
    where.classList.toggle("good", !bad);
  }

  document.addEventListener("click", async function (ev) {
    const button = ev.target.closest("[data-api]");
    if (!button) return;
    const space = button.dataset.api.indexOf(" ");
    const method = button.dataset.api.slice(0, space);
    const url = button.dataset.api.slice(space + 1);
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    button.disabled = true;
    const body = button.dataset.body ? JSON.parse(button.dataset.body) : undefined;
    let res;
    try {
      res = await api(method, url, body);
    } finally {
      button.disabled = false;
    }
    const out = document.getElementById("link-out");
    if (!res.ok) {
      const why = (res.data && res.data.detail) || "refused (" + res.status + ")";
      if (out) say(out, why, true); else window.alert(why);
      return;
    }
    const done = button.dataset.done;
    if (done === "reload") {
      window.location.reload();
    } else if (done === "remove") {
      const row = button.closest("tr");
      if (row) row.remove();
    } else if (done === "link" && out) {
      const link = window.location.origin + "/console/login?token=" + encodeURIComponent(res.data.token);
      say(out, "One-time sign-in link for " + JSON.parse(button.dataset.body).subject +
        " (valid 15 minutes): " + link, false);
      out.dataset.link = link;
    }
  });

  window.feedgate = { csrf: csrf, api: api };
})();
