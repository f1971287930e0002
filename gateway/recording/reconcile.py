"""At start, make the index and the segment files agree again after a crash.

A writer killed mid-segment leaves a segment ``open`` in the index, a file whose last fragment
may be torn, and perhaps complete fragments the index had not been told about yet (the index
is written about once a second, after the bytes). For each such segment:

- the file is cut back to its last complete ``moof`` + ``mdat`` (so a torn fragment is gone);
- index rows past what the file holds are dropped, and complete fragments the index lacks are
  added, timed from their own ``moof`` (as the writer times them);
- the segment is closed; one with no complete fragment is removed, file and rows.

Files no row names (a crash between creating a file and indexing its first fragment) are
looked for only where a writer could have left one: the latest day directory of each camera
(and the one before it). They are indexed the same way, or removed if they hold nothing.

The stretch from where each camera's recording stopped to where it starts again is recorded
as a ``gateway_restart`` gap by the camera's writer when its first new segment opens.

In a cluster (recording follows a camera's ingest lease, and ``recording.dir`` is storage
every node shares) a node at start repairs only its own open segments and adopts no orphans:
another node may be writing any camera's newest file. A node that takes a camera over repairs
what the camera's previous writer left (:func:`reconcile_camera`): that writer is dead, or has
lost the lease and stopped. A segment of another node whose file this node cannot reach is
closed in the index as it stands, never dropped: its file is on that node's disk.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.recording import fmp4
from gateway.recording.index import Fragment, RecordingIndex, Segment

log = logging.getLogger(__name__)

__all__ = ["Reconciliation", "reconcile", "reconcile_camera"]

_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})/(\d{6}\.\d{6})Z\.mp4$")


@dataclass
class Reconciliation:
    segments_closed: int = 0
    bytes_truncated: int = 0
    fragments_dropped: int = 0
    fragments_added: int = 0
    orphans_indexed: int = 0
    files_removed: int = 0
    problems: list[str] = field(default_factory=list)


def reconcile(
    index: RecordingIndex, node: str | None = None, *, orphans: bool = True
) -> Reconciliation:
    """Repair what a crash of ``node``'s writers left (every node's when None); adopt files no
    row names unless ``orphans`` is False (a cluster node, see above)."""
    report = Reconciliation()
    for seg in index.open_segments(node):
        _repair(index, seg, report)
    if orphans:
        _adopt_orphans(index, _recent_files(index.root), report)
    return report


def reconcile_camera(index: RecordingIndex, camera: str, node: str) -> Reconciliation:
    """Before ``node`` records ``camera`` it has just taken over: repair the open segments other
    nodes left of it and adopt its orphan files."""
    report = Reconciliation()
    for seg in index.open_segments():
        if seg.camera == camera and seg.node != node:
            _repair(index, seg, report, foreign=True)
    _adopt_orphans(index, _recent_files(index.root, camera), report)
    return report


def _adopt_orphans(index: RecordingIndex, files: list[Path], report: Reconciliation) -> None:
    known = {s.path for s in index.open_segments()}
    for path in files:
        rel = path.relative_to(index.root).as_posix()
        if rel in known or index.segment(rel) is not None:
            continue
        _adopt(index, path, rel, report)


def _repair(
    index: RecordingIndex, seg: Segment, report: Reconciliation, *, foreign: bool = False
) -> None:
    path = index.file(seg)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if foreign:  # on the writing node's own disk: keep what the index says it holds
            index.close_segment(seg.id)
            report.segments_closed += 1
            report.problems.append(f"{seg.id}: file of node {seg.node} not reachable, closed")
            return
        index.delete_segment(seg.id)
        report.problems.append(f"{seg.id}: file missing, index rows dropped")
        return
    facts = fmp4.scan(data)
    if not facts.fragments:
        _remove(index, seg.id, path, report)
        return
    if facts.sound_length < len(data):
        os.truncate(path, facts.sound_length)
        report.bytes_truncated += len(data) - facts.sound_length
    rows = index.fragments(seg.id)
    keep = 0
    for row, (box, _moof) in zip(rows, facts.fragments, strict=False):
        if (row.offset, row.length) != (box.offset, box.length):
            break
        keep += 1
    report.fragments_dropped += index.truncate_segment(seg.id, keep)
    missing = _fragments(seg, facts, keep)
    index.add_fragments(missing)
    report.fragments_added += len(missing)
    index.close_segment(seg.id)
    report.segments_closed += 1


def _adopt(index: RecordingIndex, path: Path, rel: str, report: Reconciliation) -> None:
    camera, _, name = rel.partition("/")
    m = _NAME.match(name)
    try:
        data = path.read_bytes()
    except OSError as exc:
        report.problems.append(f"{rel}: unreadable: {exc}")
        return
    facts = fmp4.scan(data)
    if m is None or not facts.fragments:
        if m is not None:  # one of ours with nothing in it
            path.unlink(missing_ok=True)
            report.files_removed += 1
        return
    start = datetime.strptime(f"{m.group(1)} {m.group(2)}", "%Y-%m-%d %H%M%S.%f").replace(
        tzinfo=UTC
    )
    if facts.sound_length < len(data):
        os.truncate(path, facts.sound_length)
        report.bytes_truncated += len(data) - facts.sound_length
    codec = "H265" if b"hvc1" in data[: facts.init_length] or b"hev1" in data[:4096] else "H264"
    seg = Segment(rel, camera, rel, start, start, facts.init_length, facts.init_length, codec,
                  False)  # fmt: skip
    index.add_segment(seg)
    frags = _fragments(seg, facts, 0)
    index.add_fragments(frags)
    index.close_segment(seg.id)
    report.orphans_indexed += 1
    report.fragments_added += len(frags)


def _fragments(seg: Segment, facts: fmp4.Scan, first: int) -> list[Fragment]:
    out = []
    for seq in range(first, len(facts.fragments)):
        box, moof = facts.fragments[seq]
        start = seg.start + timedelta(seconds=moof.decode_time / facts.timescale)
        end = start + timedelta(seconds=moof.duration / facts.timescale)
        out.append(
            Fragment(seg.id, seq, seg.camera, start, end, box.offset, box.length, moof.keyframe)
        )
    return out


def _remove(index: RecordingIndex, seg_id: str, path: Path, report: Reconciliation) -> None:
    index.delete_segment(seg_id)
    path.unlink(missing_ok=True)
    report.files_removed += 1


def _recent_files(root: Path, camera: str | None = None) -> list[Path]:
    """Segment files in each camera's (or one camera's) two latest day directories."""
    out: list[Path] = []
    try:
        cameras = [p for p in root.iterdir() if p.is_dir() and camera in (None, p.name)]
    except FileNotFoundError:
        return out
    for cam in cameras:
        days = sorted((p for p in cam.iterdir() if p.is_dir()), key=lambda p: p.name)
        for day in days[-2:]:
            out.extend(sorted(day.glob("*.mp4")))
    return out
