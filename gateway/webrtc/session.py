"""One WHEP session: from the answer through ICE and DTLS to media, and its end.

The states and what moves them are a table (``TRANSITIONS``); the asyncio part below only runs
ICE and DTLS under one deadline, feeds events in, and does what the new state asks. Whatever the
way a session ends (DELETE, ICE or DTLS failure, the deadline, consent lost, the policy's
re-check, the hub kicking its reader, shutdown), ``end`` runs once: the hub reader goes, the
admission is released and audited, and the sockets are closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcicetransport import RTCIceParameters, RTCIceTransport
from aiortc.rtcrtpparameters import (
    RTCRtcpParameters,
    RTCRtpCodecParameters,
    RTCRtpSendParameters,
)
from aiortc.rtcrtpsender import RTCRtpSender

from gateway.live import Live
from gateway.stream.hub import PathStream, Reader
from gateway.webrtc.ice import nominated, queued, remote_candidates
from gateway.webrtc.negotiation import Choice, Offer
from gateway.webrtc.sender import ViewerSender
from gateway.webrtc.track import Passthrough, PassthroughTrack
from gateway.webrtc.trickle import Fragment, FragmentError

if TYPE_CHECKING:
    from gateway.webrtc.server import WebRtcServer

log = logging.getLogger(__name__)

MAX_REMOTE_CANDIDATES = 128
# A viewer whose socket has this much queued loses units until its next keyframe.
WRITE_HIGH = 512 * 1024
WRITE_LOW = 64 * 1024


class State(StrEnum):
    CHECKING = "checking"  # answered; ICE connectivity checks
    CONNECTING = "connecting"  # ICE done; DTLS handshake
    CONNECTED = "connected"  # media flows
    CLOSED = "closed"


class Event(StrEnum):
    ICE_CONNECTED = "ice connected"
    ICE_FAILED = "ICE failed"
    DTLS_CONNECTED = "DTLS connected"
    DTLS_FAILED = "DTLS failed"
    TIMEOUT = "handshake timed out"
    CLOSED = "connection closed"  # consent lost, DTLS close_notify, socket gone
    STOP = "stop"  # DELETE, the policy's re-check, the hub, shutdown


# (state, event) -> next state. An event not in the table changes nothing.
TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.CHECKING, Event.ICE_CONNECTED): State.CONNECTING,
    (State.CONNECTING, Event.DTLS_CONNECTED): State.CONNECTED,
    **{
        (s, e): State.CLOSED
        for s in (State.CHECKING, State.CONNECTING, State.CONNECTED)
        for e in (Event.ICE_FAILED, Event.DTLS_FAILED, Event.TIMEOUT, Event.CLOSED, Event.STOP)
    },
}


def transition(state: State, event: Event) -> State | None:
    return TRANSITIONS.get((state, event))


class WhepSession:
    def __init__(
        self,
        server: WebRtcServer,
        *,
        session_id: str,
        camera_path: str,
        stream: PathStream,
        passthrough: Passthrough,
        video_track: int,
        tenant: str | None,
        live: Live | None,
        peer: str,
        offer: Offer,
        choice: Choice,
        ice: RTCIceTransport,
        dtls: RTCDtlsTransport,
        ssrc: int,
        cname: str,
        rtp_sender: RTCRtpSender | None,
        track: PassthroughTrack | None,
        etag: str,
    ) -> None:
        self.server = server
        self.id = session_id
        self.camera_path = camera_path
        self.stream = stream
        self.passthrough = passthrough
        self.video_track = video_track
        self.tenant = tenant
        self.live = live
        self.peer = peer
        self.offer = offer
        self.choice = choice
        self.ice = ice
        self.dtls = dtls
        self.ssrc = ssrc
        self.cname = cname
        self.rtp_sender = rtp_sender
        self.track = track
        self.etag = etag
        self.state = State.CHECKING
        self.created = time.monotonic()
        self.connected_at: float | None = None
        self.end_reason: str | None = None
        self.sender: ViewerSender | None = None
        self.reader: Reader | None = None
        self.end_of_candidates = offer.candidates_complete
        self._task: asyncio.Task[None] | None = None

    # ---- events --------------------------------------------------------------------------------

    def _fire(self, event: Event, reason: str | None = None) -> bool:
        nxt = transition(self.state, event)
        if nxt is None:
            return False
        self.state = nxt
        if nxt == State.CLOSED:
            self._close(reason or event.value)
        return True

    def end(self, reason: str) -> None:
        """End the session now, for ``reason`` (logged, audited)."""
        self._fire(Event.STOP, reason)

    # ---- the handshake -------------------------------------------------------------------------

    def start(self, handshake_timeout: float) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(handshake_timeout), name=f"whep:{self.id[:8]}"
        )

    async def _run(self, handshake_timeout: float) -> None:
        offer = self.offer
        try:
            async with asyncio.timeout(handshake_timeout):
                for candidate in offer.candidates:
                    await self.ice.addRemoteCandidate(candidate)
                if offer.candidates_complete:
                    await self.ice.addRemoteCandidate(None)
                ice = offer.ice
                await self.ice.start(RTCIceParameters(ice.usernameFragment, ice.password))
                if self.ice.state != "completed":
                    self._fail(Event.ICE_FAILED, "no candidate pair succeeded")
                    return
                self._fire(Event.ICE_CONNECTED)
                await self.dtls.start(offer.dtls)
                if self.dtls.state != "connected":
                    self._fail(Event.DTLS_FAILED, f"handshake ended {self.dtls.state}")
                    return
        except TimeoutError:
            what = "ICE" if self.state == State.CHECKING else "DTLS"
            self._fail(Event.TIMEOUT, f"{what} did not complete within {handshake_timeout:g}s")
            return
        if self.state != State.CONNECTING:
            return  # ended meanwhile
        self.dtls.on("statechange", self._on_dtls_state)
        await self._start_media()

    def _fail(self, event: Event, why: str) -> None:
        """A handshake that did not make it: one clear line, then the session ends."""
        if self.state == State.CLOSED:
            return
        log.warning(
            "webrtc session %s (%s on %s, from %s): %s after %.1fs: %s (%d remote candidates%s)",
            self.id[:8],
            self.tenant or "open access",
            self.camera_path,
            self.peer,
            event.value,
            time.monotonic() - self.created,
            why,
            remote_candidates(self.ice),
            "" if self.end_of_candidates else ", more were still expected",
        )
        self._fire(event, f"{event.value}: {why}")

    def _on_dtls_state(self) -> None:
        if self.dtls.state in ("closed", "failed"):
            self._fire(Event.CLOSED, f"connection {self.dtls.state}")

    # ---- media ---------------------------------------------------------------------------------

    async def _start_media(self) -> None:
        codec = RTCRtpCodecParameters(
            mimeType="video/H264",
            clockRate=90000,
            payloadType=self.choice.payload_type,
            parameters={
                "packetization-mode": "1",
                "profile-level-id": self.choice.profile_level_id,
            },
        )
        params = RTCRtpSendParameters(
            codecs=[codec],
            muxId=self.offer.mid,
            rtcp=RTCRtcpParameters(cname=self.cname, ssrc=self.ssrc, mux=True),
        )
        channels = tuple(0 if i == self.video_track else None for i in range(self.video_track + 1))
        reader = Reader(channels=channels, sink=self._sink, on_kick=self._kicked)
        self.reader = reader
        if self.rtp_sender is not None:
            self._count_aiortc_bytes(reader)
            await self.rtp_sender.send(params)
            if self.state != State.CONNECTING:
                return
        else:
            self.sender = ViewerSender(
                ssrc=self.ssrc,
                payload_type=self.choice.payload_type,
                srtp=self.dtls._tx_srtp,
                path=lambda: nominated(self.ice),
                on_keyframe_request=self.replay,
                on_retransmit=self._retransmitted,
            )
            self.dtls._register_rtp_sender(self.sender, params)
        if not self._fire(Event.DTLS_CONNECTED):
            return
        self.connected_at = time.monotonic()
        self.server.connected(self)
        if self.live is not None and self.server.live is not None:
            # Audited and metered from here, before the GOP burst: those bytes count too.
            refused = await self.server.live.start(self.live, reader)
            if refused is not None:
                self.end(f"refused: {refused.reason}")
                return
        log.info(
            "webrtc session %s: %s plays %s (%s, H.264 %s on pt %d) from %s after %.0f ms",
            self.id[:8],
            self.tenant or "open access",
            self.camera_path,
            self.stream.name,
            self.choice.profile_level_id,
            self.choice.payload_type,
            self.peer,
            (self.connected_at - self.created) * 1000,
        )
        self.replay()

    def replay(self) -> None:
        """Send the hub's cached GOP now: a new viewer (or one whose decoder asked by PLI/FIR)
        decodes from its keyframe at once. Without a cached GOP it waits for the next one."""
        reader = self.reader
        if reader is None or self.state != State.CONNECTED:
            return
        sender = self.sender
        if sender is not None:
            sender.replaying = True
        try:
            self.stream.add_reader(reader)
        finally:
            if sender is not None:
                sender.end_replay()

    def _sink(self, items: list[tuple[int, bytes, bool]], is_key: bool) -> tuple[int, int]:
        unit = self.passthrough.unit(items, is_key)
        if unit is None:
            return 0, 0
        if self.track is not None:
            self.track.offer(unit)
            return 0, 0  # counted as aiortc sends them
        sender = self.sender
        if sender is None:
            return 0, 0
        sent = sender.send(unit)
        target = nominated(self.ice)
        if target is not None and queued(target[0]) > WRITE_HIGH:
            assert self.reader is not None
            self.reader.pause_writing()  # the hub drops to the next keyframe meanwhile
        return sent

    def _retransmitted(self, packets: int, nbytes: int) -> None:
        if self.reader is not None:
            self.reader.packets_sent += packets
            self.reader.bytes_sent += nbytes

    def _count_aiortc_bytes(self, reader: Reader) -> None:
        """aiortc's own sender sends through the ICE transport: count its RTP datagrams."""
        send = self.ice._send

        async def counted(data: bytes) -> None:
            await send(data)
            if len(data) > 1 and 128 <= data[0] < 192 and not 192 <= data[1] <= 223:
                reader.packets_sent += 1
                reader.bytes_sent += len(data)

        self.ice._send = counted

    def tick(self) -> None:
        """Once a second: a sender report, and a viewer whose socket drained plays again."""
        if self.state != State.CONNECTED:
            return
        if self.sender is not None:
            self.sender.sender_report()
        reader = self.reader
        if reader is not None and reader.paused_since is not None:
            target = nominated(self.ice)
            if target is None or queued(target[0]) < WRITE_LOW:
                reader.resume_writing()

    def _kicked(self, reason: str) -> None:
        self.end(reason)

    # ---- trickle ICE ---------------------------------------------------------------------------

    async def add_candidates(self, fragment: Fragment) -> None:
        if self.state != State.CHECKING:
            return  # connected already (or over): late candidates change nothing
        mine = [c for mid, c in fragment.candidates if mid in (None, self.offer.mid)]
        if remote_candidates(self.ice) + len(mine) > MAX_REMOTE_CANDIDATES:
            raise FragmentError(f"more than {MAX_REMOTE_CANDIDATES} candidates for one session")
        for candidate in mine:
            await self.ice.addRemoteCandidate(candidate)
        if fragment.end_of_candidates and not self.end_of_candidates:
            self.end_of_candidates = True
            await self.ice.addRemoteCandidate(None)

    # ---- the end -------------------------------------------------------------------------------

    def _close(self, reason: str) -> None:
        self.end_reason = reason
        reader = self.reader
        if reader is not None:
            self.stream.remove_reader(reader)
            reader.closed = True
        if self.sender is not None:
            self.dtls._unregister_rtp_sender(self.sender)
        if self.track is not None:
            self.track.stop()
        if self.live is not None and self.server.live is not None:
            self.server.live.end(self.id, reason, bytes_sent=reader.bytes_sent if reader else 0)
        if self.connected_at is not None:
            log.info(
                "webrtc session %s of %s on %s ended after %.1fs: %s",
                self.id[:8],
                self.tenant or "open access",
                self.camera_path,
                time.monotonic() - self.connected_at,
                reason,
            )
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self.server.forget(self, self._release())

    async def _release(self) -> None:
        """Close the transports (and with them the sockets) of an ended session."""
        task = self._task
        if task is not None and task is not asyncio.current_task():
            try:
                await task
            except BaseException:  # its cancellation, or whatever it ended with
                pass
        closers: list[Callable[[], Any]] = []
        if self.rtp_sender is not None:
            closers.append(self.rtp_sender.stop)
        closers += [self.dtls.stop, self.ice.stop]
        for close in closers:
            try:
                await asyncio.wait_for(close(), 5.0)
            except Exception:
                log.debug("closing session %s", self.id[:8], exc_info=True)
