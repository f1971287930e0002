"""The gateway's memory policy (gateway/memory.py): glibc is told to map large blocks alone and
to give freed pages back, so a publisher restart's transient does not stay resident (issue #9's
soak); on any other C library nothing is done; a bad value names its key."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import wait_for

from gateway import memory
from gateway.config import ConfigError, load_config
from gateway.memory import MemoryConfig, MemoryPolicy

ROOT = Path(__file__).resolve().parents[1]

# In a fresh interpreter, so this test process's own heap history does not matter: free one
# 4 MiB block (mapped), which makes glibc raise its mmap threshold to 4 MiB, then count whether
# a 1 MiB block still gets a mapping of its own (mallinfo2's hblks) or comes from the heap,
# where glibc keeps it resident once freed.
PROBE = textwrap.dedent(
    """
    import ctypes, sys
    from gateway.memory import MemoryConfig, MemoryPolicy, glibc

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks "
                    "keepcost".split()]

    libc = glibc()
    libc.mallinfo2.restype = Mallinfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.free(libc.malloc(4 << 20))
    applied = MemoryPolicy(MemoryConfig(mmap_threshold=int(sys.argv[1]))).apply_threshold()
    before = libc.mallinfo2().hblks
    block = libc.malloc(1 << 20)
    print(applied, libc.mallinfo2().hblks - before)
    libc.free(block)
    """
)


def _probe(threshold: int) -> str:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(threshold)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(memory.glibc() is None, reason="glibc only")
def test_the_threshold_makes_glibc_map_large_blocks_again_after_it_raised_its_own() -> None:
    assert _probe(0) == "False 0"  # glibc's default: the 1 MiB block comes from the heap
    assert _probe(128 * 1024) == "True 1"  # mallopt took it: mapped alone, returned on free


@pytest.mark.skipif(memory.glibc() is None, reason="glibc only")
async def test_trimming_runs_off_the_loop_until_stopped() -> None:
    policy = MemoryPolicy(MemoryConfig(trim_interval=0.05))
    policy.start()
    try:
        assert policy.threshold_applied
        await wait_for(lambda: policy.trims >= 2, 10, what="two trims")
    finally:
        await policy.stop()
    trims = policy.trims
    assert policy._task is None
    policy.trim()  # still callable, e.g. by hand; the loop is gone
    assert policy.trims == trims + 1


class _Musl:
    """A C library with a malloc but none of glibc's: no gnu_get_libc_version, no mallopt."""

    def __init__(self, _name: object) -> None:
        pass

    def __getattr__(self, name: str) -> object:
        if name in ("malloc", "free"):
            return lambda *a: 0
        raise AttributeError(name)


async def test_on_another_c_library_the_policy_does_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(memory.ctypes, "CDLL", _Musl)
    assert memory.glibc() is None
    policy = MemoryPolicy(MemoryConfig(trim_interval=0.01))
    policy.start()
    assert not policy.apply_threshold() and not policy.threshold_applied
    assert policy._task is None  # no trimming task either
    policy.trim()
    assert policy.trims == 0
    await policy.stop()


def test_bad_memory_settings_name_their_key(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text("[memory]\nmmap_threshold = 67108864\ntrim_interval = -1\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg, env={})
    text = str(err.value)
    assert f"{cfg}: memory.mmap_threshold" in text, text
    assert f"{cfg}: memory.trim_interval" in text, text
    with pytest.raises(ConfigError) as err:
        load_config(None, env={"FEEDGATE_MEMORY__TRIM_INTERVAL": "often"})
    assert "FEEDGATE_MEMORY__TRIM_INTERVAL" in str(err.value), str(err.value)


def test_the_defaults_are_on_and_a_file_can_turn_them_off(tmp_path: Path) -> None:
    assert MemoryConfig() == MemoryConfig(mmap_threshold=131072, trim_interval=60.0)
    cfg = tmp_path / "gateway.toml"
    cfg.write_text("[memory]\nmmap_threshold = 0\ntrim_interval = 0\n")
    off = load_config(cfg, env={}).memory
    assert (off.mmap_threshold, off.trim_interval) == (0, 0)
    policy = MemoryPolicy(off)
    assert not policy.apply_threshold()  # 0: glibc's own adaptive threshold is left alone


def test_a_served_gateways_start_up_heap_is_left_out_of_full_collections() -> None:
    """A full collection walked every object alive since start-up (160-181 ms with the loop
    held, tests/test_loop_lag.py); frozen, they are out of the collector's generations."""
    script = textwrap.dedent(
        """
        import gc
        import gateway.core, gateway.http.app, gateway.serve  # what a serving process loads
        from gateway.memory import freeze_startup_heap
        before = len(gc.get_objects())
        frozen = freeze_startup_heap()
        print(before, frozen, len(gc.get_objects()))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    before, frozen, after = (int(x) for x in out.stdout.split())
    assert before > 50_000 and frozen >= 0.9 * before, (before, frozen)
    assert after < 0.01 * before, (before, after)


async def test_feedgate_serve_freezes_its_heap_once_it_is_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio
    import dataclasses

    from conftest import free_port, make_config

    from gateway import serve
    from gateway.config import HttpConfig

    frozen: list[bool] = []
    monkeypatch.setattr(serve, "freeze_startup_heap", lambda: frozen.append(True) or 1)
    config = dataclasses.replace(make_config(), http=HttpConfig(host="127.0.0.1", port=free_port()))
    for freeze in (False, True):
        ready, stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(
            serve.run_gateway(config, ready=ready, stop=stop, freeze_heap=freeze)
        )
        await asyncio.wait_for(ready.wait(), 20)
        stop.set()
        await asyncio.wait_for(task, 30)
        assert frozen == ([True] if freeze else []), freeze
