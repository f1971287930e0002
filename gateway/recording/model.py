"""What the recording index holds, as values: segments, fragments, gaps, spans and evidence
locks (see :mod:`gateway.recording.index`, which re-exports all of these). Times are aware UTC
datetimes, stored as integer microseconds since the epoch."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

__all__ = [
    "EvidenceLock", "Fragment", "Gap", "GapReason", "Segment", "Span", "from_us", "to_us",
]  # fmt: skip

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(t: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (a naive one is refused)."""
    if t.tzinfo is None:
        raise ValueError("times must be timezone-aware (UTC)")
    delta = t - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(us))


class GapReason(StrEnum):
    CAMERA_OUTAGE = "camera_outage"
    GATEWAY_RESTART = "gateway_restart"
    WRITER_OVERRUN = "writer_overrun"
    DISK_FULL = "disk_full"
    # Another node of the cluster recorded the camera before (it died, or lost the camera's
    # ingest lease): the stretch until this node's first fragment.
    NODE_FAILOVER = "node_failover"


@dataclass(frozen=True, slots=True)
class Segment:
    id: str
    camera: str
    path: str  # relative to recording.dir
    start: datetime
    end: datetime
    init_length: int
    bytes: int
    codec: str  # "H264" or "H265"
    closed: bool
    node: str = ""

    @property
    def duration(self) -> timedelta:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Fragment:
    segment: str
    seq: int  # 0, 1, 2... within its segment
    camera: str
    start: datetime
    end: datetime
    offset: int  # byte offset of its moof in the segment's file
    length: int  # bytes of moof + mdat
    keyframe: bool


@dataclass(frozen=True, slots=True)
class Gap:
    camera: str
    start: datetime
    end: datetime
    reason: GapReason


@dataclass(frozen=True, slots=True)
class Span:
    """Recorded media from ``start`` to ``end`` without a break (MediaMTX's list item)."""

    start: datetime
    end: datetime

    @property
    def duration(self) -> timedelta:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class EvidenceLock:
    id: str
    camera: str
    start: datetime
    end: datetime
    reason: str
    tenant: str
    principal: str
    created: datetime
    expires: datetime
    released: datetime | None = None
    released_by: str | None = None

    def active(self, now: datetime) -> bool:
        return self.released is None and self.expires > now
