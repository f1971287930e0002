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
