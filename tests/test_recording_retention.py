"""Retention, disk pressure and evidence locks, with the clock and the free space injected:
the sweeper deletes exactly the expired, unlocked segments and audits each deletion; below the
low-water mark the oldest unlocked segments go first and locked ones stay; below the critical
mark recording stops with an alert and a metric, and resumes when space returns."""

from __future__ import annotations

import dataclasses
import logging
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import make_config
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.config import CameraConfig, Config, RecordingConfig
from gateway.recording import locks
from gateway.recording.disk import Pressure, Space, parse_mark
from gateway.recording.index import Fragment, RecordingIndex, Segment
from gateway.recording.retention import Housekeeper, Retention
from gateway.recording.service import Recorder
from gateway.stream.hub import StreamHub
from tenants.audit import AuditAction, AuditLog
from tenants.db import Database

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
MB = 10**6


class FakeDisk:
    """A disk of ``total`` bytes whose free space is what the segment files leave."""

    def __init__(self, root: Path, total: int, other: int = 0) -> None:
        self.root, self.total, self.other = root, total, other

    def __call__(self) -> Space:
        used = sum(p.stat().st_size for p in self.root.rglob("*.mp4")) + self.other
        return Space(max(0, self.total - used), self.total)


def segment(index: RecordingIndex, camera: str, start: datetime, size: int = MB) -> Segment:
    rel = f"{camera}/{start:%Y-%m-%d}/{start:%H%M%S.%f}Z.mp4"
    path = index.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    seg = Segment(rel, camera, rel, start, start, 100, 100, "H264", False)
    index.add_segment(seg)
    index.add_fragments([Fragment(rel, 0, camera, start, start + timedelta(minutes=1), 100,
                                  size - 100, True)])  # fmt: skip
    index.close_segment(rel)
    got = index.segment(rel)
    assert got is not None
    return got


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database.open(f"sqlite:///{tmp_path}/feedgate.db")


@pytest.fixture
def audit(db: Database) -> AuditLog:
    return AuditLog(db, Ed25519PrivateKey.generate(), checkpoint_interval=math.inf)


@pytest.fixture
def index(db: Database, tmp_path: Path) -> RecordingIndex:
    return RecordingIndex(db, tmp_path / "recordings")


def deleted_entries(audit: AuditLog) -> list[tuple[str | None, str | None, str]]:
    return [
        (e.camera, e.purpose, e.detail["segment"])
        for e in audit.entries()
        if e.action is AuditAction.RECORDING_DELETED
    ]


def test_the_sweeper_deletes_exactly_the_expired_unlocked_segments(
    index: RecordingIndex, audit: AuditLog
) -> None:
    kept_days = {"a": 3, "b": 10}
    segs = {cam: [segment(index, cam, NOW - d * DAY) for d in range(1, 8)] for cam in "ab"}
    locks.lock(
        index, audit, "a", NOW - 5 * DAY, NOW - 5 * DAY + timedelta(seconds=30),
        reason="incident CAD-881", tenant="met-police", principal="dc-smith",
        expires=NOW + 30 * DAY, now=NOW,
    )  # fmt: skip
    calls: list[str] = []

    def retention(cam: str) -> Retention:
        calls.append(cam)
        return Retention(kept_days[cam], "register")

    keeper = Housekeeper(
        index, retention, on_delete=lambda d: audit.append(
            AuditAction.RECORDING_DELETED, camera=d.segment.camera, purpose=d.reason,
            detail={"segment": d.segment.id},
        ),
        low_water=parse_mark("0%"), critical=parse_mark("0%"), free_space=lambda: Space(1, 1),
    )  # fmt: skip
    gone = keeper.sweep(NOW)
    # Camera a keeps 3 days: days 4..7 ended more than 3 days ago, but day 5 is locked.
    expected = [s for s in segs["a"] if s.start <= NOW - 4 * DAY and s.start != NOW - 5 * DAY]
    assert sorted(s.id for s in gone) == sorted(s.id for s in expected)
    for s in expected:
        assert not index.file(s).exists() and index.segment(s.id) is None
    for s in segs["b"] + [segs["a"][4]]:
        assert index.file(s).exists() and index.segment(s.id) is not None
    assert sorted(deleted_entries(audit)) == sorted(("a", "retention", s.id) for s in expected)
    assert sorted(set(calls)) == ["a", "b"]
    assert keeper.sweep(NOW) == []  # nothing twice


