"""The recording index, on SQLite and PostgreSQL: spans merge contiguous segments and break at
gaps, fragments_from starts at the keyframe at or before the asked time, and retention and
disk pressure never pick a segment an active evidence lock covers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.recording.index import (
    Fragment,
    GapReason,
    RecordingIndex,
    Segment,
    Span,
    from_us,
    to_us,
)
from tenants.db import Database

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def record(
    index: RecordingIndex,
    camera: str,
    start: float,
    seconds: int,
    *,
    gop: int = 2,
    name: str | None = None,
    closed: bool = True,
) -> Segment:
    """A segment of one-second fragments, a keyframe every ``gop`` of them."""
    seg_id = name or f"{camera}/{start:g}"
    seg = Segment(seg_id, camera, f"{seg_id}.mp4", s(start), s(start), 800, 800, "H264", False)
    index.add_segment(seg)
    offset = 800
    frags = []
    for i in range(seconds):
        frags.append(
            Fragment(seg_id, i, camera, s(start + i), s(start + i + 1), offset, 1000, i % gop == 0)
        )
        offset += 1000
    index.add_fragments(frags)
    if closed:
        index.close_segment(seg_id)
    got = index.segment(seg_id)
    assert got is not None
    return got


@pytest.fixture
def index(db: Database, tmp_path: object) -> RecordingIndex:
    return RecordingIndex(db, "/rec")


def test_times_round_trip_at_microsecond_precision() -> None:
    t = datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=UTC)
    assert from_us(to_us(t)) == t
    with pytest.raises(ValueError):
        to_us(datetime(2026, 1, 1))  # naive


def test_a_segment_grows_with_its_fragments(index: RecordingIndex) -> None:
    seg = record(index, "cam", 0, 10, closed=False)
    assert (seg.start, seg.end, seg.bytes, seg.closed) == (s(0), s(10), 800 + 10_000, False)
    assert [f.seq for f in index.fragments(seg.id)] == list(range(10))
    assert index.open_segments() == [seg]
    index.close_segment(seg.id)
    assert index.open_segments() == []
    assert str(index.file(seg)) == "/rec/cam/0.mp4"


def test_spans_merge_contiguous_segments_and_break_at_gaps(index: RecordingIndex) -> None:
    record(index, "cam", 0, 60)
    record(index, "cam", 60, 60)  # rolled over: contiguous
    record(index, "cam", 130, 30)  # 10 s later, after a camera outage
    index.add_gap("cam", s(120), s(130), GapReason.CAMERA_OUTAGE)
    record(index, "cam", 160.2, 20)  # a restart of ours, 0.2 s later: a gap, not stitched
    index.add_gap("cam", s(160), s(160.2), GapReason.GATEWAY_RESTART)
    record(index, "other", 0, 300)
    assert index.spans("cam", s(-100), s(1000)) == [
        Span(s(0), s(120)),
        Span(s(130), s(160)),
        Span(s(160.2), s(180.2)),
    ]
    # Clipped to the window asked for.
    assert index.spans("cam", s(30), s(140)) == [Span(s(30), s(120)), Span(s(130), s(140))]
    assert index.spans("cam", s(500), s(600)) == []
    gaps = index.gaps("cam", s(0), s(1000))
    assert [(g.start, g.end, g.reason) for g in gaps] == [
        (s(120), s(130), GapReason.CAMERA_OUTAGE),
        (s(160), s(160.2), GapReason.GATEWAY_RESTART),
    ]


def test_fragments_from_starts_at_the_keyframe_at_or_before_the_time(
    index: RecordingIndex,
) -> None:
    record(index, "cam", 0, 60, gop=4)
    record(index, "cam", 60, 60, gop=4)
    record(index, "other", 0, 60, gop=1)
    frags = index.fragments_from("cam", s(9.5), limit=5)
    assert [f.start for f in frags] == [s(8), s(9), s(10), s(11), s(12)]
    assert frags[0].keyframe
    # Exactly on a keyframe: that one.
    assert index.fragments_from("cam", s(12), limit=1)[0].start == s(12)
    # Across the segment boundary, in time order.
    frags = index.fragments_from("cam", s(58), s(62))
    assert [(f.segment, f.seq) for f in frags] == [
        ("cam/0", 56), ("cam/0", 57), ("cam/0", 58), ("cam/0", 59), ("cam/60", 0), ("cam/60", 1),
    ]  # fmt: skip
    # The end is exclusive and the limit holds.
    assert len(index.fragments_from("cam", s(0), s(10))) == 10
    assert len(index.fragments_from("cam", s(0), limit=7)) == 7


def test_fragments_from_a_gap_start_at_the_next_recording(index: RecordingIndex) -> None:
    record(index, "cam", 0, 10, gop=4)
    record(index, "cam", 30, 10, gop=4)
    index.add_gap("cam", s(10), s(30), GapReason.CAMERA_OUTAGE)
    # 20 s is in the gap: not the keyframe at 8 s of the earlier recording, the one at 30 s.
    assert index.fragments_from("cam", s(20), limit=1)[0].start == s(30)
    assert index.fragments_from("cam", s(-5), limit=1)[0].start == s(0)
    assert index.fragments_from("cam", s(100)) == []


def test_truncating_a_segment_drops_its_later_fragments(index: RecordingIndex) -> None:
    seg = record(index, "cam", 0, 10, closed=False)
    assert index.truncate_segment(seg.id, 7) == 3
    after = index.segment(seg.id)
    assert after is not None and (after.end, after.bytes) == (s(7), 800 + 7000)
    index.truncate_segment(seg.id, 0)
    after = index.segment(seg.id)
    assert after is not None and (after.end, after.bytes) == (s(0), 800)


def test_expired_segments_are_past_retention_closed_and_unlocked(
    index: RecordingIndex,
) -> None:
    day = timedelta(days=1)
    for d in range(10):
        record(index, "short", d * 86400, 60)
        record(index, "long", d * 86400, 60)
    record(index, "short", 9 * 86400 + 60, 60, closed=False)  # being written
    now = s(10 * 86400)
    index.lock(
        "short", s(2 * 86400 + 30), s(2 * 86400 + 40), reason="incident 4711",
        tenant="met-police", principal="pc-1", expires=now + day, now=now,
    )  # fmt: skip
    retention = {"short": 3 * day, "long": 30 * day}
    expired = index.segments_expired(now, lambda cam: retention[cam])
    # Days 0..6 of "short" ended more than 3 days ago; day 2 is locked; "long" keeps all.
    assert [seg.id for seg in expired] == [f"short/{d * 86400}" for d in (0, 1, 3, 4, 5, 6)]
    # Once the lock expires, day 2 goes too.
    later = now + 2 * day
    ids = {seg.id for seg in index.segments_expired(later, lambda cam: retention[cam])}
    assert "short/172800" in ids


def test_a_released_lock_no_longer_holds(index: RecordingIndex) -> None:
    record(index, "cam", 0, 60)
    now = s(86400 * 40)
    lock = index.lock(
        "cam", s(0), s(10), reason="sar-12", tenant="council", principal="op",
        expires=now + timedelta(days=30), now=now,
    )  # fmt: skip
    seg = index.segments("cam")[0]
    assert index.is_locked(seg, now)
    assert index.segments_expired(now, lambda _c: timedelta(days=31)) == []
    assert index.oldest_unlocked(now) == []
    released = index.release(lock.id, by="op", now=now)
    assert released is not None and released.released == now and released.released_by == "op"
    assert not released.active(now)
    assert index.release(lock.id, by="op", now=now) is None  # once
    assert not index.is_locked(seg, now)
    assert index.segments_expired(now, lambda _c: timedelta(days=31)) == [seg]
    assert index.oldest_unlocked(now) == [seg]
    assert [lk.id for lk in index.locks("cam")] == [lock.id]
    assert index.locks("cam", active_at=now) == []


def test_a_lock_is_refused_without_reason_range_or_future_expiry(index: RecordingIndex) -> None:
    now = s(0)
    kw = {"tenant": "t", "principal": "p", "now": now}
    with pytest.raises(ValueError, match="reason"):
        index.lock("cam", s(0), s(1), reason=" ", expires=s(10), **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="end"):
        index.lock("cam", s(1), s(1), reason="r", expires=s(10), **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expiry"):
        index.lock("cam", s(0), s(1), reason="r", expires=s(0), **kw)  # type: ignore[arg-type]


def test_oldest_unlocked_goes_by_age_across_cameras(index: RecordingIndex) -> None:
    record(index, "b", 0, 10)
    record(index, "a", 5, 10)
    record(index, "a", 100, 10, closed=False)
    now = s(1000)
    assert [seg.id for seg in index.oldest_unlocked(now, 5)] == ["b/0", "a/5"]


def test_recorded_seconds_per_camera_within_a_window(index: RecordingIndex) -> None:
    record(index, "a", 0, 60)
    record(index, "a", 100, 60)
    record(index, "b", 0, 30)
    assert index.recorded_seconds(s(30), s(130)) == {"a": 60.0}  # 30-60 and 100-130
    assert index.recorded_seconds(s(0), s(1000)) == {"a": 120.0, "b": 30.0}


def test_deleting_a_segment_removes_its_fragments(index: RecordingIndex) -> None:
    seg = record(index, "cam", 0, 5)
    assert index.delete_segment(seg.id)
    assert index.segment(seg.id) is None and index.fragments(seg.id) == []
    assert not index.delete_segment(seg.id)
