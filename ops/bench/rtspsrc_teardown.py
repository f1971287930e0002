"""How often GStreamer's rtspsrc fails at teardown, against feedgate and against GStreamer's own
RTSP server in the same run (issue #9 finding 3).

Both servers serve the same ffmpeg camera (320x240 H.264, 25 fps, GOP 25): feedgate in this
process, GStreamer's ``ops/bench/gst_rtsp_server.py`` under Debian's python3 fed the same
encoder's RTP. Then ``--runs`` clients per server and transport, ``--parallel`` at a time (the
load of tests/test_rtspsrc.py), each::

    gst-launch-1.0 rtspsrc location=... protocols=tcp|udp ! rtph264depay ! h264parse !
        avdec_h264 ! fakesink num-buffers=75

Batches alternate between the servers so both see the same machine load. Each client that
exits non-zero is classified by its message: ``race`` is rtspsrc's "Could not send message.
(Received end-of-file)" after all frames decoded; anything else is ``other``.

    flock /work/tools/bench.lock python3 ops/bench/rtspsrc_teardown.py --runs 100 --parallel 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
sys.path[:0] = [str(REPO), str(REPO / "protos")]

from gateway.config import CameraConfig, Config, GrpcConfig, HttpConfig, RtspConfig  # noqa: E402
from gateway.core import Gateway  # noqa: E402

RACE = "Could not send message. (Received end-of-file)"


def _free_port(kind: int = socket.SOCK_STREAM, pair: bool = False) -> int:
    for _ in range(200):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1]) & ~1 if pair else int(s.getsockname()[1])
        if not pair:
            return port
        try:
            with socket.socket(socket.AF_INET, kind) as a, socket.socket(socket.AF_INET, kind) as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


async def _client(url: str, protocol: str, extra: list[str]) -> tuple[int, str]:
    argv = ["gst-launch-1.0", "rtspsrc", f"location={url}", f"protocols={protocol}", *extra,
            "!", "rtph264depay", "!", "h264parse", "!", "avdec_h264",
            "!", "fakesink", "num-buffers=75"]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        async with asyncio.timeout(120):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def _classify(rc: int, text: str) -> str:
    if rc == 0:
        return "ok"
    if RACE in text and "Got EOS from element" in text:
        return "race"
    return "other"


async def main(args: argparse.Namespace) -> int:
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    rtsp_port, gst_port, gst_udp = _free_port(), _free_port(), _free_port(socket.SOCK_DGRAM)
    config = Config(
        rtsp=RtspConfig(
            host="127.0.0.1", port=rtsp_port, rtp_port=_free_port(socket.SOCK_DGRAM, pair=True)
        ),
        http=HttpConfig(host="127.0.0.1", port=0),
        grpc=GrpcConfig(port=0),
        cameras=(CameraConfig(id="cam1", name="Camera 1"),),
    )
    gateway = Gateway(config)
    await gateway.start()
    gst = await asyncio.create_subprocess_exec(
        "/usr/bin/python3", str(REPO / "ops/bench/gst_rtsp_server.py"), str(gst_port),
        str(gst_udp), "/cam1", stdout=asyncio.subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    assert gst.stdout is not None
    assert (await gst.stdout.readline()).strip() == b"READY"
    enc = ["-re", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-c:v", "libx264",
           "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p", "-g", "25",
           "-bf", "0", "-b:v", "300k"]  # fmt: skip
    encoder = await asyncio.create_subprocess_exec(
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", *enc,
        "-f", "tee", "-map", "0:v",
        f"[f=rtsp:rtsp_transport=tcp]rtsp://127.0.0.1:{rtsp_port}/cam1|"
        f"[f=rtp]rtp://127.0.0.1:{gst_udp}",
        start_new_session=True,
    )  # fmt: skip
    urls = {
        "feedgate": f"rtsp://127.0.0.1:{rtsp_port}/cam1",
        "gst-rtsp-server": f"rtsp://127.0.0.1:{gst_port}/cam1",
    }
    urls = {k: v for k, v in urls.items() if k in args.servers}
    results: dict[tuple[str, str], list[str]] = {(s, p): [] for s in urls for p in args.protocols}
    others: dict[tuple[str, str], str] = {}
    started = time.monotonic()
    try:
        await asyncio.sleep(3)  # both servers have a keyframe
        for protocol in args.protocols:
            done = 0
            while done < args.runs:
                n = min(args.parallel, args.runs - done)
                for server, url in urls.items():
                    clients = (_client(url, protocol, args.rtspsrc) for _ in range(n))
                    outcomes = await asyncio.gather(*clients)
                    for rc, text in outcomes:
                        kind = _classify(rc, text)
                        results[(server, protocol)].append(kind)
                        if kind == "other":
                            others.setdefault((server, protocol), text[-1500:])
                done += n
                print(f"{protocol}: {done}/{args.runs}", file=sys.stderr, flush=True)
    finally:
        for p in (encoder, gst):
            os.killpg(p.pid, signal.SIGTERM)
            await p.wait()
        await gateway.stop()
    props = " ".join(args.rtspsrc) or "defaults"
    print(f"rtspsrc teardown: {args.runs} runs per server and transport, {args.parallel} at once,"
          f" rtspsrc {props}, {time.monotonic() - started:.0f} s")  # fmt: skip
    print(f"{'server':<16} {'transport':<9} {'failed':>7} {'race':>5} {'other':>6}")
    for (server, protocol), kinds in results.items():
        failed = sum(k != "ok" for k in kinds)
        print(
            f"{server:<16} {protocol:<9} {failed:>3}/{len(kinds):<3} "
            f"{kinds.count('race'):>5} {kinds.count('other'):>6}"
        )
    for key, text in others.items():
        print(f"--- first 'other' failure, {key[0]} {key[1]}:\n{text}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--parallel", type=int, default=20)
    parser.add_argument("--protocols", nargs="+", default=["tcp", "udp"])
    parser.add_argument("--servers", nargs="+", default=["feedgate", "gst-rtsp-server"])
    # Extra rtspsrc properties, e.g. --rtspsrc teardown-timeout=5000000000
    parser.add_argument("--rtspsrc", nargs="*", default=[])
    sys.exit(asyncio.run(main(parser.parse_args())))
