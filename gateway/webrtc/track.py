"""The passthrough track: a camera's H.264 access units as they come out of the hub, handed to
aiortc as encoded ``av.Packet``s, never decoded or re-encoded.

``Passthrough`` is one per served hub path (the camera, or its masked variant), shared by all
its WebRTC viewers. Each access unit the hub delivers is reassembled into an Annex-B unit once,
with the camera's SPS and PPS put in front of every IDR that lacks them (many cameras send them
only in the SDP's ``sprop-parameter-sets``, and a browser shown an IDR without them shows black),
and packed once by aiortc's own H.264 packetiser (``H264Encoder.pack``: STAP-A and FU-A, 1,300
byte payloads). Viewers then only add their own RTP header and SRTP (:mod:`.sender`).

``PassthroughTrack`` is the per-viewer alternative that lets aiortc's ``RTCRtpSender`` do the
packing and sending for each viewer on its own (``webrtc.sender = "aiortc"``): the baseline the
benchmark compares the shared path against.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
from aiortc.codecs.h264 import H264Encoder
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from gateway.protocols import h264
from gateway.protocols.rtp import RtpError, payload_of, rtp_header
from gateway.stream.tracks import Track

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 90000)
# Memo of packed access units: the hub's current GOP is replayed to each joining viewer, so a
# unit is packed once however many viewers get it. Bounded, and cleared at each new GOP.
MAX_MEMO = 2048
_PARAMS = frozenset({h264.NAL_SPS, h264.NAL_PPS})


@dataclass(slots=True)
class Unit:
    """One access unit, ready for viewers."""

    timestamp: int  # RTP (90 kHz) timestamp on the hub's output timeline
    is_key: bool
    payloads: list[bytes]  # RTP payloads, packed once
    packet: av.Packet[Any] = field(repr=False)  # the same unit for aiortc's own sender
    size: int = 0


def sprop_parameter_sets(track: Track) -> tuple[bytes | None, bytes | None]:
    """SPS and PPS from a track's ``sprop-parameter-sets``."""
    sps = pps = None
    for line in track.sdp_lines:
        if not line.lower().startswith("a=fmtp:"):
            continue
        for param in line.split(" ", 1)[-1].split(";"):
            key, _, value = param.strip().partition("=")
            if key.lower() != "sprop-parameter-sets":
                continue
            for item in value.split(","):
                item = item.strip()
                try:
                    nal = base64.b64decode(item + "=" * (-len(item) % 4), validate=True)
                except (binascii.Error, ValueError):
                    continue
                if nal and nal[0] & 0x1F == h264.NAL_SPS:
                    sps = nal
                elif nal and nal[0] & 0x1F == h264.NAL_PPS:
                    pps = nal
    return sps, pps


def fmtp_profile_level_id(track: Track) -> str | None:
    for line in track.sdp_lines:
        if not line.lower().startswith("a=fmtp:"):
            continue
        for param in line.split(" ", 1)[-1].split(";"):
            key, _, value = param.strip().partition("=")
            if key.lower() == "profile-level-id" and len(value.strip()) == 6:
                return value.strip().lower()
    return None