def test_below_low_water_the_oldest_unlocked_segments_go_first(
    index: RecordingIndex, audit: AuditLog
) -> None:
    segs = [segment(index, cam, NOW - timedelta(hours=h), 10 * MB)
            for h in range(10, 0, -1) for cam in ("a", "b")]  # fmt: skip
    oldest = segs[0]
    locks.lock(
        index, audit, oldest.camera, oldest.start, oldest.end, reason="SAR-2026-14",
        tenant="council", principal="dpo", expires=NOW + DAY, now=NOW,
    )  # fmt: skip
    disk = FakeDisk(index.root, total=1000 * MB, other=770 * MB)  # 200 MB of footage: 3% free
    keeper = Housekeeper(
        index, lambda cam: Retention(31, "default"), low_water=parse_mark("10%"),
        critical=parse_mark("1%"), free_space=disk,
    )  # fmt: skip
    relief = keeper.relieve(NOW)
    assert relief.pressure is Pressure.OK and relief.space.free >= 100 * MB
    # 70 MB had to go: the 7 oldest segments that are not locked, in age order.
    assert [s.id for s in relief.deleted] == [s.id for s in segs[1:8]]
    assert index.file(oldest).exists() and index.segment(oldest.id) is not None
    assert keeper.deleted_pressure == 7


def test_locked_segments_stay_however_full_the_disk(index: RecordingIndex, audit: AuditLog) -> None:
    seg = segment(index, "a", NOW - DAY, 10 * MB)
    locks.lock(index, audit, "a", seg.start, seg.end, reason="court order 17", tenant="council",
               principal="dpo", expires=NOW + DAY, now=NOW)  # fmt: skip
    keeper = Housekeeper(
        index, lambda cam: Retention(1, "default"), low_water=parse_mark("50%"),
        critical=parse_mark("40%"), free_space=FakeDisk(index.root, 12 * MB),
    )  # fmt: skip
    relief = keeper.relieve(NOW)
    assert relief.pressure is Pressure.CRITICAL and relief.deleted == []
    assert keeper.sweep(NOW) == [] and index.file(seg).exists()


def test_locks_and_releases_are_audited(index: RecordingIndex, audit: AuditLog) -> None:
    held = locks.lock(
        index, audit, "a", NOW, NOW + timedelta(minutes=5), reason="CAD-1",
        tenant="met-police", principal="dc-1", expires=NOW + DAY, now=NOW,
    )  # fmt: skip
    assert locks.release(index, audit, held.id, tenant="met-police", principal="dc-2",
                         reason="case closed", now=NOW) is not None  # fmt: skip
    assert locks.release(index, audit, held.id, tenant="met-police", principal="dc-2") is None
    entries = [e for e in audit.entries() if e.action in (
        AuditAction.EVIDENCE_LOCK, AuditAction.EVIDENCE_RELEASE)]  # fmt: skip
    assert [(e.action, e.principal, e.purpose, e.detail["lock"]) for e in entries] == [
        (AuditAction.EVIDENCE_LOCK, "dc-1", "CAD-1", held.id),
        (AuditAction.EVIDENCE_RELEASE, "dc-2", "case closed", held.id),
    ]
    with pytest.raises(ValueError):
        locks.lock(index, audit, "a", NOW, NOW, reason="x", tenant="t", principal="p",
                   expires=NOW + DAY, now=NOW)  # fmt: skip
    assert len([e for e in audit.entries() if e.action is AuditAction.EVIDENCE_LOCK]) == 1


def recorder_config(tmp_path: Path, **recording: object) -> Config:
    cfg = make_config((CameraConfig(id="a", record=True), CameraConfig(id="b", record=True,
                       record_purpose="traffic")))  # fmt: skip
    return dataclasses.replace(
        cfg,
        data_dir=str(tmp_path),
        recording=RecordingConfig(purposes={"traffic": 7}, retention_days=20, **recording),
    )  # type: ignore[arg-type]


