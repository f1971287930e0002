"""Cutting a recorded range to an MP4 (issue #13.5): remuxed when no mask applies, burnt in
when zones do, read cleanly by ffprobe with the range's duration."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from export_fixtures import ffprobe, index_segment, luma_frames, psnr, write_segment

from gateway.masking.zones import Zone
from gateway.recording.export_cut import Cancelled, CutError, TimedZone, cut
from gateway.recording.index import GapReason, RecordingIndex
from tenants.db import Database

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
# The top left quarter of the picture.
QUARTER = Zone("homes", ((0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (0.0, 0.5)))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[RecordingIndex, Path]:
    """cam1: two 6 s segments from 10:00:00, a 4 s camera outage, one more from 10:00:16."""
    root = tmp_path_factory.mktemp("rec")
    index = RecordingIndex(Database.open(f"sqlite:///{root}/db.sqlite"), root)
    for i, at in enumerate((0, 6, 16)):
        path = root / f"seg{i}.mp4"
        write_segment(path, 6)
        index_segment(index, "cam1", f"s{i}", path, T0 + timedelta(seconds=at))
    index.add_gap("cam1", T0 + timedelta(seconds=12), T0 + timedelta(seconds=16),
                  GapReason.CAMERA_OUTAGE)  # fmt: skip
    return index, root


def test_an_unmasked_cut_is_the_cameras_own_packets_with_the_ranges_duration(
    recorded: tuple[RecordingIndex, Path], tmp_path: Path
) -> None:
    index, _ = recorded
    out = tmp_path / "clip.mp4"
    start, end = T0 + timedelta(seconds=2.5), T0 + timedelta(seconds=9.5)
    seen: list[float] = []
    result = cut(index, "cam1", start, end, out, progress=seen.append)
    probe = ffprobe(out)
    assert probe.errors == ""
    assert probe.codec == "h264"
    assert not result.reencoded
    # It starts at the keyframe at or before the start (fragments are 1 s keyframe GOPs).
    assert result.media_start == T0 + timedelta(seconds=2)
    assert abs(probe.duration - (end - start).total_seconds()) <= 1.0
    assert probe.frames == result.frames == 7 * 25 + 13  # 2.0 s up to 9.5 s, at 25 fps
    assert seen == sorted(seen) and seen[-1] == 1.0


def test_a_cut_across_segments_and_an_outage_keeps_the_gap(
    recorded: tuple[RecordingIndex, Path], tmp_path: Path
) -> None:
    index, _ = recorded
    out = tmp_path / "clip.mp4"
    result = cut(index, "cam1", T0 + timedelta(seconds=10), T0 + timedelta(seconds=18), out)
    assert result.gaps == [(T0 + timedelta(seconds=12), T0 + timedelta(seconds=16))]
    probe = ffprobe(out)
    assert probe.errors == ""
    assert probe.frames == 4 * 25  # 10-12 and 16-18: nothing is made up for the outage
    assert abs(probe.duration - 8.0) <= 1.0  # capture times kept: the gap stays a gap


def test_a_masked_cut_is_dark_in_its_zones_and_faithful_outside(
    recorded: tuple[RecordingIndex, Path], tmp_path: Path
) -> None:
    index, _ = recorded
    start, end = T0 + timedelta(seconds=1.5), T0 + timedelta(seconds=4.5)
    plain, masked = tmp_path / "plain.mp4", tmp_path / "masked.mp4"
    whole = cut(index, "cam1", start, end, plain)
    result = cut(index, "cam1", start, end, masked, zones=[TimedZone(QUARTER)])
    assert result.reencoded
    # Decoded from the keyframe before, kept from the first frame at or after the start.
    assert timedelta(0) <= result.media_start - start < timedelta(seconds=0.04)
    probe = ffprobe(masked)
    assert probe.errors == "" and probe.frames == 3 * 25
    # The remux starts at the keyframe (1.0 s): line its frames up with the masked ones.
    skip = round((result.media_start - whole.media_start).total_seconds() * 25)
    original = luma_frames(plain)[skip:]
    burnt = luma_frames(masked)
    assert len(burnt) == 75
    for a, b in zip(original[:75:10], burnt[::10], strict=True):
        assert b[:120, :160].max() <= 20  # black (16) inside the zone, nothing bleeds in
        assert a[:120, :160].mean() > 40  # where the original shows the picture
        outside = np.ones(a.shape, bool)
        outside[:128, :168] = False  # the zone grown to 8x8 blocks, and a block beyond
        assert psnr(a[outside], b[outside]) >= 30


def test_a_redaction_is_burnt_in_only_over_its_own_time_range(
    recorded: tuple[RecordingIndex, Path], tmp_path: Path
) -> None:
    index, _ = recorded
    out = tmp_path / "sar.mp4"
    zone = TimedZone(QUARTER, T0 + timedelta(seconds=2), T0 + timedelta(seconds=3))
    cut(index, "cam1", T0 + timedelta(seconds=1), T0 + timedelta(seconds=4), out, zones=[zone])
    frames = luma_frames(out)
    assert len(frames) == 75
    assert frames[10][:120, :160].mean() > 40  # 1.4 s: before the redaction
    assert frames[37][:120, :160].max() <= 20  # 2.5 s: redacted
    assert frames[65][:120, :160].mean() > 40  # 3.6 s: after it


def test_a_range_with_no_recording_is_an_error_and_leaves_no_file(
    recorded: tuple[RecordingIndex, Path], tmp_path: Path
) -> None:
    index, _ = recorded
    out = tmp_path / "none.mp4"
    with pytest.raises(CutError, match="no recording"):
        cut(index, "cam1", T0 + timedelta(hours=1), T0 + timedelta(hours=2), out)
    with pytest.raises(CutError, match="no recording"):
        cut(index, "other", T0, T0 + timedelta(seconds=5), out)
    assert list(tmp_path.iterdir()) == []


def test_a_cancelled_cut_leaves_nothing_behind(
    recorded: tuple[RecordingIndex, Path], tmp_path: Path
) -> None:
    index, _ = recorded
    cancel = threading.Event()
    out = tmp_path / "clip.mp4"

    def progress(fraction: float) -> None:
        if fraction > 0.2:
            cancel.set()

    with pytest.raises(Cancelled):
        cut(index, "cam1", T0, T0 + timedelta(seconds=12), out, progress=progress, cancel=cancel)
    assert list(tmp_path.iterdir()) == []


def test_a_segment_cut_short_on_disk_is_an_error_not_a_silent_hole(
    recorded: tuple[RecordingIndex, Path], tmp_path: Path
) -> None:
    index, root = recorded
    data = (root / "seg2.mp4").read_bytes()
    try:
        (root / "seg2.mp4").write_bytes(data[: len(data) // 2])
        with pytest.raises(CutError, match="cut short"):
            cut(index, "cam1", T0 + timedelta(seconds=16), T0 + timedelta(seconds=22),
                tmp_path / "x.mp4")  # fmt: skip
    finally:
        (root / "seg2.mp4").write_bytes(data)
    assert list(tmp_path.iterdir()) == []
