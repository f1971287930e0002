"""Playback seek latency (issue #13): PLAY with ``Range: clock=`` to the first key frame.

An hour of one 4 Mbit/s 720p camera is indexed in a gateway's tenancy database (one real
ffmpeg-written fMP4 minute, one fragment per second, indexed sixty times as consecutive
segments, so the index holds 3,600 fragments). One ONVIF replay client sets up a session and
seeks to random instants of that hour, PAUSE then PLAY each time; the latency is from sending
the PLAY to receiving the first RTP packet of the key frame at or before the instant.

The peer is ffmpeg seeking in the same file on local disk (``-ss T -i segment.mp4 -frames:v 1
-c copy``: open, seek to the key frame, write it), measured in the same run.

    flock /work/tools/bench.lock python3 ops/bench/bench_playback.py --seeks 200
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "protos")]

import imageio_ffmpeg  # noqa: E402

from gateway.config import Config, GrpcConfig, HttpConfig, RtspConfig  # noqa: E402
from gateway.core import Gateway  # noqa: E402
from gateway.playback.rtsp import RtspPlayback  # noqa: E402
from gateway.playback.service import PlaybackService  # noqa: E402
from gateway.protocols.onvif_rtp import read_replay_extension  # noqa: E402
from gateway.protocols.rtsp import InterleavedFrame, Response, RtspParser  # noqa: E402
from gateway.protocols.rtsp_replay import format_clock  # noqa: E402
from gateway.recording.index import Fragment, RecordingIndex, Segment  # noqa: E402
from tenants.db import Database  # noqa: E402

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def write_minute(path: Path) -> None:
    subprocess.run(
        [FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25",
         "-t", "60", "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "4M", "-maxrate", "4M",
         "-bufsize", "4M", "-g", "25", "-bf", "0", "-pix_fmt", "yuv420p",
         "-movflags", "frag_keyframe+empty_moov+default_base_moof", "-f", "mp4", str(path)],
        check=True,
    )  # fmt: skip


def boxes(data: bytes) -> list[tuple[str, int, int]]:
    out, pos = [], 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        out.append((data[pos + 4 : pos + 8].decode("latin-1"), pos, size))
        pos += size
    return out


def index_hour(index: RecordingIndex, rel: str, start: datetime) -> None:
    data = (index.root / rel).read_bytes()
    top = boxes(data)
    moofs = [(p, s) for k, p, s in top if k == "moof"]
    mdats = [(p, s) for k, p, s in top if k == "mdat"]
    init = moofs[0][0]
    for minute in range(60):
        t0 = start + timedelta(minutes=minute)
        seg = f"cam1-{minute}"
        index.add_segment(Segment(seg, "cam1", rel, t0, t0, init, init, "H264", False))
        index.add_fragments(
            [
                Fragment(seg, i, "cam1", t0 + timedelta(seconds=i), t0 + timedelta(seconds=i + 1),
                         m[0], d[0] + d[1] - m[0], True)
                for i, (m, d) in enumerate(zip(moofs, mdats, strict=True))
            ]
        )  # fmt: skip
        index.close_segment(seg)


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.parser = RtspParser()
        self.responses: asyncio.Queue[Response] = asyncio.Queue()
        self.first: asyncio.Future[float] | None = None
        self.want_cseq = -1
        self.cseq = 0
        self.session = ""
        self.task = asyncio.get_running_loop().create_task(self.pump())

    async def pump(self) -> None:
        while data := await self.reader.read(1 << 16):
            for ev in self.parser.feed(data):
                if isinstance(ev, Response):
                    self.responses.put_nowait(ev)
                elif isinstance(ev, InterleavedFrame) and ev.channel == 0:
                    ext = read_replay_extension(ev.payload)
                    f = self.first
                    if ext is not None and ext.cseq == self.want_cseq and f and not f.done():
                        f.set_result(time.perf_counter())

    async def request(self, method: str, uri: str, *headers: tuple[str, str]) -> Response:
        self.cseq += 1
        lines = [f"{method} {uri} RTSP/1.0", f"CSeq: {self.cseq}", "Require: onvif-replay"]
        if self.session:
            lines.append(f"Session: {self.session}")
        lines += [f"{k}: {v}" for k, v in headers]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        r = await asyncio.wait_for(self.responses.get(), 30)
        if r.headers.get("Session"):
            self.session = (r.headers.get("Session") or "").split(";")[0]
        return r


async def seeks(port: int, start: datetime, n: int) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    c = Client(reader, writer)
    base = f"rtsp://127.0.0.1:{port}/cam1"
    assert (await c.request("DESCRIBE", base)).status == 200
    transport = ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")
    r = await c.request("SETUP", f"{base}/trackID=0", transport)
    assert r.status == 200
    rng = random.Random(13)
    out = []
    for _ in range(n):
        at = start + timedelta(seconds=rng.uniform(0, 3599))
        if c.session and out:
            assert (await c.request("PAUSE", base)).status == 200
        c.want_cseq = (c.cseq + 1) & 0xFF
        c.first = asyncio.get_running_loop().create_future()
        t0 = time.perf_counter()
        r = await c.request("PLAY", base, ("Range", f"clock={format_clock(at)}-"))
        assert r.status == 200, r
        got = await asyncio.wait_for(c.first, 30)
        out.append(got - t0)
    writer.close()
    c.task.cancel()
    return out


def ffmpeg_seeks(path: Path, n: int) -> list[float]:
    rng = random.Random(13)
    out = []
    for _ in range(n):
        t = rng.uniform(0, 59)
        t0 = time.perf_counter()
        subprocess.run(
            [FFMPEG, "-v", "error", "-ss", f"{t:.3f}", "-i", str(path), "-frames:v", "1",
             "-c", "copy", "-f", "null", "-"],
            check=True,
        )  # fmt: skip
        out.append(time.perf_counter() - t0)
    return out


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeks", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "recordings"
        (root / "cam1").mkdir(parents=True)
        write_minute(root / "cam1/minute.mp4")
        config = dataclasses.replace(
            Config(),
            data_dir=tmp,
            rtsp=RtspConfig(host="127.0.0.1", port=0, rtp_port=0),
            http=HttpConfig(host="127.0.0.1", port=0),
            grpc=GrpcConfig(port=0),
        )
        gw = Gateway(config)
        await gw.start()
        db = Database.open(f"sqlite://{tmp}/index.db")
        index = RecordingIndex(db, root)
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
        index_hour(index, "cam1/minute.mp4", start)
        service = PlaybackService(index)
        RtspPlayback(gw.rtsp, service)
        try:
            cpu0 = time.process_time()
            ours = await seeks(gw.rtsp.port, start, args.seeks)
            cpu = time.process_time() - cpu0
        finally:
            await gw.stop()
            await service.stop()
            db.close()
        peer = ffmpeg_seeks(root / "cam1/minute.mp4", min(args.seeks, 100))

    def fmt(xs: list[float]) -> str:
        p50, p95, top = pct(xs, 50) * 1000, pct(xs, 95) * 1000, max(xs) * 1000
        return f"p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {top:.1f} ms"

    print(f"feedgate PLAY Range: clock -> first key frame ({len(ours)} seeks): {fmt(ours)}")
    print(f"  gateway + client CPU per seek: {cpu / len(ours) * 1000:.1f} ms")
    print(f"ffmpeg -ss in the same file, to its key frame ({len(peer)} runs): {fmt(peer)}")
    p50 = pct(ours, 50) / pct(peer, 50)
    p95 = pct(ours, 95) / pct(peer, 95)
    print(f"ratio feedgate/ffmpeg: p50 {p50:.2f}, p95 {p95:.2f}")
    print(f"mean {statistics.mean(ours) * 1000:.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
