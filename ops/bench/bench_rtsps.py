#!/usr/bin/env python3
"""What TLS costs the relay: the same readers of the same camera over RTSP and over RTSPS.

    python ops/bench/bench_rtsps.py [--readers 20] [--duration 15] [--bitrate 4M]

One `feedgate serve` with RTSPS on (a throwaway CA and certificate made here), one camera fed
by ffmpeg playing a cached clip in real time with ``-c copy``, then two phases: ``--readers``
ffmpeg viewers (``-c copy``) over ``rtsp://``, then as many over ``rtsps://`` (verifying the
certificate). Each phase measures, after a warm-up, the gateway's CPU (its process tree, /proc)
and the bytes it delivered (its /metrics), and prints CPU-seconds per delivered Gbit. The peer is
plain RTSP on the same gateway in the same run: the ratio is what TLS adds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from ipaddress import IPv4Address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from rtsp_fanout import (  # noqa: E402
    Procs,
    ensure_ffmpeg,
    fetch_metrics,
    make_clip,
    pick_port,
    tree_cpu_rss,
    wait_log_line,
)


def make_pki(d: Path) -> None:
    """ca.pem, server.pem and server.key (localhost / 127.0.0.1), valid for a day."""
    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("bench CA"))
        .issuer_name(name("bench CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def phase(
    procs: Procs,
    ffmpeg: str,
    label: str,
    url: str,
    extra: list[str],
    gateway_pid: int,
    http: int,
    args: argparse.Namespace,
) -> tuple[float, float, int]:
    """Readers on ``url``; (gateway CPU-s, delivered bits, readers still up) over the window."""
    readers = []
    for i in range(args.readers):
        cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", *extra]
        cmd += ["-rtsp_transport", "tcp", "-i", url, "-c", "copy", "-f", "null", "-"]
        readers.append(procs.start(f"{label}-reader-{i}", cmd))
    time.sleep(args.warmup)
    cpu0, _, _ = tree_cpu_rss(gateway_pid)
    sent0 = fetch_metrics(http).get("feedgate_bytes_sent_total", 0.0)
    t0 = time.monotonic()
    time.sleep(args.duration)
    cpu1, _, _ = tree_cpu_rss(gateway_pid)
    sent1 = fetch_metrics(http).get("feedgate_bytes_sent_total", 0.0)
    elapsed = time.monotonic() - t0
    alive = sum(1 for r in readers if r.poll() is None)
    for r in readers:
        r.kill()
        r.wait(10)
    bits = (sent1 - sent0) * 8
    print(
        f"{label:<6} {args.readers} readers: {bits / elapsed / 1e6:8.1f} Mbit/s delivered,"
        f" gateway CPU {(cpu1 - cpu0) / elapsed * 100:5.1f} %,"
        f" {(cpu1 - cpu0) / (bits / 1e9):6.3f} CPU-s/Gbit, {alive} readers up at the end"
    )
    return cpu1 - cpu0, bits, alive


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--readers", type=int, default=20)
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--warmup", type=float, default=4.0)
    ap.add_argument("--bitrate", default="4M")
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--gop-seconds", type=float, default=2.0)
    ap.add_argument("--clip-seconds", type=int, default=20)
    args = ap.parse_args()
    print("command:", " ".join(["ops/bench/bench_rtsps.py", *sys.argv[1:]]))
    print(f"cpus: {os.cpu_count()}")
    ffmpeg = ensure_ffmpeg()
    cache = Path(tempfile.gettempdir()) / "feedgate-bench"
    cache.mkdir(exist_ok=True)
    clip = make_clip(ffmpeg, cache, args)
    with tempfile.TemporaryDirectory(prefix="bench-rtsps-") as tmp:
        d = Path(tmp)
        make_pki(d)
        rtsp, tls, http = pick_port(18554), pick_port(18322), pick_port(18080)
        cfg = d / "feedgate.toml"
        cfg.write_text(
            f'data_dir = "{d / "var"}"\n'
            f'[rtsp]\nhost = "127.0.0.1"\nport = {rtsp}\nrtp_port = 0\ntls_port = {tls}\n'
            f'tls_cert = "{d / "server.pem"}"\ntls_key = "{d / "server.key"}"\n'
            f'[http]\nhost = "127.0.0.1"\nport = {http}\n'
            '[[cameras]]\nid = "cam"\nsource = "push"\n'
        )
        (d / "logs").mkdir()
        procs = Procs(d / "logs")
        try:
            gw = procs.start(
                "feedgate",
                [sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg)],
                cwd=HERE.parent.parent,
            )
            if not wait_log_line(procs.logfile("feedgate"), "feedgate listening", 30, gw):
                print(procs.logfile("feedgate").read_text()[-3000:])
                return 1
            procs.start(
                "camera",
                [ffmpeg, "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
                 "-i", str(clip.path), "-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp",
                 f"rtsp://127.0.0.1:{rtsp}/cam"],
            )  # fmt: skip
            if not wait_log_line(procs.logfile("feedgate"), "publishing cam", 30, gw):
                return 1
            print(
                f"clip: {clip.size}, {clip.bitrate_bps / 1e6:.1f} Mbit/s,"
                f" GOP {clip.gop_frames} frames"
            )
            plain = phase(
                procs, ffmpeg, "rtsp", f"rtsp://127.0.0.1:{rtsp}/cam", [], gw.pid, http, args
            )
            secure = phase(
                procs,
                ffmpeg,
                "rtsps",
                f"rtsps://localhost:{tls}/cam",
                ["-ca_file", str(d / "ca.pem")],
                gw.pid,
                http,
                args,
            )
            per_gbit = [cpu / (bits / 1e9) for cpu, bits, _ in (plain, secure)]
            print(f"RTSPS / RTSP gateway CPU per delivered Gbit: x{per_gbit[1] / per_gbit[0]:.2f}")
        finally:
            procs.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