async def test_below_critical_recording_stops_with_an_alert_and_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = recorder_config(tmp_path, low_water="20%", critical="5%")
    space = {"free": 500 * MB}
    hub = StreamHub()
    rec = Recorder(cfg, hub, free_space=lambda: Space(space["free"], 1000 * MB))
    await rec.start()
    try:
        assert all(hub.path(c).readers for c in "ab")
        assert rec.state.pressure is Pressure.OK
        space["free"] = 10 * MB  # the disk fills from elsewhere; nothing of ours to delete
        with caplog.at_level(logging.ERROR, logger="gateway.recording.service"):
            assert await rec.check_disk() is Pressure.CRITICAL
        assert rec.state.stopped_for_disk and rec.state.disk_stops == 1
        assert not hub.path("a").readers and not hub.path("b").readers
        assert any("ALERT recording stopped" in r.getMessage() for r in caplog.records)
        space["free"] = 100 * MB  # above critical (still below low water)
        assert await rec.check_disk() is Pressure.LOW
        assert not rec.state.stopped_for_disk and hub.path("a").readers
    finally:
        await rec.stop()


def test_retention_applied_comes_from_purpose_register_or_default(tmp_path: Path) -> None:
    rec = Recorder(recorder_config(tmp_path), StreamHub())
    assert rec.retention("b") == Retention(7, "purpose:traffic")
    assert rec.retention("a") == Retention(20, "default")
    rec.db.close()


def test_the_published_figures_gain_recorded_hours_deletions_and_retention(
    index: RecordingIndex, audit: AuditLog, db: Database
) -> None:
    from tenants.transparency import monthly_report, publishable

    for h in range(3):  # three minutes in the month, one of them deleted below
        segment(index, "a", NOW + timedelta(hours=h))
    old = segment(index, "b", NOW - 40 * DAY)  # November's: not this month's hours
    keeper = Housekeeper(
        index, lambda cam: Retention(31, "register"),
        on_delete=lambda d: audit.append(
            AuditAction.RECORDING_DELETED, camera=d.segment.camera, purpose=d.reason,
            detail={"segment": d.segment.id, "retention_days": d.retention.days if
                    d.retention else None}, time=NOW + timedelta(hours=5),
        ),
        low_water=parse_mark("0%"), critical=parse_mark("0%"), free_space=lambda: Space(1, 1),
    )  # fmt: skip
    assert keeper.sweep(NOW + timedelta(hours=5)) == [old]
    report = monthly_report(db, "2026-12", now=NOW + timedelta(hours=6))
    assert report["recording"] == {
        "recorded_hours": 0.1,  # 3 minutes
        "segments_deleted_by_retention": 1,
        "segments_deleted_by_disk_pressure": 0,
        "cameras_by_retention_days_applied": {"31": 1},
        "oldest_footage_kept_days": 0.2,  # the oldest kept began 6 hours before
    }
    assert publishable(report)["recording"] == report["recording"]
    assert not {"a", "b"} & set(str(v) for v in report["recording"].values())  # none named


def test_the_register_sets_a_cameras_retention_and_owns_its_deletions(
    tmp_path: Path, db: Database, audit: AuditLog
) -> None:
    from tenants.model import Camera, Tenant, TenantKind
    from tenants.store import TenantStore

    store = TenantStore(db)
    store.put_tenant(Tenant("borough", "Borough", TenantKind.COUNCIL))
    store.put_camera(Camera("a", "borough", "High Street", retention_days=14))
    cfg = recorder_config(tmp_path)
    rec = Recorder(cfg, StreamHub(), audit=audit, store=store)
    try:
        assert rec.retention("a") == Retention(14, "register")  # the register's, not 20
        assert rec.retention("b") == Retention(7, "purpose:traffic")  # a purpose wins
        seg = segment(rec.index, "a", NOW - 15 * DAY)
        kept = segment(rec.index, "a", NOW - 13 * DAY)
        gone = rec.housekeeper.sweep(NOW)
        assert gone == [seg] and rec.index.segment(kept.id) is not None
        entry = [e for e in audit.entries() if e.action is AuditAction.RECORDING_DELETED][-1]
        assert (entry.tenant, entry.camera, entry.purpose) == ("borough", "a", "retention")
        assert entry.detail["retention_days"] == 14
        assert entry.detail["retention_source"] == "register"
        assert rec.retention_cached("a") == Retention(14, "register")
    finally:
        rec.db.close()
