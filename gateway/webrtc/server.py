"""The WebRTC server of one gateway process: its WHEP sessions, the passthrough of every served
hub path, the DTLS certificate, and the limits that keep hostile clients bounded.

A session is opened in one go, before the 201 goes out: the camera must have a source (pulled on
demand if it is not running), the viewer's masked variant is chosen, the camera's H.264 profile
must be one the offer accepts, the tenant's caps admit it, and its ICE candidates are gathered.
What is admitted but not yet connected is bounded per tenant and per process, and each one has
``handshake_timeout`` to connect before it is ended and its sockets closed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsTransport
from aiortc.rtcicetransport import RTCIceParameters
from aiortc.rtcrtpsender import RTCRtpSender

from gateway.live import Live, LiveSessions, MaskingUnavailable, Refusal, Refused
from gateway.stream.hub import PathStream, Reader, StreamHub
from gateway.tasks import cancel_and_wait
from gateway.webrtc.ice import IceError, IceSettings, advertised_candidates, ice_transport
from gateway.webrtc.negotiation import (
    LocalTransport,
    Offer,
    OfferError,
    Stream,
    build_answer,
    choose_h264,
    dtls_role_for,
)
from gateway.webrtc.session import State, WhepSession
from gateway.webrtc.track import (
    Passthrough,
    PassthroughTrack,
    fmtp_profile_level_id,
    sprop_parameter_sets,
)
from tenants.policy import Decision

log = logging.getLogger(__name__)
# aioice logs every candidate pair's every state change at INFO: five lines per viewer, a
# thousand viewers a reconnect storm. A session's ICE is summed up by our own lines instead
# (its start, and one warning saying why a handshake failed).
logging.getLogger("aioice").setLevel(logging.WARNING)

SOURCE_WAIT = 5.0  # how long an offer waits for a camera's (or variant's) source


@dataclass(frozen=True)
class Limits:
    handshake_timeout: float = 10.0
    max_sessions: int = 1000
    max_pending: int = 256
    max_pending_per_tenant: int = 32
    sender: str = "shared"  # "shared" (packed once per camera) or "aiortc" (per viewer)


class WebRtcServer:
    def __init__(
        self,
        hub: StreamHub,
        ice: IceSettings,
        limits: Limits = Limits(),
        *,
        live: LiveSessions | None = None,
        known_path: Callable[[str], bool] = lambda path: True,
        on_demand: Callable[[str], None] | None = None,
    ) -> None:
        self.hub = hub
        self.ice = ice
        self.limits = limits
        self.live = live
        self.known_path = known_path
        self.on_demand = on_demand
        self.sessions: dict[str, WhepSession] = {}
        self.counters: Counter[str] = Counter()
        self._passthroughs: dict[str, tuple[Passthrough, int]] = {}
        self._pending: Counter[str] = Counter()  # by tenant ("" for open access)
        self._pending_total = 0
        self._certificate: RTCCertificate | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._tick: asyncio.Task[None] | None = None
        self._stopping = False

    # ---- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._tick = asyncio.get_running_loop().create_task(self._ticker(), name="webrtc-tick")

    async def stop(self) -> None:
        self._stopping = True
        for session in list(self.sessions.values()):
            session.end("gateway stopping")
        await cancel_and_wait(self._tick)
        while self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for session in list(self.sessions.values()):
                try:
                    session.tick()
                except Exception:
                    log.exception("webrtc session %s: tick failed", session.id[:8])

    def certificate(self) -> RTCCertificate:
        """One DTLS certificate for every session (made in milliseconds, but not per viewer),
        replaced a day before it expires."""
        cert = self._certificate
        if cert is None or cert.expires < datetime.now(UTC) + timedelta(days=1):
            cert = self._certificate = RTCCertificate.generateCertificate()
        return cert

    # ---- bookkeeping ---------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return self._pending_total

    def _reserve(self, tenant: str) -> None:
        lim = self.limits
        if len(self.sessions) + self._pending_total >= lim.max_sessions:
            raise Refusal(503, "too many WebRTC sessions on this gateway", {"Retry-After": "5"})
        if self._pending_total >= lim.max_pending:
            raise Refusal(503, "too many WebRTC sessions connecting", {"Retry-After": "2"})
        if self._pending[tenant] >= lim.max_pending_per_tenant:
            raise Refusal(
                429,
                f"{lim.max_pending_per_tenant} sessions of this tenant are still connecting",
                {"Retry-After": "2"},
            )
        self._pending[tenant] += 1
        self._pending_total += 1

    def _unreserve(self, tenant: str) -> None:
        self._pending[tenant] -= 1
        if self._pending[tenant] <= 0:
            del self._pending[tenant]
        self._pending_total -= 1

    def connected(self, session: WhepSession) -> None:
        self._unreserve(session.tenant or "")
        self.counters["connected"] += 1

    def forget(self, session: WhepSession, release: Coroutine[Any, Any, None]) -> None:
        """An ended session: out of the registry, its passthrough released, its transports
        closed by a task this server owns."""
        if self.sessions.pop(session.id, None) is None:
            release.close()
            return
        if session.connected_at is None:
            self._unreserve(session.tenant or "")
        self.counters["ended"] += 1
        self._release_passthrough(session.stream.name)
        task = asyncio.get_running_loop().create_task(release, name=f"whep-close:{session.id[:8]}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def find(self, session_id: str, tenant: str | None) -> WhepSession | None:
        """A session by id, only for its own tenant: anyone else is told it does not exist."""
        session = self.sessions.get(session_id)
        if session is None or session.tenant != tenant:
            return None
        return session

    def _passthrough(self, stream: PathStream, video: int) -> Passthrough:
        entry = self._passthroughs.get(stream.name)
        if entry is None:
            sps, pps = sprop_parameter_sets(stream.tracks[video])
            entry = (Passthrough(stream.name, video, sps=sps, pps=pps), 0)
        self._passthroughs[stream.name] = (entry[0], entry[1] + 1)
        return entry[0]

    def _release_passthrough(self, name: str) -> None:
        entry = self._passthroughs.get(name)
        if entry is None:
            return
        if entry[1] <= 1:
            del self._passthroughs[name]
        else:
            self._passthroughs[name] = (entry[0], entry[1] - 1)

    # ---- opening a session ---------------------------------------------------------------------

    async def _served_stream(self, camera_path: str, decision: Decision | None) -> PathStream:
        if not self.known_path(camera_path):
            raise Refusal(404, f"no camera {camera_path!r}")
        stream = self.hub.path(camera_path)
        if not stream.has_source and self.on_demand is not None:
            self.on_demand(camera_path)
        if not await stream.wait_source(SOURCE_WAIT):
            raise Refusal(404, f"camera {camera_path!r} has no source right now")
        if decision is None or self.live is None:
            return stream
        try:
            served = self.live.serve_path(camera_path, decision)
        except MaskingUnavailable as exc:
            raise Refusal(503, str(exc)) from None
        if served == camera_path:
            return stream
        variant = self.hub.path(served)
        if not await variant.wait_source(SOURCE_WAIT):
            raise Refusal(503, f"masked variant of {camera_path!r} is not ready")
        return variant

    @staticmethod
    def _video_track(stream: PathStream) -> int:
        video = next((t for t in stream.tracks if t.is_video), None)
        if video is None:
            raise Refusal(422, f"{stream.name!r} has no video")
        if video.codec != "H264":
            raise Refusal(
                422,
                f"{stream.name!r} sends {video.codec or 'an unknown codec'}; WebRTC viewers get "
                "H.264 as the camera sends it (watch this camera over RTSP)",
            )
        return video.index

    def _profile(self, stream: PathStream, passthrough: Passthrough) -> str:
        """The stream's real profile-level-id: its SPS (from the SDP, or in band from the GOP
        cache), else what its SDP says."""
        if passthrough.profile_level_id is None:
            # A look at the cached GOP, through a reader that is gone again at once.
            def look(items: list[tuple[int, bytes, bool]], is_key: bool) -> tuple[int, int]:
                passthrough.unit(items, is_key)
                return 0, 0

            probe = Reader(channels=(0,), sink=look)
            stream.add_reader(probe)
            stream.remove_reader(probe)
        pli = passthrough.profile_level_id or fmtp_profile_level_id(
            stream.tracks[passthrough.video_track]
        )
        if pli is None:
            raise Refusal(503, f"{stream.name!r} has not sent its parameter sets yet")
        return pli

    async def open(
        self, camera_path: str, offer: Offer, decision: Decision | None, peer: str
    ) -> tuple[WhepSession, str]:
        """Admit and start a session for this offer; returns it with the SDP answer."""
        if self._stopping:
            raise Refusal(503, "gateway stopping")
        tenant = decision.tenant if decision is not None else None
        self._reserve(tenant or "")
        admitted: Live | None = None
        session_id = secrets.token_urlsafe(18)
        ice = None
        passthrough: Passthrough | None = None
        try:
            stream = await self._served_stream(camera_path, decision)
            video = self._video_track(stream)
            passthrough = self._passthrough(stream, video)
            try:
                choice = choose_h264(offer, self._profile(stream, passthrough))
            except OfferError as exc:
                raise Refusal(exc.status, exc.reason) from None
            if decision is not None and self.live is not None:

                def stop(why: str) -> None:
                    s = self.sessions.get(session_id)
                    if s is not None:
                        s.end(why)

                result = await self.live.admit(
                    session_id,
                    decision,
                    protocol="webrtc",
                    mode="play",
                    path=stream.name,
                    peer=peer,
                    stop=stop,
                )
                if isinstance(result, Refused):
                    retry = {"Retry-After": str(result.retry_after)} if result.retry_after else {}
                    raise Refusal(429 if result.status == 453 else 503, result.reason, retry)
                admitted = result
            ice = ice_transport(self.ice)
            controlling = offer.ice.iceLite
            ice._connection.ice_controlling = controlling
            try:
                await ice.iceGatherer.gather()
            except (IceError, OSError) as exc:
                raise Refusal(503, f"no ICE candidates: {exc}") from None
            dtls = RTCDtlsTransport(ice, [self.certificate()])
            role = dtls_role_for(offer, ice_controlling=controlling)
            dtls._set_role(role)
            rtp_sender = track = None
            if self.limits.sender == "aiortc":
                track = PassthroughTrack()
                rtp_sender = RTCRtpSender(track, dtls)
                ssrc = rtp_sender._ssrc
            else:
                ssrc = random.getrandbits(32)
            params: RTCIceParameters = ice.iceGatherer.getLocalParameters()
            cname = secrets.token_hex(8)
            answer = build_answer(
                offer,
                choice,
                LocalTransport(
                    ice=params,
                    candidates=advertised_candidates(ice, self.ice),
                    fingerprints=tuple(dtls.getLocalParameters().fingerprints),
                    dtls_role=role,
                ),
                Stream(
                    ssrc=ssrc,
                    cname=cname,
                    stream_id=f"feedgate-{camera_path.replace('/', '-')}",
                    track_id=session_id[:12],
                    session_id=random.getrandbits(62),
                ),
            )
            digest = hashlib.sha256(f"{params.usernameFragment}:{params.password}".encode())
            session = WhepSession(
                self,
                session_id=session_id,
                camera_path=camera_path,
                stream=stream,
                passthrough=passthrough,
                video_track=video,
                tenant=tenant,
                live=admitted,
                peer=peer,
                offer=offer,
                choice=choice,
                ice=ice,
                dtls=dtls,
                ssrc=ssrc,
                cname=cname,
                rtp_sender=rtp_sender,
                track=track,
                etag=f'"{digest.hexdigest()[:24]}"',
            )
        except BaseException:
            self._unreserve(tenant or "")
            if admitted is not None and self.live is not None:
                self.live.end(session_id, "refused before it started")
            if passthrough is not None:
                self._release_passthrough(passthrough.path)
            if ice is not None:
                await ice.stop()
            raise
        self.sessions[session_id] = session
        self.counters["opened"] += 1
        session.start(self.limits.handshake_timeout)
        return session, answer

    # ---- figures -------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        states = Counter(s.state.value for s in self.sessions.values())
        return {
            "sessions": len(self.sessions),
            "pending": self._pending_total,
            "states": dict(states),
            "counters": dict(self.counters),
            "closing": len(self._closing),
            "passthroughs": {
                name: {
                    "viewers": n,
                    "units": p.units_packed,
                    "bad": p.units_bad,
                    "parameter_sets_injected": p.injected,
                }
                for name, (p, n) in self._passthroughs.items()
            },
            "now": time.time(),
        }


__all__ = ["Limits", "State", "WebRtcServer"]
