"""Recorded media off disk: a segment's initialisation bytes and one fragment's ``moof`` +
``mdat`` become the access units a player is sent, each with its capture time.

This is the blocking half of playback (file reads and PyAV's demuxer): call it from a worker
thread, never on the event loop. Nothing is decoded: an access unit is the recorded H.264 or
H.265 NAL units, split out of the MP4's length-prefixed samples, with the parameter sets put
in front of every key frame (players that only read them in band would otherwise show black).

A segment's AAC track (the recorder's second track, :mod:`gateway.recording.audio`) comes out
as audio units beside the pictures, each one AAC access unit as recorded. Both tracks of a
segment count from the same zero (the segment's start, where its video's decode time is 0), so
an audio unit's capture time is the segment's start plus its own presentation time.
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
from gateway.recording.audio import AacFormat, AudioError, parse_config

__all__ = [
    "AUDIO",
    "MAX_FRAGMENT_BYTES",
    "VIDEO",
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
VIDEO, AUDIO = 0, 1  # a unit's track, as playback describes them


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
    audio: AacFormat | None = None  # the recorded AAC track, if the segment has one

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
    track: int = VIDEO  # AUDIO: ``nals`` is one AAC access unit
    aac: AacFormat | None = None  # an audio unit's format (a camera may change its audio)


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


def _aac(stream: Any) -> AacFormat | None:
    """The recorded AAC track's format, as RFC 3640 AAC-hbr describes it (13-bit AU sizes, as
    the live path's cameras and ffmpeg send); None for a track the recorder did not write."""
    ctx = stream.codec_context
    config = bytes(ctx.extradata or b"")
    if ctx.name != "aac" or not config:
        return None
    try:
        rate, channels, frame = parse_config(config)
    except AudioError:
        return None
    return AacFormat(config, rate, channels, frame, 13, 3, 3)


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
        audio = _aac(container.streams.audio[0]) if container.streams.audio else None
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
    return RecordedFormat(codec, sets, length_size, width, height, audio)


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
    init: bytes,
    fragment: bytes,
    start: datetime,
    fmt: RecordedFormat | None = None,
    *,
    segment_start: datetime | None = None,
) -> list[RecordedUnit]:
    """The access units of one fragment, timed from ``start`` (the index's capture time of the
    fragment's earliest picture): its pictures in decode order and, when the segment has an
    AAC track, its audio units merged in by capture time. ``segment_start`` places the audio
    of a fragment without pictures (a segment's last few hundred milliseconds of sound)."""
    if not 16 <= len(fragment) <= MAX_FRAGMENT_BYTES or fragment[4:8] != b"moof":
        raise MediaError("not a fragment (moof + mdat)")
    fmt = fmt or read_format(init)
    container = open_mp4(init + fragment)
    samples: list[tuple[int, int, bytes, bool]] = []
    sounds: list[tuple[int, bytes]] = []
    try:
        stream = container.streams.video[0]
        sound = container.streams.audio[0] if fmt.audio and container.streams.audio else None
        tb = stream.time_base
        atb = sound.time_base if sound is not None else None
        try:
            for packet in container.demux(*(s for s in (stream, sound) if s is not None)):
                if packet.size == 0 or packet.pts is None:
                    continue
                if sound is not None and packet.stream.index == sound.index:
                    sounds.append((int(packet.pts), bytes(packet)))
                    continue
                dts = int(packet.dts if packet.dts is not None else packet.pts)
                samples.append((int(packet.pts), dts, bytes(packet), bool(packet.is_keyframe)))
        except av.FFmpegError as exc:
            raise MediaError(f"fragment cannot be read: {exc}") from None
    finally:
        container.close()
    seconds = float(tb) if tb else 1 / 90000
    first = min((pts for pts, _, _, _ in samples), default=0)
    # Where both tracks' zero lies: the same instant the pictures are timed from.
    origin = start - timedelta(seconds=first * seconds) if samples else segment_start
    units: list[RecordedUnit] = []
    ordered = sorted(pts for pts, _, _, _ in samples)
    step = {a: (b - a) * seconds for a, b in itertools.pairwise(ordered)}
    typical = min(step.values()) if step else 0.04
    decoded: list[datetime] = []  # each picture's decode time, for merging the audio in
    for pts, dts, sample, key in samples:
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
        decoded.append(start + timedelta(seconds=(dts - first) * seconds))
    if not sounds or origin is None or atb is None or fmt.audio is None:
        return units
    frame = fmt.audio.frame_length / fmt.audio.sample_rate
    audio = [
        RecordedUnit(
            origin + timedelta(seconds=float(pts * atb)), (au,), False, frame, AUDIO, fmt.audio
        )
        for pts, au in sorted(sounds, key=lambda s: s[0])
    ]
    merged: list[RecordedUnit] = []
    i = 0
    for unit, at in zip(units, decoded, strict=True):
        while i < len(audio) and audio[i].captured < at:
            merged.append(audio[i])
            i += 1
        merged.append(unit)
    merged.extend(audio[i:])
    return merged


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
