"""Playback seek latency (issue #13): PLAY with ``Range: clock=`` to the first key frame.

An hour of one 4 Mbit/s 720p camera is indexed in a gateway's tenancy database (one real
ffmpeg-written fMP4 minute, one fragment per second, indexed sixty times as consecutive
segments, so the index holds 3,600 fragments). One ONVIF replay client sets up a session and
seeks to random instants of that hour, PAUSE then PLAY each time; the latency is from sending
the PLAY to receiving the first RTP packet of the key frame at or before the instant.

The peer is ffmpeg seeking in the same file on local disk (``-ss T -i segment.mp4 -frames:v 1
-c copy``: open, seek to the key frame, write it), measured in the same run.

``--sound``: the minute also carries the camera's AAC (44.1 kHz mono, 64 kbit/s, muxed beside
the video as the recorder does) and the client sets up both tracks. ``--replay-minutes N``
then also plays N minutes of the recording at ``Rate-Control: no`` (as fast as the client
reads) and gives the gateway and client CPU per recorded minute, with the sound and without it
(cam2: the same pictures recorded without sound), to show what playing the sound costs.

    flock /work/tools/bench.lock python3 ops/bench/bench_playback.py --seeks 200
    flock /work/tools/bench.lock python3 ops/bench/bench_playback.py --seeks 200 --sound \
        --replay-minutes 10
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


def write_minute(path: Path, sound: bool = False) -> None:
    audio_in = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"] if sound else []
    audio_out = ["-map", "0:v", "-map", "1:a", "-c:a", "aac", "-b:a", "64k"] if sound else []
    subprocess.run(
        [FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25",
         *audio_in, "-t", "60", *audio_out, "-c:v", "libx264", "-preset", "ultrafast",
         "-b:v", "4M", "-maxrate", "4M",
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


def index_hour(index: RecordingIndex, rel: str, start: datetime, camera: str = "cam1") -> None:
    data = (index.root / rel).read_bytes()
    top = boxes(data)
    moofs = [(p, s) for k, p, s in top if k == "moof"]
    mdats = [(p, s) for k, p, s in top if k == "mdat"]
    init = moofs[0][0]
    for minute in range(60):
        t0 = start + timedelta(minutes=minute)
        seg = f"{camera}-{minute}"
        index.add_segment(Segment(seg, camera, rel, t0, t0, init, init, "H264", False))
        index.add_fragments(
            [
                Fragment(seg, i, camera, t0 + timedelta(seconds=i), t0 + timedelta(seconds=i + 1),
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
        self.until: datetime | None = None  # replay: set ``reached`` at this capture time
        self.reached = asyncio.Event()
        self.sound_packets = 0
        self.cseq = 0
        self.session = ""
        self.task = asyncio.get_running_loop().create_task(self.pump())

    async def pump(self) -> None:
        while data := await self.reader.read(1 << 16):
            for ev in self.parser.feed(data):
                if isinstance(ev, Response):
                    self.responses.put_nowait(ev)
                elif isinstance(ev, InterleavedFrame) and ev.channel == 2:
                    self.sound_packets += 1
                elif isinstance(ev, InterleavedFrame) and ev.channel == 0:
                    ext = read_replay_extension(ev.payload)
                    f = self.first
                    if ext is not None and ext.cseq == self.want_cseq and f and not f.done():
                        f.set_result(time.perf_counter())
                    until = self.until
                    if ext is not None and until is not None and ext.captured >= until:
                        self.reached.set()

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


async def session(port: int, sound: bool, camera: str = "cam1") -> tuple[Client, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    c = Client(reader, writer)
    base = f"rtsp://127.0.0.1:{port}/{camera}"
    r = await c.request("DESCRIBE", base)
    assert r.status == 200 and (b"m=audio" in r.body) == sound, r
    for track in (0, 1) if sound else (0,):
        transport = ("Transport", f"RTP/AVP/TCP;unicast;interleaved={2 * track}-{2 * track + 1}")
        r = await c.request("SETUP", f"{base}/trackID={track}", transport)
        assert r.status == 200
    return c, base


async def replay(port: int, start: datetime, minutes: int, sound: bool) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, sound packets) to receive ``minutes`` of the recording at
    Rate-Control: no."""
    c, base = await session(port, sound, "cam1" if sound else "cam2")
    c.want_cseq = (c.cseq + 1) & 0xFF
    c.until = start + timedelta(minutes=minutes) - timedelta(seconds=1)
    t0, cpu0 = time.perf_counter(), time.process_time()
    headers = (("Range", f"clock={format_clock(start)}-"), ("Rate-Control", "no"))
    assert (await c.request("PLAY", base, *headers)).status == 200
    await asyncio.wait_for(c.reached.wait(), 600)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    c.writer.close()
    c.task.cancel()
    return wall, cpu, c.sound_packets


