"""Where a process's resident memory is, by kind of mapping, read from outside it (/proc).

The soak (ops/bench/soak.py) found RSS growing in its first half hour while glibc's in-use heap,
Python's traced memory and RssFile stayed flat: anonymous memory neither allocator accounts for.
This splits RSS by the kind of mapping that holds it, so a per-minute record says which kind
grows. The kinds, from the mapping's size, alignment and neighbours (Linux x86-64, glibc,
CPython 3.11):

- ``heap``: the main arena's brk heap ([heap]).
- ``glibc_arena``: a thread arena's heap, a 64 MiB-aligned reservation (HEAP_MAX_SIZE) of which
  the first part is read-write and the rest PROT_NONE.
- ``thread_stack``: a thread's stack, a read-write mapping of about 8 MiB (RLIMIT_STACK) just
  above its one-page PROT_NONE guard.
- ``anon_1mib``: anonymous mappings a whole number of MiB long: pymalloc's arenas (1 MiB each,
  ARENA_SIZE in 3.10+; the kernel merges neighbouring ones into one mapping, so the count is of
  runs, not arenas: traced.py's pymalloc line has the exact number).
- ``anon_other``: every other anonymous mapping (malloc's mmap'd blocks over mmap_threshold,
  libav's and x264's large buffers, ctypes, ...).
- ``file``: file-backed mappings (code, shared libraries, mmap'd files).
- ``other``: the rest ([stack], [vdso], [vvar], ...).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

MIB = 1024  # kB
STACK_KB = (8 * MIB - 8, 8 * MIB + 8)  # an 8 MiB stack, with or without its guard page
ARENA_ALIGN = 64 * 2**20  # glibc's HEAP_MAX_SIZE on 64-bit
HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ (\d+)\s*(.*)$")
KINDS = ("heap", "glibc_arena", "thread_stack", "anon_1mib", "anon_other", "file", "other")


def _mappings(pid: int) -> list[tuple[int, int, str, bool, str, int]]:
    """(start, end, perms, anonymous, name, rss kB) per mapping of /proc/PID/smaps."""
    out: list[tuple[int, int, str, bool, str, int]] = []
    cur: list[object] | None = None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        m = HEADER.match(line)
        if m is not None:
            if cur is not None:
                out.append(tuple(cur))  # type: ignore[arg-type]
            name = m[5].strip()
            cur = [int(m[1], 16), int(m[2], 16), m[3], m[4] == "0" and not name, name, 0]
        elif cur is not None and line.startswith("Rss:"):
            cur[5] = int(line.split()[1])
    if cur is not None:
        out.append(tuple(cur))  # type: ignore[arg-type]
    return out


def breakdown(pid: int) -> dict[str, list[int]]:
    """{kind: [mappings, rss kB]} for every kind in KINDS."""
    maps = _mappings(pid)
    kinds: dict[str, list[int]] = {k: [0, 0] for k in KINDS}
    for i, (start, end, perms, anon, name, rss) in enumerate(maps):
        size_kb = (end - start) // 1024
        prev = maps[i - 1] if i else None
        nxt = maps[i + 1] if i + 1 < len(maps) else None
        if name == "[heap]":
            kind = "heap"
        elif name.startswith("/"):
            kind = "file"
        elif not anon:
            kind = "other"
        elif perms.startswith("---"):
            continue  # reservations and guards: never resident
        elif (
            start % ARENA_ALIGN == 0
            and nxt is not None
            and nxt[0] == end
            and nxt[2].startswith("---")
            and nxt[1] - start == ARENA_ALIGN
        ) or (start % ARENA_ALIGN == 0 and size_kb * 1024 == ARENA_ALIGN):
            kind = "glibc_arena"
        elif (
            STACK_KB[0] <= size_kb <= STACK_KB[1]
            and prev is not None
            and prev[1] == start
            and prev[2].startswith("---")
        ):
            kind = "thread_stack"
        elif size_kb % MIB == 0:
            kind = "anon_1mib"
        else:
            kind = "anon_other"
        kinds[kind][0] += 1
        kinds[kind][1] += rss
    return kinds


def threads(pid: int) -> tuple[int, dict[str, int]]:
    """The process's thread count and its threads by name (/proc/PID/task/*/comm)."""
    names: Counter[str] = Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            names[Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()] += 1
        except OSError:
            continue  # the thread ended meanwhile
    return sum(names.values()), dict(names)


def row(pid: int) -> dict[str, object]:
    """One minute's record: the breakdown in MiB (and mapping counts) and the threads."""
    kinds = breakdown(pid)
    n, names = threads(pid)
    return {
        "threads": n,
        "thread_names": names,
        "rss_by_kind_mib": {k: round(v[1] / 1024, 2) for k, v in kinds.items()},
        "mappings_by_kind": {k: v[0] for k, v in kinds.items()},
    }


if __name__ == "__main__":  # python smaps.py PID: one record, to look at a process by hand
    import json
    import sys

    print(json.dumps(row(int(sys.argv[1])), indent=1))
