"""What a cluster node repairs of another node's recording (issues #13 and #15), without a
network: the writers are real (PyAV muxing libx264 access units), the index a SQLite file.

- At start a cluster node repairs its own open segments only and adopts no file: another node
  may be writing the newest file of any camera on the shared ``recording.dir``.
- On taking a camera over it repairs what the camera's previous writer left: that writer's open
  segment is cut back to its last complete fragment and closed, and its orphan file adopted.
- A segment of another node whose file this node cannot reach (storage not shared) is closed
  as the index has it, never dropped; playback answers why it cannot read it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from recording_fixtures import feed, h264_access_units, writer

from gateway.playback.media import Unreachable
from gateway.playback.recorded import RecordedSource
from gateway.recording.index import RecordingIndex
from gateway.recording.reconcile import reconcile, reconcile_camera
from tenants.db import Database


def index_at(tmp_path: Path, root: str = "shared") -> RecordingIndex:
    return RecordingIndex(Database.open(f"sqlite:///{tmp_path}/index.db"), tmp_path / root)


def crashed_writer(index: RecordingIndex, node: str) -> None:
    """A writer of ``node`` killed mid-segment: its segment open, half a fragment torn on."""
    w = writer(index, index.root, node=node)
    feed(w, h264_access_units(seconds=4.0))
    (seg,) = index.open_segments(node)
    with index.file(seg).open("ab") as f:
        f.write(b"\0\0\1\0moof" + b"\x55" * 300)  # a torn fragment


def test_a_node_starting_leaves_other_nodes_files_alone(tmp_path: Path) -> None:
    index = index_at(tmp_path)
    crashed_writer(index, "node1")
    (seg,) = index.open_segments("node1")
    size = index.file(seg).stat().st_size
    orphan = index.root / "cam" / seg.start.strftime("%Y-%m-%d") / "235959.000000Z.mp4"
    orphan.write_bytes(b"")  # node1 has just opened its next file

    report = reconcile(index, "node2", orphans=False)

    assert report.segments_closed == report.files_removed == report.orphans_indexed == 0
    assert index.open_segments("node1") == [seg]
    assert index.file(seg).stat().st_size == size and orphan.exists()


def test_the_new_owner_repairs_what_the_dead_writer_left(tmp_path: Path) -> None:
    index = index_at(tmp_path)
    crashed_writer(index, "node1")
    (seg,) = index.open_segments("node1")
    fragments = index.fragments(seg.id)

    report = reconcile_camera(index, "cam", "node2")

    assert report.segments_closed == 1 and report.bytes_truncated > 0
    after = index.segment(seg.id)
    assert after is not None and after.closed and after.node == "node1"
    assert index.fragments(seg.id)[: len(fragments)] == fragments
    assert index.file(seg).stat().st_size == after.bytes  # cut to its last whole fragment


def test_a_segment_on_another_nodes_own_disk_is_closed_not_dropped(tmp_path: Path) -> None:
    writing = index_at(tmp_path, "node1-disk")
    crashed_writer(writing, "node1")
    (seg,) = writing.open_segments("node1")
    fragments = writing.fragments(seg.id)
    elsewhere = index_at(tmp_path, "node2-disk")  # the same index, not the same storage

    report = reconcile_camera(elsewhere, "cam", "node2")

    assert report.segments_closed == 1 and report.files_removed == 0
    assert any("node1" in p and "not reachable" in p for p in report.problems), report
    after = elsewhere.segment(seg.id)
    assert after is not None and after.closed
    assert elsewhere.fragments(seg.id) == fragments  # before: the rows were dropped
    reason = elsewhere.unreachable(after)
    assert reason is not None and "written by node node1" in reason and "recording.dir" in reason
    assert writing.unreachable(after) is None


def test_playback_of_a_file_this_node_cannot_reach_says_why(tmp_path: Path) -> None:
    writing = index_at(tmp_path, "node1-disk")
    crashed_writer(writing, "node1")
    (seg,) = writing.open_segments("node1")
    elsewhere = index_at(tmp_path, "node2-disk")
    source = RecordedSource(elsewhere, "cam")
    with pytest.raises(Unreachable, match=r"written by node node1.*recording\.dir"):
        source.format_at(seg.start)  # RTSP DESCRIBE answers this as a 503 with the reason
    assert RecordedSource(writing, "cam").format_at(seg.start) is not None


async def test_rtsp_playback_passes_over_a_segment_this_node_cannot_reach(
    tmp_path: Path,
) -> None:
    from export_fixtures import index_segment, write_segment
    from test_playback_feed import T0, play

    root = tmp_path / "rec"
    root.mkdir()
    index = RecordingIndex(Database.open(f"sqlite:///{tmp_path}/feed.db"), root)
    for i, name in enumerate(("a", "b", "c")):
        write_segment(root / f"cam1-{name}.mp4", 10)
        index_segment(index, "cam1", f"cam1-{name}", root / f"cam1-{name}.mp4",
                      T0 + timedelta(seconds=10 * i))  # fmt: skip
    (root / "cam1-b.mp4").unlink()  # b is on the disk of the node that wrote it

    feed, viewer, _clock = await play(
        index,
        ("Require", "onvif-replay"),
        ("Range", "clock=20261201T101508Z-20261201T101525Z"),
        ("Rate-Control", "no"),
    )

    assert feed.error is None  # before: playback stopped at b, "recording unreadable"
    exts = [ext for _, ext, _ in viewer.frames() if ext is not None]
    assert exts[0].captured == T0 + timedelta(seconds=8)
    after = next(i for i, e in enumerate(exts) if e.captured >= T0 + timedelta(seconds=20))
    assert after == 50 and exts[after].discontinuity  # 2 s of a, then c after a gap
    assert exts[after].captured == T0 + timedelta(seconds=20)
    assert len(exts) >= 50 + 5 * 25


def test_a_recorded_camera_is_pulled_all_the_time_in_a_cluster() -> None:
    from conftest import make_config

    from gateway.cluster.node import cluster_paths
    from gateway.cluster.ownership import PathKind
    from gateway.config import CameraConfig

    config = make_config(
        (
            CameraConfig(id="yard", source="rtsp://cam/yard", on_demand=True, record=True),
            CameraConfig(id="gate", source="rtsp://cam/gate", on_demand=True),
            CameraConfig(id="van", record=True),  # pushed: it follows its publisher
        )
    )
    # Before, "yard" was pulled only while watched, so nobody recorded it between viewers.
    assert cluster_paths(config) == {
        "yard": PathKind.PULL, "gate": PathKind.ON_DEMAND, "van": PathKind.PUSH,
    }  # fmt: skip
