/* feedgate console: a WHEP player (draft-ietf-wish-whep) on a <video>, in plain JavaScript.

   It POSTs its offer to this gateway's /whep/<camera> with the session cookie and the page's
   CSRF value, applies the answer, and trickles later ICE candidates with PATCH. It reconnects
   by itself, with a doubling delay up to 10 s, when the connection fails or drops, when the
   gateway is briefly unavailable (429, 503, no network), or when the picture stops moving for
   8 s; it stops trying on a refusal (401, 403, 404, 422) and shows why. The ICE servers the
   gateway names in its answer's Link headers are used from the next connection on. */
"use strict";
(function () {
  const FATAL = new Set([400, 401, 403, 404, 413, 415, 422]);
  const MAX_BACKOFF = 10000;
  const FROZEN_MS = 8000;

  function csrf() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  function parseLinks(header) {
    const servers = [];
    if (!header) return servers;
    const re = /<([^>]+)>([^,]*)/g;
    let m;
    while ((m = re.exec(header)) !== null) {
      if (!/rel="?ice-server"?/.test(m[2])) continue;
      const server = { urls: m[1] };
      const user = /username="([^"]*)"/.exec(m[2]);
      const cred = /credential="([^"]*)"/.exec(m[2]);
      if (user) server.username = user[1];
      if (cred) server.credential = cred[1];
      servers.push(server);
    }
    return servers;
  }

  function gathered(pc, ms) {
    return new Promise(function (resolve) {
      if (pc.iceGatheringState === "complete") return resolve();
      const timer = setTimeout(resolve, ms);
      pc.addEventListener("icegatheringstatechange", function () {
        if (pc.iceGatheringState === "complete") {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  }

  class WhepPlayer {
    constructor(video, camera, options) {
      this.video = video;
      this.camera = camera;
      this.options = options || {};
      this.iceServers = [];
      this.backoff = 1000;
      this.pc = null;
      this.location = null;
      this.stopped = true;
      this.connects = 0;
    }

    url() {
      let url = "/whep/" + encodeURIComponent(this.camera);
      if (this.options.purpose) url += "?purpose=" + encodeURIComponent(this.options.purpose);
      return url;
    }

    state(text, kind) {
      if (this.options.onstate) this.options.onstate(text, kind);
    }

    start() {
      this.stopped = false;
      this.connect();
    }

    stop() {
      this.stopped = true;
      clearTimeout(this.timer);
      this.teardown(true);
    }

    async connect() {
      this.teardown(true);
      if (this.stopped) return;
      this.connects += 1;
      this.state(this.connects > 1 ? "reconnecting" : "connecting", "warn");
      const pc = new RTCPeerConnection({ iceServers: this.iceServers });
      this.pc = pc;
      pc.addTransceiver("video", { direction: "recvonly" });
      pc.ontrack = (ev) => {
        this.video.srcObject = ev.streams[0] || new MediaStream([ev.track]);
        this.video.play().catch(function () {});
      };
      pc.onconnectionstatechange = () => this.changed(pc);
      pc.onicecandidate = (ev) => this.trickle(pc, ev.candidate);
      try {
        await pc.setLocalDescription(await pc.createOffer());
        await gathered(pc, 1500);
        const res = await fetch(this.url(), {
          method: "POST",
          headers: { "Content-Type": "application/sdp", "X-CSRF-Token": csrf() },
          body: pc.localDescription.sdp,
          credentials: "same-origin",
        });
        const body = await res.text();
        if (pc !== this.pc) return;
        if (res.status !== 201) {
          const why = body.trim() || "refused (" + res.status + ")";
          if (FATAL.has(res.status)) {
            this.teardown(false);
            this.state(why, "bad");
          } else {
            this.retry(why);
          }
          return;
        }
        this.location = res.headers.get("Location");
        this.iceServers = parseLinks(res.headers.get("Link"));
        await pc.setRemoteDescription({ type: "answer", sdp: body });
        this.watch(pc);
      } catch (err) {
        if (pc === this.pc) this.retry(String(err));
      }
    }

    changed(pc) {
      if (pc !== this.pc) return;
      const s = pc.connectionState;
      clearTimeout(this.grace);
      if (s === "connected") {
        this.state("live", "good");
        this.backoff = 1000;
      } else if (s === "failed" || s === "closed") {
        this.retry(s);
      } else if (s === "disconnected") {
        // Often a moment's loss: give ICE a few seconds to recover before starting again.
        this.grace = setTimeout(() => this.retry("disconnected"), 3000);
      }
    }

    watch(pc) {
      clearInterval(this.watchdog);
      let last = -1;
      let since = Date.now();
      this.watchdog = setInterval(() => {
        if (pc !== this.pc) return;
        const q = this.video.getVideoPlaybackQuality();
        if (q.totalVideoFrames !== last) {
          last = q.totalVideoFrames;
          since = Date.now();
        } else if (Date.now() - since > FROZEN_MS) {
          this.retry("no picture");
        }
      }, 1000);
    }

    retry(why) {
      if (this.stopped) return;
      this.teardown(true);
      this.state("reconnecting", "warn");
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF);
    }

    teardown(endSession) {
      clearInterval(this.watchdog);
      clearTimeout(this.grace);
      const pc = this.pc;
      this.pc = null;
      if (pc) {
        pc.onconnectionstatechange = null;
        pc.onicecandidate = null;
        pc.close();
      }
      if (endSession && this.location) {
        fetch(this.location, {
          method: "DELETE",
          headers: { "X-CSRF-Token": csrf() },
          credentials: "same-origin",
          keepalive: true,
        }).catch(function () {});
      }
      this.location = null;
    }

    trickle(pc, candidate) {
      // Candidates gathered before the offer went out are in it; later ones are PATCHed.
      if (!candidate || !candidate.candidate || !this.location || pc !== this.pc) return;
      const sdp = pc.localDescription ? pc.localDescription.sdp : "";
      const ufrag = /a=ice-ufrag:(\S+)/.exec(sdp);
      const pwd = /a=ice-pwd:(\S+)/.exec(sdp);
      if (!ufrag || !pwd) return;
      const frag = "a=ice-ufrag:" + ufrag[1] + "\r\na=ice-pwd:" + pwd[1] + "\r\n" +
        "m=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:" + (candidate.sdpMid || "0") + "\r\n" +
        "a=" + candidate.candidate + "\r\n";
      fetch(this.location, {
        method: "PATCH",
        headers: { "Content-Type": "application/trickle-ice-sdpfrag", "X-CSRF-Token": csrf() },
        body: frag,
        credentials: "same-origin",
      }).catch(function () {});
    }
  }

  window.FeedgatePlayer = WhepPlayer;
})();
