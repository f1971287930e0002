"""A WebRTC viewer's sender on the shared path: the access units its camera's ``Passthrough``
packed once, sent with this viewer's own RTP header and SRTP keys.

Per packet that is a 12-byte header, one SRTP ``protect`` and one ``sendto`` on the nominated
ICE pair's socket; nothing is packed, copied into objects or awaited per viewer (aiortc's own
``RTCRtpSender`` does all of that per viewer, which the benchmark measures).

Timestamps: a viewer joining gets the hub's cached GOP at once, so it can decode at once. Those
units are sent one RTP tick apart, and the live units that follow keep their real spacing from
the last of them, so the viewer's jitter buffer plays from the live edge instead of the
keyframe's (a GOP behind). A PLI or FIR is answered the same way: the cached GOP is sent again,
as ticks after the last unit sent, rather than left waiting for the camera's next keyframe.

Retransmission: the last ``HISTORY`` packets are kept (references to the shared payloads), and a
NACK resends them on the same SSRC (no RTX is negotiated).
"""

from __future__ import annotations

import logging
import random
import struct
import time
from collections.abc import Callable
from typing import Any, Protocol

from aiortc.rtp import (
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
)

from gateway.webrtc.track import Unit

log = logging.getLogger(__name__)

HISTORY = 512  # packets kept for NACKs (about 2.5 s at 2 Mbit/s)
MAX_RETRANSMIT = 64  # packets resent for one NACK message
REPLAY_INTERVAL = 1.0  # at most one GOP replay per viewer per second, however many PLIs
_HEADER = struct.Struct("!BBHII")
_NTP_EPOCH = 2208988800


class Srtp(Protocol):
    def protect(self, packet: bytes) -> bytes: ...
    def protect_rtcp(self, packet: bytes) -> bytes: ...


class Path(Protocol):
    """Where this viewer's datagrams go: the nominated ICE pair, looked up per send (the
    browser may nominate another pair)."""

    def __call__(self) -> tuple[Any, tuple[str, int]] | None: ...


def ntp_now() -> int:
    now = time.time() + _NTP_EPOCH
    return (int(now) << 32) | int((now % 1) * (1 << 32))


class ViewerSender:
    """RTP for one viewer. ``_ssrc`` and ``_handle_rtcp_packet`` make it an RTP sender to
    aiortc's DTLS transport, which routes this viewer's RTCP feedback here."""

    def __init__(
        self,
        *,
        ssrc: int,
        payload_type: int,
        srtp: Srtp,
        path: Path,
        on_keyframe_request: Callable[[], None],
        on_retransmit: Callable[[int, int], None] = lambda packets, nbytes: None,
    ) -> None:
        self._ssrc = ssrc
        self.payload_type = payload_type
        self.srtp = srtp
        self.path = path
        self.on_keyframe_request = on_keyframe_request
        self.on_retransmit = on_retransmit
        self.seq = random.getrandbits(15)  # low half: no early wrap (SRTP rollover)
        self.offset = random.getrandbits(32)
        self.replaying = False
        self._started = False
        self._last_in = 0
        self._last_out = 0
        self._last_sent_at = 0.0
        self._history: list[tuple[int, bytes, int, int] | None] = [None] * HISTORY
        self._last_replay = 0.0
        self.packets_sent = 0
        self.bytes_sent = 0  # SRTP bytes of RTP packets: what is metered
        self.payload_bytes = 0  # for RTCP sender reports
        self.retransmitted = 0
        self.replays = 0
        self.keyframe_requests = 0

    # ---- media ---------------------------------------------------------------------------------

    def end_replay(self) -> None:
        """The replayed units are out: live units continue from the last one."""
        self.replaying = False
        if self._started:
            self.offset = (self._last_out - self._last_in) & 0xFFFFFFFF

    def send(self, unit: Unit) -> tuple[int, int]:
        """Send one unit; returns (packets, SRTP bytes) sent."""
        target = self.path()
        if target is None:
            return 0, 0
        transport, addr = target
        if self.replaying and self._started:
            ts = (self._last_out + 1) & 0xFFFFFFFF
        else:
            ts = (unit.timestamp + self.offset) & 0xFFFFFFFF
        self._started = True
        self._last_in = unit.timestamp
        self._last_out = ts
        self._last_sent_at = time.monotonic()
        payloads = unit.payloads
        last = len(payloads) - 1
        pt = self.payload_type
        ssrc = self._ssrc
        seq = self.seq
        history = self._history
        protect = self.srtp.protect
        sendto = transport.sendto
        nbytes = 0
        for i, payload in enumerate(payloads):
            b1 = pt | 0x80 if i == last else pt
            data = protect(_HEADER.pack(0x80, b1, seq, ts, ssrc) + payload)
            sendto(data, addr)
            nbytes += len(data)
            history[seq % HISTORY] = (seq, payload, ts, b1)
            seq = (seq + 1) & 0xFFFF
        self.seq = seq
        n = len(payloads)
        self.packets_sent += n
        self.bytes_sent += nbytes
        self.payload_bytes += unit.size
        return n, nbytes

    def _retransmit(self, lost: list[int]) -> None:
        target = self.path()
        if target is None:
            return
        transport, addr = target
        packets = nbytes = 0
        for seq in lost[:MAX_RETRANSMIT]:
            entry = self._history[seq % HISTORY]
            if entry is None or entry[0] != seq:
                continue
            _, payload, ts, b1 = entry
            data = self.srtp.protect(_HEADER.pack(0x80, b1, seq, ts, self._ssrc) + payload)
            transport.sendto(data, addr)
            packets += 1
            nbytes += len(data)
        if packets:
            self.retransmitted += packets
            self.packets_sent += packets
            self.bytes_sent += nbytes
            self.on_retransmit(packets, nbytes)

    # ---- RTCP ----------------------------------------------------------------------------------

    def sender_report(self) -> None:
        """An RTCP sender report: where our RTP clock is now, and what we sent."""
        target = self.path()
        if target is None or not self._started:
            return
        transport, addr = target
        elapsed = max(0.0, time.monotonic() - self._last_sent_at)
        sr = RtcpSrPacket(
            ssrc=self._ssrc,
            sender_info=RtcpSenderInfo(
                ntp_timestamp=ntp_now(),
                rtp_timestamp=(self._last_out + int(elapsed * 90000)) & 0xFFFFFFFF,
                packet_count=self.packets_sent & 0xFFFFFFFF,
                octet_count=self.payload_bytes & 0xFFFFFFFF,
            ),
        )
        transport.sendto(self.srtp.protect_rtcp(bytes(sr)), addr)

    async def _handle_rtcp_packet(self, packet: object) -> None:
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            self._retransmit(packet.lost)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            self.keyframe_requests += 1
            now = time.monotonic()
            if now - self._last_replay >= REPLAY_INTERVAL:
                self._last_replay = now
                self.replays += 1
                self.on_keyframe_request()
