"""Run the feedgate CLI under tracemalloc, and diff the snapshots it leaves, outside the server.

    python traced.py OUT_DIR INTERVAL_S NFRAMES -- serve --config soak.toml
    python traced.py --diff OUT_DIR/minute-003.snap OUT_DIR/minute-012.snap [--top 30]

A harness for the soak (ops/bench/soak.py --tracemalloc / --heap), not part of the gateway.
In the first form a daemon thread dumps a snapshot every INTERVAL_S seconds to
OUT_DIR/minute-NNN.snap and appends the traced total and glibc's heap figures to
OUT_DIR/traced.txt (NFRAMES 0: no tracemalloc, only the heap figures, cheap enough for the
measured soak). Grouping a snapshot's million traces by site takes tens of seconds of the GIL,
which stalled the server's loop for as long, so the server only takes and dumps them; the
second form compares two of them in another process: the top growth sites by line, then the
top few by traceback.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import runpy
import sys
import threading
import time
import tracemalloc
from pathlib import Path

IGNORE = (
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    tracemalloc.Filter(False, "<unknown>"),
)


MALLINFO2_FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in MALLINFO2_FIELDS.split()]


def malloc_line() -> str:
    """glibc's heap (mallinfo2): what C code (PyAV, libx264, OpenSSL, SQLite, and Python's own
    large objects) holds in use, and what malloc keeps free without returning it to the system.
    Python's small objects live in pymalloc's own mmap'd arenas, which this does not count."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
        m = libc.mallinfo2()
    except (OSError, AttributeError):
        return "mallinfo2 unavailable"
    mib = 2**20
    return (
        f"malloc in use {(m.uordblks + m.hblkhd) / mib:.2f} MiB "
        f"(mmapped {m.hblkhd / mib:.2f}), free kept {m.fordblks / mib:.2f} MiB, "
        f"arena {m.arena / mib:.2f} MiB"
    )


PYMALLOC = {
    "# arenas allocated current": "arenas",
    "# arenas highwater mark": "highwater",
    "# bytes in allocated blocks": "in_blocks",
    "# bytes in available blocks": "available",
}


def pymalloc_line() -> str:
    """pymalloc's own figures (sys._debugmallocstats): its 1 MiB arenas are mmap'd by Python,
    outside glibc's heap and mallinfo2, and tracemalloc counts blocks, not the arenas that hold
    them, so an arena pinned by a few live blocks shows in neither. The call prints to the C
    stderr, so fd 2 is pointed at a file for its few milliseconds (a log line another thread
    writes in that window lands there: a diagnostic run's price)."""
    import tempfile

    with tempfile.TemporaryFile("w+") as f:
        sys.stderr.flush()
        saved = os.dup(2)
        t = time.monotonic()
        try:
            os.dup2(f.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        took = time.monotonic() - t
        f.seek(0)
        got: dict[str, int] = {}
        for stat in f:
            key, _, value = stat.partition("=")
            if (name := PYMALLOC.get(key.strip())) is not None and name not in got:
                got[name] = int(value.strip().replace(",", ""))
    mib = 2**20
    return (
        f"pymalloc arenas {got.get('arenas')} (highwater {got.get('highwater')}), "
        f"in blocks {got.get('in_blocks', 0) / mib:.2f} MiB, "
        f"available {got.get('available', 0) / mib:.2f} MiB, took {took * 1e3:.0f} ms"
    )


def garbage_census(top: int = 12) -> str:
    """What a full collection finds unreachable now, by type (gc.DEBUG_SAVEALL keeps it for
    counting, then it is dropped): the objects only the cycle collector frees. A diagnostic
    (SOAK_GC_CENSUS=1): it collects everything, with the GIL held, every interval."""
    from collections import Counter

    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = Counter(type(o).__qualname__ for o in gc.garbage)
        n = len(gc.garbage)
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
        gc.collect()  # free them now: cleared from gc.garbage, they are unreachable cycles again
    return f"garbage {n} objects: " + ", ".join(f"{k} {v}" for k, v in found.most_common(top))


def watch(out: Path, interval: float, trace: bool, trim: bool, census: bool = False) -> None:
    n = 0
    while True:
        time.sleep(interval)
        n += 1
        line = f"minute {n} at {time.strftime('%H:%M:%S')}: {malloc_line()}; {pymalloc_line()}"
        # Full collections so far: pymalloc's in-use blocks fall by ~3 MiB at some of them.
        line += f"; gc full collections {gc.get_stats()[2]['collections']}"
        if census:
            line += f"; {garbage_census()}"
        if trace:
            gc.collect()
            t = time.monotonic()
            snap = tracemalloc.take_snapshot()
            snap.dump(str(out / f"minute-{n:03d}.snap"))
            traced, peak = tracemalloc.get_traced_memory()
            line += (
                f"; traced {traced / 2**20:.2f} MiB, peak {peak / 2**20:.2f} MiB, "
                f"snapshot took {time.monotonic() - t:.1f} s"
            )
        if trim:
            # A diagnostic, never for the measured soak: hand malloc's free memory back to
            # the system and say how much that was (RSS before minus after).
            before = _rss_kib()
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            line += f"; malloc_trim gave back {(before - _rss_kib()) / 1024:.2f} MiB"
        with open(out / "traced.txt", "a") as f:
            f.write(line + "\n")


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for status in f:
            if status.startswith("VmRSS:"):
                return int(status.split()[1])
    return 0


def diff(a: Path, b: Path, top: int, tracebacks: int) -> None:
    first = tracemalloc.Snapshot.load(str(a)).filter_traces(IGNORE)
    last = tracemalloc.Snapshot.load(str(b)).filter_traces(IGNORE)
    total = sum(s.size_diff for s in last.compare_to(first, "filename"))
    print(f"{a.name} -> {b.name}: traced {total / 1024:+.1f} KiB in all")
    print("\n== growth by line ==")
    for s in last.compare_to(first, "lineno")[:top]:
        print(s)
    print("\n== growth by traceback ==")
    for s in last.compare_to(first, "traceback")[:tracebacks]:
        print(
            f"{s.size_diff / 1024:+.1f} KiB, {s.count_diff:+d} blocks (now {s.size / 1024:.1f} KiB)"
        )
        for line in s.traceback.format(limit=12):
            print(f"    {line}")


def main() -> None:
    if sys.argv[1:2] == ["--diff"]:
        ap = argparse.ArgumentParser()
        ap.add_argument("--diff", nargs=2, type=Path, required=True)
        ap.add_argument("--top", type=int, default=30)
        ap.add_argument("--tracebacks", type=int, default=8)
        args = ap.parse_args()
        diff(args.diff[0], args.diff[1], args.top, args.tracebacks)
        return
    out, interval, nframes = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    if sys.argv[4] != "--":
        sys.exit("usage: traced.py OUT_DIR INTERVAL_S NFRAMES -- feedgate-args...")
    out.mkdir(parents=True, exist_ok=True)
    if nframes > 0:
        tracemalloc.start(nframes)
    threading.Thread(
        target=watch,
        args=(
            out,
            interval,
            nframes > 0,
            os.environ.get("SOAK_MALLOC_TRIM") == "1",
            os.environ.get("SOAK_GC_CENSUS") == "1",
        ),
        daemon=True,
        name="tracemalloc",
    ).start()
    sys.argv = ["feedgate", *sys.argv[5:]]
    runpy.run_module("gateway.cli", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
