"""Recorded media off disk: a segment's initialisation bytes and one fragment's ``moof`` +
``mdat`` become the access units a player is sent, each with its capture time.

This is the blocking half of playback (file reads and PyAV's demuxer): call it from a worker
thread, never on the event loop. Nothing is decoded: an access unit is the recorded H.264 or
H.265 NAL units, split out of the MP4's length-prefixed samples, with the parameter sets put
in front of every key frame (players that only read them in band would otherwise show black).
"""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import av

from gateway.protocols import h264

__all__ = [
    "MAX_FRAGMENT_BYTES",
    "MediaError",
    "RecordedFormat",
    "RecordedUnit",
    "Unreachable",
    "read_file_range",
    "read_format",
    "read_fragment",
    "split_samples",
]

# A 1 s fragment of a 20 Mbit/s camera is 2.5 MB; anything far beyond that is not a fragment.
MAX_FRAGMENT_BYTES = 64 * 1024 * 1024
MAX_INIT_BYTES = 1024 * 1024


class MediaError(ValueError):
    """Recorded bytes that cannot be played (torn, foreign or not H.264/H.265)."""


class Unreachable(MediaError):
    """A segment the index names whose file this node cannot reach (another node's disk, a
    shared volume not mounted): a 503 with the reason, not a broken recording."""


@dataclass(frozen=True, slots=True)
class RecordedFormat:
    """What a recording carries, enough to describe it to a player."""

    codec: str  # "H264" or "H265"
    parameter_sets: tuple[bytes, ...]  # (VPS,) SPS, PPS as NAL units, in the order they go out
    length_size: int  # bytes of each sample's NAL length prefix; 0: Annex B samples
    width: int
    height: int

    @property
    def sps(self) -> bytes:
        return self.parameter_sets[-2]

    @property
    def pps(self) -> bytes:
        return self.parameter_sets[-1]


@dataclass(frozen=True, slots=True)
class RecordedUnit:
    captured: datetime  # when the camera captured it (UTC)
    nals: tuple[bytes, ...]  # NAL units without start codes, parameter sets first on key frames
    keyframe: bool
    duration: float  # seconds until the next unit (the last one's own duration)


def _avcc(extradata: bytes) -> tuple[tuple[bytes, ...], int]:
    """SPS and PPS and the NAL length size of an ``avcC`` record (ISO 14496-15 §5.3.3)."""
    if len(extradata) < 7 or extradata[0] != 1:
        raise MediaError("not an avcC record")
    length_size = (extradata[4] & 0x03) + 1
    pos = 5
    sets: list[bytes] = []
    for mask in (0x1F, 0xFF):  # SPS count is 5 bits, PPS count 8
        if pos >= len(extradata):
            raise MediaError("avcC record truncated")
        count = extradata[pos] & mask
        pos += 1
        for _ in range(count):
            if pos + 2 > len(extradata):
                raise MediaError("avcC record truncated")
            n = int.from_bytes(extradata[pos : pos + 2], "big")
            pos += 2
            if pos + n > len(extradata) or n == 0:
                raise MediaError("avcC record truncated")
            sets.append(extradata[pos : pos + n])
            pos += n
    if len(sets) < 2:
        raise MediaError("avcC record without SPS and PPS")
    return tuple(sets), length_size


def _hvcc(extradata: bytes) -> tuple[tuple[bytes, ...], int]:
    """VPS, SPS and PPS and the NAL length size of an ``hvcC`` record (ISO 14496-15 §8.3.3)."""
    if len(extradata) < 23 or extradata[0] != 1:
        raise MediaError("not an hvcC record")
    length_size = (extradata[21] & 0x03) + 1
    arrays = extradata[22]
    pos = 23
    by_type: dict[int, bytes] = {}
    for _ in range(arrays):
        if pos + 3 > len(extradata):
            raise MediaError("hvcC record truncated")
        nal_type = extradata[pos] & 0x3F
        count = int.from_bytes(extradata[pos + 1 : pos + 3], "big")
        pos += 3
        for _ in range(count):
            if pos + 2 > len(extradata):
                raise MediaError("hvcC record truncated")
            n = int.from_bytes(extradata[pos : pos + 2], "big")
            pos += 2
            if pos + n > len(extradata) or n == 0:
                raise MediaError("hvcC record truncated")
            by_type.setdefault(nal_type, extradata[pos : pos + n])
            pos += n
    if not all(t in by_type for t in (32, 33, 34)):
        raise MediaError("hvcC record without VPS, SPS and PPS")
    return (by_type[32], by_type[33], by_type[34]), length_size


