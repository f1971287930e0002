#!/usr/bin/env python3
"""The WebRTC benchmark's load generator: viewers of one camera, in a process of their own.

    python ops/bench/whep_load.py webrtc|rtsp URL --viewers N [--server-pid PID] \
        [--duration 20] [--ramp-rate 10] [--sample-every 10] [--coordinated] [--json out.json]

``webrtc``: each viewer is an aiortc ``RTCPeerConnection`` that POSTs a WHEP offer to ``URL``
and receives without decoding (aiortc's receiver always decodes, so RTP is taken before its
jitter buffer). RTP datagrams are counted as they come off the socket. Until its first
complete frame every viewer lets aiortc unprotect and parse each packet, so the first frame is
seen as a browser would see it; after that only every ``--sample-every``th viewer keeps doing
so (RTP sequence gaps, media seconds), and the others drop each datagram as soon as it is
counted, before aioice queues it, which keeps the generator's CPU small next to the gateway's
(the same trick as the byte-counting RTSP readers of ``benchkit/reader.py``).

``rtsp``: as many RTSP readers of the same camera over TCP (``benchkit.reader.LoadGen``).

After the ramp it waits until every viewer has its first frame (bounded by ``--settle``), then
measures for ``--duration`` seconds (with ``--coordinated``: it prints READY and starts when a
line arrives on stdin, so several load processes share one window) and prints one JSON object:
bits delivered, viewers connected at the end, sampled loss and media seconds, first-frame
times, its own CPU, and the CPU of ``--server-pid``'s process tree if given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path[:0] = [str(HERE), str(REPO), str(REPO / "tests")]

import aiohttp  # noqa: E402
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402
from benchkit.procs import tree_cpu_rss  # noqa: E402
from benchkit.reader import LoadGen  # noqa: E402
from whep_client import gather_on_loopback, offer_main_and_high  # noqa: E402

from gateway.protocols import h264  # noqa: E402


class Viewer:
    """One WebRTC viewer that counts what it receives."""

    def __init__(self, idx: int, url: str, sampled: bool) -> None:
        self.idx = idx
        self.url = url
        self.sampled = sampled
        self.pc: RTCPeerConnection | None = None
        self.status = 0
        self.error = ""
        self.t_post = self.t_answer = self.t_connected = self.t_first_frame = 0.0
        self.first_frame_key = False
        self.light = False  # count and drop RTP datagrams unread
        self.datagrams = 0
        self.nbytes = 0
        self.packets = 0  # parsed (sampled viewers, and every viewer before its first frame)
        self.lost = 0
        self.media_ticks = 0
        self._last_seq = -1
        self._last_ts = -1
        self._frame: list[bytes] = []
        self._frame_ts: int | None = None

    async def open(self, http: aiohttp.ClientSession, timeout: float) -> None:
        self.t_post = time.monotonic()
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))

        @pc.on("connectionstatechange")
        def connected() -> None:
            if pc.connectionState == "connected" and not self.t_connected:
                self.t_connected = time.monotonic()

        transceiver = pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        headers = {"Content-Type": "application/sdp"}
        async with http.post(
            self.url,
            data=pc.localDescription.sdp,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as r:
            self.status = r.status
            answer = await r.text()
        if self.status != 201:
            self.error = f"POST {self.status}: {answer.strip()[:80]}"
            await pc.close()
            return
        self.t_answer = time.monotonic()
        receiver = transceiver.receiver
        receiver._handle_rtp_packet = self._on_rtp
        # Count RTP datagrams as they come off the socket (before aioice queues them), and in
        # light mode drop them there: no queue, no SRTP, no parsing.
        for proto in receiver.transport.transport._connection._protocols:
            proto.datagram_received = self._counter(proto.datagram_received)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    def _counter(self, received: Any) -> Any:
        def datagram_received(data: bytes, addr: Any) -> None:
            if len(data) > 1 and 128 <= data[0] < 192 and not 192 <= data[1] <= 223:
                self.datagrams += 1
                self.nbytes += len(data)
                if self.light:
                    return
            received(data, addr)

        return datagram_received

    async def _on_rtp(self, packet: Any, arrival_time_ms: int = 0) -> None:
        self.packets += 1
        seq, ts = packet.sequence_number, packet.timestamp
        if self._last_seq >= 0:
            gap = (seq - self._last_seq - 1) & 0xFFFF
            if gap < 0x8000:
                self.lost += gap
                self._last_seq = seq
        else:
            self._last_seq = seq
        if self._last_ts >= 0:
            dts = (ts - self._last_ts) & 0xFFFFFFFF
            if dts < 0x80000000:
                self.media_ticks += dts
                self._last_ts = ts
        else:
            self._last_ts = ts
        if self.t_first_frame:
            return
        if self._frame_ts is not None and ts != self._frame_ts:
            self._frame = []
        self._frame_ts = ts
        self._frame.append(packet.payload)
        if not packet.marker:
            return
        self.t_first_frame = time.monotonic()
        with contextlib.suppress(h264.NalError):
            nals = h264.depacketize(self._frame)
            self.first_frame_key = any(n[0] & 0x1F == h264.NAL_IDR for n in nals)
        self._frame = []
        if not self.sampled:
            self.light = True

    async def close(self) -> None:
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await self.pc.close()


async def run_webrtc(args: argparse.Namespace) -> dict[str, Any]:
    offer_main_and_high()
    gather_on_loopback()
    viewers = [Viewer(i, args.url, i % args.sample_every == 0) for i in range(args.viewers)]
    async with aiohttp.ClientSession() as http:

        async def one(v: Viewer) -> None:
            try:
                await v.open(http, args.timeout)
            except Exception as exc:
                v.error = f"{type(exc).__name__}: {exc}"[:80]

        t0 = time.monotonic()
        tasks = []
        for i, v in enumerate(viewers):
            delay = t0 + i / args.ramp_rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(v)))
        await asyncio.gather(*tasks)
        log(f"{args.viewers} offers answered in {time.monotonic() - t0:.1f}s")
        answered = [v for v in viewers if v.status == 201]
        deadline = time.monotonic() + args.settle
        # Polled with a deadline: viewers' state changes in callbacks that set no event.
        while time.monotonic() < deadline and not all(v.t_first_frame for v in answered):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        result = await window(
            args,
            total=lambda: sum(v.nbytes for v in viewers),
            sampled=lambda: [(v.lost, v.media_ticks) for v in viewers if v.sampled],
            alive=lambda: sum(1 for v in answered if v.pc and v.pc.connectionState == "connected"),
        )
        errors: dict[str, int] = {}
        for v in viewers:
            if v.error:
                errors[v.error] = errors.get(v.error, 0) + 1
        result.update(
            answered=len(answered),
            first_frames=[
                round(v.t_first_frame - v.t_post, 4) for v in answered if v.t_first_frame
            ],
            # where the first frame's wait went: POST -> answer -> ICE+DTLS up -> first frame
            answers=[round(v.t_answer - v.t_post, 4) for v in answered],
            handshakes=[round(v.t_connected - v.t_answer, 4) for v in answered if v.t_connected],
            first_after_connect=[
                round(v.t_first_frame - v.t_connected, 4)
                for v in answered
                if v.t_first_frame and v.t_connected
            ],
            first_frame_is_keyframe=sum(1 for v in answered if v.first_frame_key),
            errors=errors,
        )
        await asyncio.gather(*(v.close() for v in viewers))
    return result


async def run_rtsp(args: argparse.Namespace) -> dict[str, Any]:
    gen = LoadGen(args.url, args.viewers, args.sample_every, args.ramp_rate, 65536)
    stop = asyncio.Event()
    keeper = asyncio.create_task(gen.keepalive(stop))
    try:
        await gen.ramp()
        playing = [r for r in gen.sessions if r.playing]
        deadline = time.monotonic() + args.settle
        settled = lambda: all(r.t_keyframe or r.closed for r in playing)  # noqa: E731
        while time.monotonic() < deadline and not settled():  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        result = await window(
            args,
            total=gen.total_bytes,
            sampled=lambda: [(r.lost, r.media_ticks) for r in gen.sessions if r.sampled],
            alive=lambda: sum(1 for r in playing if not r.closed),
        )
    finally:
        stop.set()
        await keeper
        gen.close_all()
    first = [round(r.t_keyframe - r.t_connect, 4) for r in playing if r.t_keyframe]
    result.update(
        answered=len(playing),
        first_frames=first,
        first_frame_is_keyframe=len(first),
        errors=dict(gen.failures),
    )
    return result


async def window(
    args: argparse.Namespace, *, total: Any, sampled: Any, alive: Any
) -> dict[str, Any]:
    """Measure what this process receives over ``--duration`` seconds: from now, or (with
    ``--coordinated``) from when the benchmark says "go" on stdin, after this process has said
    READY on stdout, so that several load processes measure one window together."""
    await asyncio.sleep(1.0)
    if args.coordinated:
        print("READY", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    cpu0 = tree_cpu_rss(args.server_pid)[0] if args.server_pid else 0.0
    lg0 = time.process_time()
    b0 = total()
    s0 = sampled()
    t0 = time.monotonic()
    log(f"measuring for {args.duration}s")
    await asyncio.sleep(args.duration)
    t1 = time.monotonic()
    b1 = total()
    s1 = sampled()
    cpu1 = tree_cpu_rss(args.server_pid)[0] if args.server_pid else 0.0
    lg1 = time.process_time()
    win = t1 - t0
    return {
        "kind": args.kind,
        "viewers": args.viewers,
        "window_s": round(win, 3),
        "delivered_bits": (b1 - b0) * 8,
        "connected_at_end": alive(),
        "sampled_viewers": len(s1),
        "sampled_lost_packets": sum(b[0] - a[0] for a, b in zip(s0, s1, strict=True)),
        "sampled_media_s": sum(b[1] - a[1] for a, b in zip(s0, s1, strict=True)) / 90000,
        "loadgen_cpu_s": round(lg1 - lg0, 3),
        "server_cpu_s": round(cpu1 - cpu0, 3),
    }


def log(msg: str) -> None:
    print(f"[whep_load {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("kind", choices=("webrtc", "rtsp"))
    ap.add_argument("url")
    ap.add_argument("--viewers", type=int, required=True)
    ap.add_argument("--server-pid", type=int, default=0, help="measure its CPU too")
    ap.add_argument("--coordinated", action="store_true", help="READY on stdout, wait for a line")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--ramp-rate", type=float, default=10.0)
    ap.add_argument("--sample-every", type=int, default=10)
    ap.add_argument("--settle", type=float, default=15.0)
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--json")
    args = ap.parse_args()
    runner = run_webrtc if args.kind == "webrtc" else run_rtsp
    result = asyncio.run(runner(args))
    text = json.dumps(result)
    print(text, flush=True)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