async def seeks(
    port: int, start: datetime, n: int, sound: bool = False, camera: str = "cam1"
) -> list[float]:
    c, base = await session(port, sound, camera)
    writer = c.writer
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
    ap.add_argument("--sound", action="store_true", help="the recording carries AAC too")
    ap.add_argument("--replay-minutes", type=int, default=0)
    args = ap.parse_args()
    replays: list[tuple[str, tuple[float, float, int]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "recordings"
        (root / "cam1").mkdir(parents=True)
        write_minute(root / "cam1/minute.mp4", args.sound)
        if args.replay_minutes:
            (root / "cam2").mkdir()
            write_minute(root / "cam2/minute.mp4")  # the same pictures, no sound
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
        if args.replay_minutes:
            index_hour(index, "cam2/minute.mp4", start, "cam2")
        service = PlaybackService(index)
        RtspPlayback(gw.rtsp, service)
        try:
            cpu0 = time.process_time()
            ours = await seeks(gw.rtsp.port, start, args.seeks, args.sound)
            cpu = time.process_time() - cpu0
            silent: list[float] = []
            if args.sound and args.replay_minutes:  # the same seeks without the sound
                silent = await seeks(gw.rtsp.port, start, args.seeks, False, "cam2")
            for _ in range(2 if args.replay_minutes else 0):  # twice: the second run is warm
                for sound in (False, True) if args.sound else (False,):
                    got = await replay(gw.rtsp.port, start, args.replay_minutes, sound)
                    replays.append(("pictures and sound" if sound else "pictures only", got))
        finally:
            await gw.stop()
            await service.stop()
            db.close()
        peer = ffmpeg_seeks(root / "cam1/minute.mp4", min(args.seeks, 100))

    def fmt(xs: list[float]) -> str:
        p50, p95, top = pct(xs, 50) * 1000, pct(xs, 95) * 1000, max(xs) * 1000
        return f"p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {top:.1f} ms"

    sound = " (both tracks set up)" if args.sound else ""
    print(f"feedgate PLAY Range: clock -> first key frame ({len(ours)} seeks){sound}: {fmt(ours)}")
    print(f"  gateway + client CPU per seek: {cpu / len(ours) * 1000:.1f} ms")
    print(f"ffmpeg -ss in the same file, to its key frame ({len(peer)} runs): {fmt(peer)}")
    p50 = pct(ours, 50) / pct(peer, 50)
    p95 = pct(ours, 95) / pct(peer, 95)
    print(f"ratio feedgate/ffmpeg: p50 {p50:.2f}, p95 {p95:.2f}")
    print(f"mean {statistics.mean(ours) * 1000:.1f} ms")
    if silent:
        print(f"the same seeks of the same pictures recorded without sound: {fmt(silent)}")
    for what, (wall, cpu, packets) in replays:
        per = cpu / args.replay_minutes
        print(
            f"replay of {args.replay_minutes} min at Rate-Control: no, {what}: {wall:.2f} s wall,"
            f" {per:.3f} CPU-s per recorded minute (gateway + client), {packets} sound packets"
        )


if __name__ == "__main__":
    asyncio.run(main())
