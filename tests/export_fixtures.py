"""Recordings for the export and subject-access tests: real ffmpeg writes fragmented MP4
segments (one keyframe fragment a second, as the recorder does), and the recording index is
filled from their boxes, so exports are cut from the same kind of files and index rows as a
gateway's recordings."""

from __future__ import annotations

import asyncio
import struct
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from conftest import FFMPEG, make_config

from billing.ledger import Ledger
from billing.model import UsageEvent
from gateway.config import ExportConfig, TenancyConfig
from gateway.recording.export_store import ExportJob, ExportState
from gateway.recording.exports import ExportService
from gateway.recording.index import Fragment, RecordingIndex, Segment
from gateway.tenancy import Tenancy
from tenants.audit import AuditAction


def _boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[str, int, int]]:
    """(type, offset, size) of the boxes in data[start:end]."""
    end = len(data) if end is None else end
    out = []
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        if size == 1:
            size = struct.unpack(">Q", data[at + 8 : at + 16])[0]
        if size < 8 or at + size > end:
            break
        out.append((kind.decode("latin-1"), at, size))
        at += size
    return out


def _child(data: bytes, parent: tuple[str, int, int], kind: str) -> tuple[str, int, int]:
    _, off, size = parent
    header = 8
    return next(b for b in _boxes(data, off + header, off + size) if b[0] == kind)


def _timescale(data: bytes, moov: tuple[str, int, int]) -> int:
    mdhd = _child(data, _child(data, _child(data, moov, "trak"), "mdia"), "mdhd")
    version = data[mdhd[1] + 8]
    at = mdhd[1] + 12 + (16 if version == 1 else 8)
    return int(struct.unpack(">I", data[at : at + 4])[0])


def _decode_time(data: bytes, moof: tuple[str, int, int]) -> int:
    tfdt = _child(data, _child(data, moof, "traf"), "tfdt")
    version = data[tfdt[1] + 8]
    at = tfdt[1] + 12
    fmt = ">Q" if version == 1 else ">I"
    return int(struct.unpack(fmt, data[at : at + (8 if version == 1 else 4)])[0])


def write_segment(
    path: Path, seconds: float, *, size: str = "320x240", rate: int = 25, source: str = ""
) -> None:
    src = source or f"testsrc2=size={size}:rate={rate}"
    subprocess.run(
        [
            FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", src, "-t", str(seconds),
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-g", str(rate), "-keyint_min", str(rate), "-sc_threshold", "0",
            "-movflags", "frag_keyframe+empty_moov+default_base_moof", "-f", "mp4", str(path),
        ],
        check=True,
        timeout=120,
    )  # fmt: skip


def index_segment(
    index: RecordingIndex, camera: str, seg_id: str, path: Path, start: datetime
) -> Segment:
    """Add a segment file written by :func:`write_segment` to the index, starting at
    ``start``: each moof + mdat is a fragment timed by its tfdt."""
    data = path.read_bytes()
    top = _boxes(data)
    moov = next(b for b in top if b[0] == "moov")
    scale = _timescale(data, moov)
    frags: list[Fragment] = []
    first_moof = next(b[1] for b in top if b[0] == "moof")
    for i, box in enumerate(top):
        if box[0] != "moof":
            continue
        mdat = top[i + 1]
        t = start + timedelta(seconds=_decode_time(data, box) / scale)
        frags.append(Fragment(seg_id, len(frags), camera, t, t, box[1], box[2] + mdat[2], True))
    ends = [f.start for f in frags[1:]]
    with av.open(str(path)) as c:
        duration = float(c.duration or 0) / 1e6
    ends.append(start + timedelta(seconds=duration))
    frags = [
        Fragment(f.segment, f.seq, f.camera, f.start, e, f.offset, f.length, f.keyframe)
        for f, e in zip(frags, ends, strict=True)
    ]
    seg = Segment(
        seg_id, camera, path.name, start, ends[-1], first_moof, len(data), "H264", True, "test"
    )
    index.add_segment(seg)
    index.add_fragments(frags)
    return seg


@dataclass
class Probe:
    duration: float
    frames: int
    codec: str
    errors: str


