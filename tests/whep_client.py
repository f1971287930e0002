"""aiortc as a WHEP client that counts what it receives without decoding it.

aiortc's receiver always decodes; this client takes the RTP packets before its jitter buffer
(``RTCRtpReceiver._handle_rtp_packet``), keeps the H.264 NAL units of each frame, and counts the
SRTP datagrams as they come off the socket, so tests and the benchmark see exactly what the
gateway sent.

Two things are adjusted in the client's own process, never in the gateway: aiortc offers
H.264 Main and High as well as its two baseline profiles (so a Main or High camera is offered
what it sends), and aioice gathers on loopback (tests use nothing else).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.codecs import CODECS
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters

from gateway.protocols import h264

_EXTRA_PROFILES = {"4d001f": 120, "64001f": 121}


def offer_main_and_high() -> None:
    video = CODECS["video"]
    have = {str(c.parameters.get("profile-level-id")) for c in video}
    for pli, pt in _EXTRA_PROFILES.items():
        if pli in have:
            continue
        video.append(
            RTCRtpCodecParameters(
                mimeType="video/H264",
                clockRate=90000,
                payloadType=pt,
                rtcpFeedback=[
                    RTCRtcpFeedback(type="nack"),
                    RTCRtcpFeedback(type="nack", parameter="pli"),
                ],
                parameters={
                    "level-asymmetry-allowed": "1",
                    "packetization-mode": "1",
                    "profile-level-id": pli,
                },
            )
        )


def gather_on_loopback() -> None:
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


@dataclass
class Received:
    packets: int = 0
    rtp_bytes: int = 0  # SRTP datagrams of RTP, as they came off the socket
    frames: int = 0
    keyframes: int = 0
    first_frame_at: float | None = None
    sps: list[bytes] = field(default_factory=list)
    payload_types: set[int] = field(default_factory=set)
    ssrcs: set[int] = field(default_factory=set)
    timestamps: list[int] = field(default_factory=list)
    idr_at: list[float] = field(default_factory=list)  # monotonic arrival of each IDR frame
    keep_nals: bool = True


class WhepClient:
    def __init__(
        self, url: str, *, token: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        self.url = url
        self.token = token
        self.extra_headers = headers or {}  # e.g. a browser's Cookie, Origin, X-CSRF-Token
        self.pc: RTCPeerConnection | None = None
        self.location: str | None = None
        self.etag: str | None = None
        self.answer: str | None = None
        self.links: list[str] = []
        self.status: int | None = None
        self.reason = ""
        self.received = Received()
        self.started = 0.0
        self._frame: list[bytes] = []
        self._frame_ts: int | None = None
        self._receiver: Any = None

    def headers(self, content_type: str | None = None) -> dict[str, str]:
        h = {}
        if content_type:
            h["Content-Type"] = content_type
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        return {**h, **self.extra_headers}

    async def connect(
        self, http: aiohttp.ClientSession, *, offer_munge: Any = None, answer_munge: Any = None
    ) -> int:
        """POST the offer; on 201 apply the answer (through ``answer_munge``, if given: the
        answer as served stays in ``self.answer``). Returns the HTTP status."""
        self.started = time.monotonic()
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        transceiver = pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        if offer_munge is not None:
            sdp = offer_munge(sdp)
        async with http.post(self.url, data=sdp, headers=self.headers("application/sdp")) as r:
            self.status = r.status
            body = await r.text()
            if r.status != 201:
                self.reason = body.strip()
                await pc.close()
                return r.status
            self.location = r.headers.get("Location")
            self.etag = r.headers.get("ETag")
            self.links = r.headers.getall("Link", [])
            self.answer = body
        receiver = transceiver.receiver
        self._receiver = receiver
        receiver._handle_rtp_packet = self._on_rtp  # before decoding: count, keep the NALs
        ice = receiver.transport.transport
        recv = ice._recv

        async def counted() -> bytes:
            data: bytes = await recv()
            if len(data) > 1 and 128 <= data[0] < 192 and not 192 <= data[1] <= 223:
                self.received.rtp_bytes += len(data)
            return data

        ice._recv = counted
        answer = answer_munge(self.answer) if answer_munge is not None else self.answer
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        return 201

    async def _on_rtp(self, packet: Any, arrival_time_ms: int = 0) -> None:
        got = self.received
        got.packets += 1
        got.payload_types.add(packet.payload_type)
        got.ssrcs.add(packet.ssrc)
        if self._frame_ts is not None and packet.timestamp != self._frame_ts:
            self._frame = []  # the marker of the last frame was lost
        self._frame_ts = packet.timestamp
        self._frame.append(packet.payload)
        if not packet.marker:
            return
        payloads, self._frame, self._frame_ts = self._frame, [], None
        got.frames += 1
        got.timestamps.append(packet.timestamp)
        if got.first_frame_at is None:
            got.first_frame_at = time.monotonic()
        if not got.keep_nals:
            return
        try:
            nals = h264.depacketize(payloads)
        except h264.NalError:
            return
        types = [n[0] & 0x1F for n in nals]
        if h264.NAL_IDR in types:
            got.keyframes += 1
            got.idr_at.append(time.monotonic())
        for n, t in zip(nals, types, strict=True):
            if t == h264.NAL_SPS and n not in got.sps:
                got.sps.append(n)

    async def send_pli(self) -> None:
        ssrc = next(iter(self.received.ssrcs))
        await self._receiver._send_rtcp_pli(ssrc)

    async def delete(self, http: aiohttp.ClientSession, base: str) -> int:
        assert self.location is not None
        async with http.delete(base + self.location, headers=self.headers()) as r:
            return r.status

    async def close(self) -> None:
        if self.pc is not None:
            await self.pc.close()

    @property
    def connection_state(self) -> str:
        return self.pc.connectionState if self.pc is not None else "new"


async def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)