class Passthrough:
    """A served hub path's H.264, packed once per access unit for all its WebRTC viewers."""

    def __init__(self, path: str, video_track: int, *, sps: bytes | None, pps: bytes | None):
        self.path = path
        self.video_track = video_track
        self.sps = sps
        self.pps = pps
        self.units_packed = 0
        self.units_bad = 0
        self.injected = 0  # IDRs that got the parameter sets put in front
        self._encoder = H264Encoder()
        self._memo: dict[int, tuple[list[tuple[int, bytes, bool]], Unit | None]] = {}

    @property
    def profile_level_id(self) -> str | None:
        """The stream's real profile and level: SPS bytes 1-3."""
        return self.sps[1:4].hex() if self.sps is not None and len(self.sps) >= 4 else None

    def unit(self, items: list[tuple[int, bytes, bool]], is_key: bool) -> Unit | None:
        """The packed form of one hub access unit (memoised: every viewer asks), or None for
        one that carries no picture (parameter sets alone, audio, RTCP) or cannot be parsed."""
        key = id(items)
        hit = self._memo.get(key)
        if hit is not None and hit[0] is items:
            return hit[1]
        if is_key and hit is None:
            self._memo.clear()  # a GOP the viewers have not seen: the old one is done
        if len(self._memo) >= MAX_MEMO:
            self._memo.clear()
        unit = self._pack(items)
        # The hub's list is held here, so its id cannot be reused while the entry lives.
        self._memo[key] = (items, unit)
        return unit

    def _pack(self, items: list[tuple[int, bytes, bool]]) -> Unit | None:
        payloads: list[memoryview] = []
        timestamp = None
        for track, rtp, is_rtcp in items:
            if is_rtcp or track != self.video_track:
                continue
            try:
                if timestamp is None:
                    timestamp = rtp_header(rtp)[3]
                payloads.append(payload_of(rtp))
            except RtpError:
                continue
        if timestamp is None:
            return None
        try:
            nals = h264.depacketize(payloads)
        except h264.NalError as exc:
            self.units_bad += 1
            log.debug("%s: access unit dropped: %s", self.path, exc)
            return None
        unit_nals = self._with_parameter_sets(nals)
        if unit_nals is None:
            return None
        packet = av.Packet(h264.annexb(unit_nals))
        packet.pts = packet.dts = timestamp
        packet.time_base = TIME_BASE
        packed, _ts = self._encoder.pack(packet)
        self.units_packed += 1
        is_key = any(n[0] & 0x1F == h264.NAL_IDR for n in unit_nals)
        return Unit(timestamp, is_key, packed, packet, sum(len(p) for p in packed))

    def _with_parameter_sets(self, nals: list[bytes]) -> list[bytes] | None:
        """Track in-band SPS/PPS; put them before an IDR that lacks them. None for a unit of
        parameter sets only (they go out with the next IDR instead)."""
        types = [n[0] & 0x1F for n in nals]
        for n, t in zip(nals, types, strict=True):
            if t == h264.NAL_SPS:
                self.sps = n
            elif t == h264.NAL_PPS:
                self.pps = n
        if all(t in _PARAMS or t == h264.NAL_AUD or t == h264.NAL_SEI for t in types):
            return None
        if h264.NAL_IDR not in types:
            return nals
        first_idr = types.index(h264.NAL_IDR)
        before = set(types[:first_idr])
        if {h264.NAL_SPS, h264.NAL_PPS} <= before or self.sps is None or self.pps is None:
            return nals
        self.injected += 1
        return [*nals[:first_idr], self.sps, self.pps, *nals[first_idr:]]


class PassthroughTrack(MediaStreamTrack):
    """A viewer's video track whose ``recv()`` returns the camera's encoded units: aiortc's
    ``RTCRtpSender`` then packs them itself instead of encoding."""

    kind = "video"

    def __init__(self, queue_size: int = 256) -> None:
        super().__init__()
        self._queue: asyncio.Queue[av.Packet[Any] | None] = asyncio.Queue(maxsize=queue_size)
        self._waiting_key = False
        self.dropped = 0

    def offer(self, unit: Unit) -> None:
        """Queue a unit without waiting; a full queue loses units until the next keyframe."""
        if self._waiting_key and not unit.is_key:
            self.dropped += 1
            return
        try:
            self._queue.put_nowait(unit.packet)
            self._waiting_key = False
        except asyncio.QueueFull:
            self._waiting_key = True
            self.dropped += 1

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        packet = await self._queue.get()
        if packet is None:
            raise MediaStreamError
        return packet

    def stop(self) -> None:
        super().stop()
        try:
            self._queue.put_nowait(None)
        except asyncio.QueueFull:
            pass