def ffprobe(path: Path) -> Probe:
    out = subprocess.run(
        [
            "ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
            "-show_entries", "format=duration:stream=codec_name,nb_read_frames",
            "-of", "default=nw=1", str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    fields = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    return Probe(
        float(fields.get("duration", "0")),
        int(fields.get("nb_read_frames", "0")),
        fields.get("codec_name", ""),
        out.stderr.strip(),
    )


def luma_frames(path: Path, limit: int = 1000) -> list[np.ndarray]:
    """The decoded luma planes of a file, as arrays."""
    out = []
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            out.append(frame.to_ndarray(format="gray").astype(np.float64))
            if len(out) >= limit:
                break
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return 99.0 if mse == 0 else 10 * float(np.log10(255.0**2 / mse))


# ---- a tenancy with recordings and the export service: the export and SAR tests' world

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(minutes=10)

SEED = """
[[tenants]]
id = "council"
name = "Council"
kind = "council"
[[tenants]]
id = "police"
name = "Police"
kind = "police"
[[tenants]]
id = "shop"
name = "Shopping centre"
kind = "retail"
[[tenants]]
id = "tfl"
name = "Transport"
kind = "transport"

[[principals]]
id = "root"
tenant = "council"
name = "Platform admin"
roles = ["admin", "auditor"]
[[principals]]
id = "officer"
tenant = "police"
name = "Investigator"
roles = ["investigator"]
[[principals]]
id = "pviewer"
tenant = "police"
name = "Police viewer"
roles = ["viewer"]
[[principals]]
id = "guard"
tenant = "shop"
name = "Shop investigator"
roles = ["investigator"]
[[principals]]
id = "tfl-inv"
tenant = "tfl"
name = "TfL investigator"
roles = ["investigator"]

[[cameras]]
id = "street"
owner = "council"

[[grants]]
id = "police-street"
owner = "council"
grantee = "police"
cameras = ["street"]
rights = ["live", "playback", "export"]
[[grants]]
id = "shop-street"
owner = "council"
grantee = "shop"
cameras = ["street"]
rights = ["live", "export"]
[[tenants]]
id = "nhs"
name = "Hospital"
kind = "health"
[[principals]]
id = "nhs-inv"
tenant = "nhs"
name = "Hospital investigator"
roles = ["investigator"]
[[grants]]
id = "nhs-street"
owner = "council"
grantee = "nhs"
cameras = ["street"]
rights = ["live", "playback", "export"]
max_playback_age_s = 60

[[grants]]
id = "tfl-street"
owner = "council"
grantee = "tfl"
cameras = ["street"]
rights = ["live", "playback"]

[[masks]]
id = "homes"
camera = "street"
points = [[0.0, 0.0], [0.5, 0.0], [0.5, 0.5], [0.0, 0.5]]
tenant_kinds = ["retail"]
"""

WHO = {"root": "council", "officer": "police", "pviewer": "police", "guard": "shop",
       "tfl-inv": "tfl", "nhs-inv": "nhs"}  # fmt: skip


class LedgerSink:
    """The usage interface straight into a real ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def emit(self, event: UsageEvent) -> None:
        self.ledger.record([event])


@dataclass
class World:
    tenancy: Tenancy
    index: RecordingIndex
    service: ExportService
    ledger: Ledger

    def token(self, who: str) -> str:
        return self.tenancy.issuer.issue(tenant=WHO[who], subject=who)

    def audit(self, action: AuditAction) -> list[Any]:
        self.tenancy.drain()
        return [e for e in self.tenancy.audit.entries() if e.action == action]

    async def done(self, job_id: str, who: str = "officer") -> ExportJob:
        async def state() -> ExportState:
            return (await self.service.get(self.token(who), job_id)).state

        for _ in range(600):
            s = await state()
            if s not in (ExportState.QUEUED, ExportState.RUNNING):
                return await self.service.get(self.token(who), job_id)
            await asyncio.sleep(0.05)
        raise AssertionError(f"export {job_id} did not finish")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    seed = tmp_path / "seed.toml"
    seed.write_text(SEED)
    config = replace(
        make_config(),
        data_dir=str(tmp_path),
        tenancy=TenancyConfig(enabled=True, seed=str(seed)),
        export=ExportConfig(retention_days=7),
    )
    tenancy = Tenancy.open(config)
    rec = tmp_path / "recordings"
    rec.mkdir()
    index = RecordingIndex(tenancy.db, rec)
    for i in range(2):
        path = rec / f"seg{i}.mp4"
        write_segment(path, 5)
        index_segment(index, "street", f"s{i}", path, T0 + timedelta(seconds=5 * i))
    ledger = Ledger(tenancy.db)
    service = ExportService(config, tenancy, index, usage=LedgerSink(ledger))
    await service.start()
    try:
        yield World(tenancy, index, service, ledger)
    finally:
        await service.stop()
        await tenancy.close()
