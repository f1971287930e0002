#!/usr/bin/env python3
"""UDP ingest's reorder buffer (issue #9 finding 16): what it costs per packet, and what it
counts, against the hub's own per-packet work on the same packets in the same run.

    python ops/bench/bench_reorder.py [--packets 200000] [--reorder 0.03] [--late 0.002]

A synthetic H.264 camera (1,200-byte RTP packets, 25 fps, 30 packets a frame, keyframe every
2 s) is fed to a hub path three ways, one CPU clock (time.process_time) each:

1. ``hub``: ``PathStream.on_rtp`` alone, packets in order: the path's per-packet floor.
2. ``in order``: through ``ReorderBuffer.push`` first, packets in order (the common case).
3. ``reordered``: ``--reorder`` of the packets sent after the next one to three, and ``--late``
   of them held past the 50 ms window, on a simulated clock (1 ms a frame's packets apart).

Prints microseconds per packet, the ratio to the hub's own cost, and the buffer's counts.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import itertools

from gateway.protocols.rtp import RTP_HEADER
from gateway.stream.hub import PathStream
from gateway.stream.reorder import ReorderBuffer
from gateway.stream.tracks import Track

TRACK = Track(0, "video", "H264", 90000, 96, ("a=rtpmap:96 H264/90000",))
PER_FRAME = 30


def packets(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        frame, part = divmod(i, PER_FRAME)
        key = frame % 50 == 0
        nal = (0x65 if key else 0x41) if part == 0 else 0x41
        marker = 0x80 if part == PER_FRAME - 1 else 0
        header = RTP_HEADER.pack(0x80, marker | 96, i & 0xFFFF, frame * 3600, 0x1234)
        out.append(header + bytes((nal,)) + bytes(1199))
    return out


def arrivals(
    pkts: list[bytes], reorder: float, late: float, seed: int
) -> list[tuple[float, bytes]]:
    """(arrival time, packet): a frame's packets 1/30 ms apart, 40 ms between frames."""
    rng = random.Random(seed)
    timed = []
    for i, p in enumerate(pkts):
        frame, part = divmod(i, PER_FRAME)
        at = frame * 0.040 + part * 0.001 / PER_FRAME
        roll = rng.random()
        if roll < late:
            at += 0.080  # past the 50 ms window: arrives late, is dropped
        elif roll < late + reorder:
            at += rng.randint(1, 3) * 0.0011 / PER_FRAME + 0.0005
        timed.append((at, p))
    timed.sort(key=lambda x: x[0])
    return timed


def fresh() -> PathStream:
    stream = PathStream("bench")
    stream.attach_source("bench", (TRACK,))
    return stream


def run_hub(pkts: list[bytes]) -> float:
    stream = fresh()
    on_rtp = stream.on_rtp
    t0 = time.process_time()
    for p in pkts:
        on_rtp(0, p)
    return time.process_time() - t0


def run_reorder(timed: list[tuple[float, bytes]]) -> tuple[float, ReorderBuffer]:
    stream = fresh()
    on_rtp = stream.on_rtp
    buf = ReorderBuffer(0.05, counters=stream.reorder)
    t0 = time.process_time()
    deadline = None
    for at, p in timed:
        if deadline is not None and at >= deadline:
            for q in buf.due(at):
                on_rtp(0, q)
        for q in buf.push((p[2] << 8) | p[3], p, at):
            on_rtp(0, q)
        deadline = buf.deadline()
    for q in buf.flush():
        on_rtp(0, q)
    return time.process_time() - t0, buf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--reorder", type=float, default=0.03)
    ap.add_argument("--late", type=float, default=0.002)
    ap.add_argument("--seed", type=int, default=16)
    args = ap.parse_args()
    print("command:", " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]))
    pkts = packets(args.packets)
    in_order = [(i * 0.0001, p) for i, p in enumerate(pkts)]
    shuffled = arrivals(pkts, args.reorder, args.late, args.seed)
    hub = min(run_hub(pkts) for _ in range(3))
    ordered_cpu, _ = min((run_reorder(in_order) for _ in range(3)), key=lambda r: r[0])
    reordered_cpu, buf = min((run_reorder(shuffled) for _ in range(3)), key=lambda r: r[0])
    n = args.packets
    print(f"{'case':<12} {'us/packet':>10} {'x hub':>7}")
    for name, cpu in (("hub", hub), ("in order", ordered_cpu), ("reordered", reordered_cpu)):
        print(f"{name:<12} {cpu / n * 1e6:>10.2f} {cpu / hub:>7.2f}")
    c = buf.counters
    out_of_place = sum(1 for a, b in itertools.pairwise(shuffled) if (b[1][3] - a[1][3]) % 256 != 1)
    print(
        f"reordered run: {out_of_place} arrivals out of place; held {c.reordered}, "
        f"late (dropped) {c.late}, lost {c.lost}, overflows {c.overflows}"
    )


if __name__ == "__main__":
    main()