def open_mp4(data: bytes) -> Any:
    try:
        return av.open(io.BytesIO(data), format="mp4")
    except av.FFmpegError as exc:
        raise MediaError(f"not a playable MP4: {exc}") from None


def read_format(init: bytes) -> RecordedFormat:
    """The format an initialisation segment (``ftyp`` + ``moov``) declares."""
    if not 8 <= len(init) <= MAX_INIT_BYTES:
        raise MediaError("initialisation segment missing or too large")
    container = open_mp4(init)
    try:
        if not container.streams.video:
            raise MediaError("recording has no video track")
        ctx = container.streams.video[0].codec_context
        name = ctx.name
        extradata = bytes(ctx.extradata or b"")
        width, height = int(ctx.width or 0), int(ctx.height or 0)
    finally:
        container.close()
    if name == "h264":
        codec = "H264"
        if extradata[:1] == b"\x01":
            sets, length_size = _avcc(extradata)
        else:
            sets, length_size = tuple(h264.split_annexb(extradata)), 0
    elif name in ("hevc", "h265"):
        codec = "H265"
        if extradata[:1] == b"\x01":
            sets, length_size = _hvcc(extradata)
        else:
            sets, length_size = tuple(h264.split_annexb(extradata)), 0
    else:
        raise MediaError(f"recording codec {name!r} is not H.264 or H.265")
    if len(sets) < 2:
        raise MediaError("recording has no parameter sets")
    return RecordedFormat(codec, sets, length_size, width, height)


def split_samples(sample: bytes, length_size: int) -> list[bytes]:
    """The NAL units of one MP4 sample (length-prefixed, or Annex B when ``length_size`` is 0)."""
    if length_size == 0:
        return h264.split_annexb(sample)
    nals: list[bytes] = []
    pos = 0
    end = len(sample)
    while pos < end:
        if pos + length_size > end:
            raise MediaError("sample truncated inside a NAL length")
        n = int.from_bytes(sample[pos : pos + length_size], "big")
        pos += length_size
        if n == 0 or pos + n > end:
            raise MediaError("sample truncated inside a NAL unit")
        nals.append(sample[pos : pos + n])
        pos += n
    return nals


def _is_parameter_set(codec: str, nal: bytes) -> bool:
    if codec == "H264":
        return (nal[0] & 0x1F) in (7, 8)
    return ((nal[0] >> 1) & 0x3F) in (32, 33, 34)


def read_fragment(
    init: bytes, fragment: bytes, start: datetime, fmt: RecordedFormat | None = None
) -> list[RecordedUnit]:
    """The access units of one fragment, in decode order, timed from ``start`` (the index's
    capture time of the fragment's earliest sample)."""
    if not 16 <= len(fragment) <= MAX_FRAGMENT_BYTES or fragment[4:8] != b"moof":
        raise MediaError("not a fragment (moof + mdat)")
    fmt = fmt or read_format(init)
    container = open_mp4(init + fragment)
    samples: list[tuple[int, bytes, bool]] = []
    try:
        stream = container.streams.video[0]
        tb = stream.time_base
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.pts is None:
                    continue
                samples.append((int(packet.pts), bytes(packet), bool(packet.is_keyframe)))
        except av.FFmpegError as exc:
            raise MediaError(f"fragment cannot be read: {exc}") from None
    finally:
        container.close()
    if not samples:
        return []
    first = min(pts for pts, _, _ in samples)
    seconds = float(tb) if tb else 1 / 90000
    ordered = sorted(pts for pts, _, _ in samples)
    step = {a: (b - a) * seconds for a, b in itertools.pairwise(ordered)}
    typical = min(step.values()) if step else 0.04
    units: list[RecordedUnit] = []
    for pts, sample, key in samples:
        nals = [n for n in split_samples(sample, fmt.length_size) if n]
        if key:
            nals = [*fmt.parameter_sets, *(n for n in nals if not _is_parameter_set(fmt.codec, n))]
        units.append(
            RecordedUnit(
                captured=start + timedelta(seconds=(pts - first) * seconds),
                nals=tuple(nals),
                keyframe=key,
                duration=step.get(pts, typical),
            )
        )
    return units


def read_file_range(path: Path, offset: int, length: int, limit: int = MAX_FRAGMENT_BYTES) -> bytes:
    """``length`` bytes of a file from ``offset``, all of them or a :class:`MediaError` (a file
    shorter than its index says was torn or truncated)."""
    if offset < 0 or not 0 < length <= limit:
        raise MediaError("byte range out of bounds")
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read(length)
    except OSError as exc:
        raise MediaError(f"recording unreadable: {exc.strerror or exc}") from None
    if len(data) != length:
        raise MediaError("recording shorter than its index")
    return data
