"""Run the feedgate CLI under tracemalloc and write where memory grows, every interval.

    python traced.py OUT_DIR INTERVAL_S NFRAMES -- serve --config soak.toml

A harness for the soak (ops/bench/soak.py --tracemalloc), not part of the gateway: a daemon
thread takes a snapshot every INTERVAL_S seconds and writes OUT_DIR/minute-NNN.txt with the
traced total, the top growth sites since the first snapshot and since the previous one (by
line, and the top few by traceback). Diffing minute N against minute M is then a matter of
reading two files, or `compare.txt`, which is rewritten each time against the first snapshot.
"""

from __future__ import annotations

import gc
import runpy
import sys
import threading
import time
import tracemalloc
from pathlib import Path

TOP = 30
TOP_TRACEBACKS = 8
IGNORE = (
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    tracemalloc.Filter(False, "<unknown>"),
)


def _lines(stats: list[tracemalloc.StatisticDiff], top: int) -> list[str]:
    return [str(s) for s in stats[:top]]


def _tracebacks(stats: list[tracemalloc.StatisticDiff], top: int) -> list[str]:
    out: list[str] = []
    for s in stats[:top]:
        out.append(
            f"+{s.size_diff / 1024:.1f} KiB, +{s.count_diff} blocks (now {s.size / 1024:.1f} KiB)"
        )
        out.extend(f"    {line}" for line in s.traceback.format(limit=12))
    return out


def watch(out: Path, interval: float) -> None:
    first: tracemalloc.Snapshot | None = None
    prev: tracemalloc.Snapshot | None = None
    n = 0
    while True:
        time.sleep(interval)
        n += 1
        gc.collect()
        snap = tracemalloc.take_snapshot().filter_traces(IGNORE)
        traced, peak = tracemalloc.get_traced_memory()
        head = [f"minute {n} at {time.strftime('%H:%M:%S')}: traced {traced / 2**20:.2f} MiB, "
                f"peak {peak / 2**20:.2f} MiB, gc objects {len(gc.get_objects())}"]  # fmt: skip
        body: list[str] = []
        if first is not None and prev is not None:
            since_first = snap.compare_to(first, "lineno")
            since_prev = snap.compare_to(prev, "lineno")
            body += ["", "== growth since minute 1, by line ==", *_lines(since_first, TOP)]
            body += ["", "== growth in the last minute, by line ==", *_lines(since_prev, TOP)]
            tb = snap.compare_to(first, "traceback")
            body += [
                "",
                "== growth since minute 1, by traceback ==",
                *_tracebacks(tb, TOP_TRACEBACKS),
            ]
        text = "\n".join(head + body) + "\n"
        (out / f"minute-{n:03d}.txt").write_text(text)
        (out / "compare.txt").write_text(text)
        if first is None:
            first = snap
        prev = snap


def main() -> None:
    out, interval, nframes = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    if sys.argv[4] != "--":
        sys.exit("usage: traced.py OUT_DIR INTERVAL_S NFRAMES -- feedgate-args...")
    out.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(nframes)
    threading.Thread(target=watch, args=(out, interval), daemon=True, name="tracemalloc").start()
    sys.argv = ["feedgate", *sys.argv[5:]]
    runpy.run_module("gateway.cli", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
