"""The ``[recording]`` and ``[export]`` config sections: what is recorded, kept and exported.

Kept apart from :mod:`gateway.config` (which imports it) so recording's knobs live with the code
that reads them."""

from __future__ import annotations

from dataclasses import field
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic.dataclasses import dataclass

from gateway.configpaths import ConfigPath
from gateway.configtypes import ID_RE, STRICT, Seconds


def _disk_mark(value: str) -> str:
    from gateway.recording.disk import parse_mark

    parse_mark(value)
    return value


def _purposes(value: dict[str, int]) -> dict[str, int]:
    for name, days in value.items():
        if not ID_RE.match(name):
            raise ValueError(f"purpose {name!r} must be 1-64 of A-Z a-z 0-9 _ . -")
        if not 1 <= days <= 3650:
            raise ValueError(f"purpose {name!r}: retention must be 1..3650 days, got {days}")
    return value


DiskMark = Annotated[str, AfterValidator(_disk_mark)]


@dataclass(frozen=True, config=STRICT)
class RecordingConfig:
    """Recording to fragmented MP4 (gateway/recording/): cameras with ``record = true``."""

    # Where segment files go ("" = <data_dir>/recordings), relative to the config file.
    dir: ConfigPath = ""
    segment_seconds: Annotated[float, Field(ge=2, le=3600, allow_inf_nan=False)] = 60.0
    # Days footage is kept when the camera is not in the tenancy register (which has its own
    # retention_days per camera) and names no purpose.
    retention_days: Annotated[int, Field(ge=1, le=3650)] = 31
    # Retention by purpose, in days (a camera's record_purpose picks one), e.g.
    # {crime-prevention = 31, traffic = 7}: a purpose's retention wins over the register's.
    purposes: Annotated[dict[str, int], AfterValidator(_purposes)] = field(default_factory=dict)
    # Free space on the recording disk: below low_water the oldest segments no evidence lock
    # holds are deleted; below critical recording stops (alert, metric) until space returns.
    # A percentage of the disk ("10%") or bytes ("50GB", "500MB", "1073741824").
    low_water: DiskMark = "10%"
    critical: DiskMark = "2%"
    check_interval: Seconds = 5.0  # seconds between free-space checks
    sweep_interval: Seconds = 60.0  # seconds between retention sweeps
    # A source silent this long ends its recording run (the stretch is a gap).
    outage_after: Annotated[float, Field(ge=0.5, le=60, allow_inf_nan=False)] = 3.0
    # Access units waiting for the writers, all cameras together (a slow disk drops units to a
    # gap beyond it, never slowing live readers), and the writer threads that drain them. One
    # by default: the writers are Python under one GIL, so a second adds thread switches, not
    # throughput (9 % more CPU in bench_recording.py; one thread records ~1,000 cameras).
    queue_bytes: Annotated[int, Field(ge=1 << 20)] = 64 << 20
    writer_threads: Annotated[int, Field(ge=1, le=32)] = 1
    # Masked HLS playback (a masked tenant's segments burnt in on demand, as /get burns its
    # cuts): transcodes running at once in this process (each a decoder and a libx264
    # encoder: about a core), seconds a request waits for one before 503 with Retry-After,
    # and the bytes of burnt segments kept (LRU) for the players that ask for them again.
    hls_masked_transcodes: Annotated[int, Field(ge=1, le=32)] = 2
    hls_masked_wait: Annotated[float, Field(ge=0, le=120, allow_inf_nan=False)] = 10.0
    hls_masked_cache_bytes: Annotated[int, Field(ge=0)] = 128 << 20


@dataclass(frozen=True, config=STRICT)
class ExportConfig:
    """Evidence exports (``feedgate export``, REST /v1/exports) and subject access copies."""

    # Where exports and their signed manifests are kept ("" = data_dir/exports).
    dir: ConfigPath = ""
    # Days an export is kept before the sweeper deletes it (audited).
    retention_days: Annotated[float, Field(gt=0, le=3650, allow_inf_nan=False)] = 31.0
    # The longest range one export may cover, in seconds.
    max_duration: Annotated[float, Field(gt=0, le=7 * 86400, allow_inf_nan=False)] = 86400.0
    # Cuts running at once in this process; more wait their turn (queued).
    max_running: Annotated[int, Field(ge=1, le=16)] = 2
    # Exports waiting or running at once per tenant; more are refused (429).
    max_pending_per_tenant: Annotated[int, Field(ge=1, le=1000)] = 8
    # Seconds between retention sweeps of exports.
    sweep_interval: Seconds = 300.0
