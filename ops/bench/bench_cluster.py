"""Several nodes as one gateway (issue #15): readers served by 1, 2 and 3 nodes, the latency the
edge relay adds, and failover after kill -9 of a camera's owner.

    flock /work/tools/bench.lock python3 ops/bench/bench_cluster.py [--runs 10] [--readers 50]
        [--relay tls|plaintext]

Starts its own redis-server, a camera simulator (a lab ``feedgate serve`` fed by ffmpeg's
test pattern) and three ``feedgate serve`` nodes with tenancy off (no database: the relay
path alone), all on loopback. Readers are RTSP clients (gateway.sources.rtsp_client) in this
process, so on a 2-core machine the readers, the camera, ffmpeg and the nodes share the
cores: the reader figures say what this machine delivers, not what a node could.

- readers: R readers on each of the first k nodes for ``--seconds``; per k, the readers
  that got at least 95 % of real time, the delivered ratio, and the nodes' CPU seconds.
- edge latency: one reader on the owner and one on an edge; the same RTP payload's arrival
  on the edge minus on the owner, p50 and p95.
- failover: ``--runs`` times, kill -9 of the owner while a reader watches on another node;
  the time until another node holds the lease (Redis) and until the reader gets media again.

``--relay tls`` (the default, as a deployment runs) relays between nodes over mutual TLS with
a cluster CA made for the run; ``--relay plaintext`` uses ``cluster.loopback_only``, to show
what TLS costs.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis
from benchkit.procs import Procs, pick_port, tree_cpu_rss, wait_tcp

from gateway.sources.rtsp_client import RtspClient, RtspClientError

SECRET = "bench-cluster-secret"
BITRATE = 1_000_000


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


class Reader:
    """One RTSP reader counting bytes and remembering when each payload arrived."""

    def __init__(self, url: str, keep: bool = False) -> None:
        self.url = url
        self.bytes = 0
        self.last = 0.0
        self.keep = keep
        self.arrivals: dict[bytes, float] = {}
        self.resumed: list[float] = []
        self.task: asyncio.Task[None] | None = None

    def on_packet(self, channel: int, payload: bytes) -> None:
        now = time.monotonic()
        if channel & 1:
            return
        if self.last and now - self.last > 0.3:
            self.resumed.append(now)
        self.last = now
        self.bytes += len(payload)
        if self.keep:
            self.arrivals[hashlib.blake2b(payload[12:], digest_size=8).digest()] = now

    async def run(self) -> None:
        while True:
            client = RtspClient(self.url, on_packet=self.on_packet)
            try:
                await client.connect()
                d = await client.describe()
                await client.setup(d.base_url, "trackID=0", 0, "tcp")
                await client.play()
                assert client.closed is not None
                await client.closed
            except (RtspClientError, OSError, AssertionError):
                pass
            finally:
                await client.close()
            await asyncio.sleep(0.1)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
        self.procs = Procs(self.dir)
        self.redis_port = pick_port(26379)
        self.camera_port = pick_port(26554)
        self.nodes: list[dict[str, Any]] = []
        self.r = redis.Redis(port=self.redis_port)

    def feedgate(self, name: str, config: str) -> Any:
        path = self.dir / f"{name}.toml"
        path.write_text(config)
        return self.procs.start(
            name, [sys.executable, "-m", "gateway.cli.main", "serve", "--config", str(path)]
        )

    def node_config(self, i: int, rtsp: int, relay: int) -> str:
        return f"""node_id = "node{i}"
data_dir = "{self.dir}/node{i}"
log_level = "WARNING"
[rtsp]
host = "127.0.0.1"
port = {rtsp}
rtp_port = 0
[http]
host = "127.0.0.1"
port = {pick_port(27080 + 10 * i)}
[grpc]
port = 0
[webrtc]
enabled = false
[cluster]
redis_url = "redis://127.0.0.1:{self.redis_port}/0"
secret = "{SECRET}"
relay_port = {relay}
{self.relay_settings()}
[[cameras]]
id = "yard"
source = "rtsp://127.0.0.1:{self.camera_port}/cam1"
"""

    def relay_settings(self) -> str:
        if self.args.relay == "plaintext":
            return "loopback_only = true"
        from gateway.cluster.tls import make_cluster_pki

        k = self.dir / "keys"
        made = [k / "cluster-ca.pem", k / "cluster.pem", k / "cluster.key"]
        make_cluster_pki(made[0], made[1], made[2], "feedgate-cluster")
        return (
            f'[keys]\ncluster_ca = "{made[0]}"\ncluster_cert = "{made[1]}"\n'
            f'cluster_key = "{made[2]}"'
        )

    def start(self) -> None:
        redis_bin = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.procs.start(
            "redis",
            [redis_bin, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", ""],
        )
        cam = self.feedgate(
            "camera",
            f"""data_dir = "{self.dir}/camera"
log_level = "WARNING"
[rtsp]
host = "127.0.0.1"
port = {self.camera_port}
rtp_port = 0
[http]
host = "127.0.0.1"
port = {pick_port(27000)}
[grpc]
port = 0
[webrtc]
enabled = false
[[cameras]]
id = "cam1"
""",
        )
        assert wait_tcp(self.camera_port, 60, cam), "camera did not start"
        import imageio_ffmpeg

        ff = imageio_ffmpeg.get_ffmpeg_exe()
        self.procs.start(
            "ffmpeg",
            [
                ff,
                "-hide_banner",
                "-nostdin",
                "-loglevel",
                "error",
                "-re",
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=640x360:rate=25",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
                "-g",
                "25",
                "-bf",
                "0",
                "-b:v",
                "1000k",
                "-f",
                "rtsp",
                f"rtsp://127.0.0.1:{self.camera_port}/cam1",
            ],
        )
        for i in (1, 2, 3):
            rtsp, relay = pick_port(26600 + 10 * i), pick_port(26700 + 10 * i)
            self.nodes.append({"id": f"node{i}", "rtsp": rtsp, "relay": relay, "i": i})
            self.start_node(self.nodes[-1])
        for n in self.nodes:
            assert wait_tcp(n["rtsp"], 90, n["proc"]), f"{n['id']} did not start"

    def start_node(self, n: dict[str, Any]) -> None:
        n["proc"] = self.feedgate(n["id"], self.node_config(n["i"], n["rtsp"], n["relay"]))

    def owner(self) -> str | None:
        """The node holding yard's lease now (``node/incarnation|token``)."""
        raw = self.r.get("feedgate:own:yard")
        return raw.decode().rpartition("|")[0].rpartition("/")[0] if raw else None

    def url(self, n: dict[str, Any]) -> str:
        return f"rtsp://127.0.0.1:{n['rtsp']}/yard"

    async def wait_owner(self, timeout: float = 60, not_: str | None = None) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            o = self.owner()
            if o is not None and o != not_:
                return o
            await asyncio.sleep(0.02)
        raise RuntimeError("no owner of yard")

    async def readers(self) -> list[dict[str, Any]]:
        out = []
        for k in (1, 2, 3):
            readers = [
                Reader(self.url(n)) for n in self.nodes[:k] for _ in range(self.args.readers)
            ]
            for rd in readers:
                rd.start()
            await asyncio.sleep(3)  # connect, GOP burst
            cpu0 = sum(tree_cpu_rss(n["proc"].pid)[0] for n in self.nodes)
            b0 = [rd.bytes for rd in readers]
            t0 = time.monotonic()
            await asyncio.sleep(self.args.seconds)
            elapsed = time.monotonic() - t0
            cpu = sum(tree_cpu_rss(n["proc"].pid)[0] for n in self.nodes) - cpu0
            got = [
                (rd.bytes - b) * 8 / elapsed / BITRATE for rd, b in zip(readers, b0, strict=True)
            ]
            for rd in readers:
                await rd.stop()
            full = sum(1 for g in got if g >= 0.95)
            out.append(
                {
                    "nodes": k,
                    "readers": len(readers),
                    "served_95": full,
                    "ratio_p50": statistics.median(got),
                    "node_cpu_s": cpu / elapsed,
                }
            )
            print(
                f"{k} node(s): {full}/{len(readers)} readers at >=95% real time,"
                f" median {statistics.median(got):.2f}, nodes' CPU {cpu / elapsed:.2f} cores",
                flush=True,
            )
            await asyncio.sleep(2)
        return out

    async def latency(self) -> dict[str, float]:
        owner = await self.wait_owner()
        o = next(n for n in self.nodes if n["id"] == owner)
        e = next(n for n in self.nodes if n["id"] != owner)
        ro, re_ = Reader(self.url(o), keep=True), Reader(self.url(e), keep=True)
        ro.start()
        re_.start()
        await asyncio.sleep(3 + self.args.seconds)
        await ro.stop()
        await re_.stop()
        arrived = ro.arrivals
        deltas = [(t - arrived[h]) * 1000 for h, t in re_.arrivals.items() if h in arrived]
        res = {"p50_ms": pct(deltas, 50), "p95_ms": pct(deltas, 95), "packets": len(deltas)}
        print(
            f"edge relay adds p50 {res['p50_ms']:.2f} ms, p95 {res['p95_ms']:.2f} ms"
            f" over {len(deltas)} packets",
            flush=True,
        )
        return res

    async def failover(self) -> dict[str, float]:
        leases, media = [], []
        for run in range(self.args.runs):
            owner = await self.wait_owner()
            o = next(n for n in self.nodes if n["id"] == owner)
            watcher = next(n for n in self.nodes if n["id"] != owner)
            rd = Reader(self.url(watcher))
            rd.start()
            deadline = time.monotonic() + 20
            while rd.bytes < 50_000 and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            o["proc"].send_signal(signal.SIGKILL)
            killed = time.monotonic()
            await self.wait_owner(30, not_=owner)
            leases.append(time.monotonic() - killed)
            while not [t for t in rd.resumed if t > killed] and time.monotonic() - killed < 30:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            back = [t for t in rd.resumed if t > killed]
            media.append((back[0] - killed) if back else float("nan"))
            await rd.stop()
            o["proc"].wait()
            self.start_node(o)
            assert wait_tcp(o["rtsp"], 90, o["proc"])
            print(
                f"run {run + 1}: new owner after {leases[-1]:.2f}s,"
                f" media again after {media[-1]:.2f}s",
                flush=True,
            )
            await asyncio.sleep(2)
        res = {
            "lease_p50": pct(leases, 50),
            "lease_p95": pct(leases, 95),
            "media_p50": pct(media, 50),
            "media_p95": pct(media, 95),
        }
        print(
            f"failover over {len(leases)} runs: new owner p50 {res['lease_p50']:.2f}s"
            f" p95 {res['lease_p95']:.2f}s; viewer's media back p50 {res['media_p50']:.2f}s"
            f" p95 {res['media_p95']:.2f}s",
            flush=True,
        )
        return res


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--readers", type=int, default=50, help="readers per node")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--skip-readers", action="store_true")
    ap.add_argument("--relay", choices=("tls", "plaintext"), default="tls")
    args = ap.parse_args()
    bench = Bench(args)
    try:
        bench.start()
        await bench.wait_owner()
        result: dict[str, Any] = {}
        if not args.skip_readers:
            result["readers"] = await bench.readers()
        result["latency"] = await bench.latency()
        result["failover"] = await bench.failover()
        print(json.dumps(result, indent=2))
    finally:
        bench.procs.stop_all()
        bench.r.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
