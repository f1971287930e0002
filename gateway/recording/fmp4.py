"""Fragmented MP4 as the recorder writes it, read without a demuxer (sans-I/O: bytes in,
facts out).

A segment file is ``ftyp`` ``moov`` (the initialisation segment), then ``moof`` + ``mdat``
pairs (the fragments), then perhaps ``mfra`` after a clean close. :class:`BoxTracker` follows
the top-level boxes of the bytes as they are written, so the writer learns each fragment's byte
offset and length as the muxer emits it. :func:`parse_moof` reads what a fragment holds (its
decode time, sample count and duration, whether it starts with a sync sample) and
:func:`scan` finds the complete fragments of a file that may have been torn by a crash, for
the reconciler.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["BoxTracker", "FragmentBox", "Moof", "Scan", "boxes", "follow_on", "parse_moof", "scan"]

_HEADER = struct.Struct(">I4s")
_NON_SYNC = 0x00010000


class Mp4Error(ValueError):
    """The bytes are not the fragmented MP4 this module reads."""


def boxes(data: bytes | memoryview, start: int = 0, end: int | None = None) -> Iterator[
    tuple[bytes, int, int, int]
]:  # fmt: skip
    """(type, offset, header length, size) of each complete box in ``data[start:end]``."""
    end = len(data) if end is None else end
    at = start
    while at + 8 <= end:
        size, kind = _HEADER.unpack_from(data, at)
        header = 8
        if size == 1:
            if at + 16 > end:
                return
            size = struct.unpack_from(">Q", data, at + 8)[0]
            header = 16
        elif size == 0:
            size = end - at  # to the end of the file
        if size < header or at + size > end:
            return
        yield bytes(kind), at, header, size
        at += size


@dataclass(frozen=True, slots=True)
class FragmentBox:
    """A complete moof + mdat in the byte stream."""

    offset: int
    length: int
    moof: bytes  # the moof box itself, for parse_moof


class BoxTracker:
    """Follows the top-level boxes of a stream of bytes written in order. ``feed`` returns the
    fragments (moof + mdat) the bytes completed; the moof's own bytes are kept (they are small),
    the mdat's are not."""

    def __init__(self) -> None:
        self.position = 0  # bytes seen
        self.init_length: int | None = None  # where the first moof starts
        self._box_at = 0  # where the current top-level box starts
        self._box_end: int | None = None  # where it ends, once its header is known
        self._box_kind = b""
        self._head = bytearray()  # the current box's header bytes (or a moof's whole body)
        self._moof: tuple[int, bytes] | None = None

    def feed(self, data: bytes | memoryview) -> list[FragmentBox]:
        out: list[FragmentBox] = []
        view = memoryview(data)
        i, n = 0, len(view)
        head = self._head
        while i < n:
            if self._box_end is None:
                # Gather the header: 8 bytes, or 16 when the size is 64-bit (size field 1).
                need = (16 if len(head) >= 8 else 8) - len(head)
                take = min(need, n - i)
                head += view[i : i + take]
                i += take
                self.position += take
                if len(head) < 8:
                    continue
                size, kind = _HEADER.unpack_from(head, 0)
                header = 8
                if size == 1:
                    if len(head) < 16:
                        continue
                    size = struct.unpack_from(">Q", head, 8)[0]
                    header = 16
                if size < header:
                    raise Mp4Error(f"box {bytes(kind)!r} at {self._box_at} has size {size}")
                self._box_kind = bytes(kind)
                self._box_end = self._box_at + size
                if self._box_kind != b"moof":
                    del head[:]
            else:
                take = min(self._box_end - self.position, n - i)
                if self._box_kind == b"moof":
                    head += view[i : i + take]
                i += take
                self.position += take
            if self.position == self._box_end:
                self._finish_box(out)
                head = self._head
        return out

    def _finish_box(self, out: list[FragmentBox]) -> None:
        kind, at, end = self._box_kind, self._box_at, self._box_end
        assert end is not None
        if kind == b"moof":
            if self.init_length is None:
                self.init_length = at
            self._moof = (at, bytes(self._head))
        elif kind == b"mdat" and self._moof is not None:
            moof_at, moof = self._moof
            out.append(FragmentBox(moof_at, end - moof_at, moof))
            self._moof = None
        self._head = bytearray()
        self._box_at = end
        self._box_end = None
        self._box_kind = b""


@dataclass(frozen=True, slots=True)
class Moof:
    sequence: int
    decode_time: int  # tfdt, in the track's timescale
    samples: int
    duration: int  # sum of the sample durations, in the track's timescale
    keyframe: bool  # the first sample is a sync sample


def _full_box(data: bytes, at: int) -> tuple[int, int]:
    word = struct.unpack_from(">I", data, at)[0]
    return word >> 24, word & 0xFFFFFF


def parse_moof(
    moof: bytes, *, default_duration: int = 0, default_flags: int = 0, track_id: int | None = None
) -> Moof:
    """What one fragment holds of one track: ``track_id``'s (the video), else the first
    traf's. ``default_*`` are the moov's trex defaults. A fragment without that track (the
    audio after a segment's last picture) holds no samples of it: ``decode_time`` is then -1,
    for the caller to put where the track's previous fragment ended (:func:`follow_on`)."""
    try:
        return _parse_moof(moof, default_duration, default_flags, track_id)
    except struct.error:
        raise Mp4Error("truncated moof") from None


def follow_on(moofs: list[Moof], next_time: int = 0) -> tuple[list[Moof], int]:
    """Fragments without samples of the track placed where its samples last ended (zero
    length, not a keyframe); returns them and where the track's next fragment begins."""
    out = []
    for m in moofs:
        if m.decode_time < 0:
            m = Moof(m.sequence, next_time, 0, 0, False)
        else:
            next_time = m.decode_time + m.duration
        out.append(m)
    return out, next_time


def _parse_moof(
    moof: bytes, default_duration: int, default_flags: int, track_id: int | None
) -> Moof:
    top = next(boxes(moof), None)
    if top is None or top[0] != b"moof":
        raise Mp4Error("not a moof box")
    _k, at, header, size = top
    sequence = 0
    decode_time = 0
    samples = 0
    duration = 0
    keyframe = False
    seen_trun = False
    for kind, b_at, b_header, b_size in boxes(moof, at + header, at + size):
        if kind == b"mfhd":
            sequence = struct.unpack_from(">I", moof, b_at + b_header + 4)[0]
        if kind != b"traf":
            continue
        dflt_dur, dflt_flags = default_duration, default_flags
        for t_kind, t_at, t_header, _t_size in boxes(moof, b_at + b_header, b_at + b_size):
            body = t_at + t_header
            version, flags = _full_box(moof, body)
            p = body + 8  # after version/flags and track_ID
            if t_kind == b"tfhd" and track_id is not None:
                if struct.unpack_from(">I", moof, body + 4)[0] != track_id:
                    break  # another track's traf
            if t_kind == b"tfhd":
                if flags & 0x01:
                    p += 8
                if flags & 0x02:
                    p += 4
                if flags & 0x08:
                    dflt_dur = struct.unpack_from(">I", moof, p)[0]
                    p += 4
                if flags & 0x10:
                    p += 4
                if flags & 0x20:
                    dflt_flags = struct.unpack_from(">I", moof, p)[0]
            elif t_kind == b"tfdt":
                fmt = ">Q" if version == 1 else ">I"
                decode_time = struct.unpack_from(fmt, moof, body + 4)[0]
            elif t_kind == b"trun" and not seen_trun:
                seen_trun = True
                count = struct.unpack_from(">I", moof, body + 4)[0]
                p = body + 8
                if flags & 0x01:
                    p += 4
                first_flags = None
                if flags & 0x04:
                    first_flags = struct.unpack_from(">I", moof, p)[0]
                    p += 4
                per = sum(4 for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit)
                for i in range(count):
                    q = p
                    if flags & 0x100:
                        duration += struct.unpack_from(">I", moof, q)[0]
                        q += 4
                    else:
                        duration += dflt_dur
                    if flags & 0x200:
                        q += 4
                    if i == 0 and flags & 0x400:
                        first_flags = struct.unpack_from(">I", moof, q)[0]
                    p += per
                samples = count
                if first_flags is None:
                    first_flags = dflt_flags
                keyframe = count > 0 and not first_flags & _NON_SYNC
        if seen_trun:
            break  # one track
    if not seen_trun:
        if track_id is not None:
            return Moof(sequence, -1, 0, 0, False)
        raise Mp4Error("moof without trun")
    return Moof(sequence, decode_time, samples, duration, keyframe)


@dataclass(frozen=True, slots=True)
class Scan:
    """The sound part of a segment file."""

    init_length: int  # 0: no complete initialisation segment
    timescale: int
    fragments: list[tuple[FragmentBox, Moof]]
    default_duration: int = 0  # the moov's trex defaults
    default_flags: int = 0
    track_id: int | None = None  # the moov's first track (the video)

    @property
    def sound_length(self) -> int:
        """Bytes up to the end of the last complete fragment (or the init segment)."""
        if self.fragments:
            last = self.fragments[-1][0]
            return last.offset + last.length
        return self.init_length


def _moov_facts(data: bytes, at: int, header: int, size: int) -> tuple[int, int, int, int | None]:
    """(timescale, trex default duration, trex default flags, track ID) of a moov's first
    track (the video; an audio track follows it)."""
    timescale, dur, flags = 0, 0, 0
    track_id = None
    trexes: dict[int, tuple[int, int]] = {}
    for kind, b_at, b_header, b_size in boxes(data, at + header, at + size):
        body = b_at + b_header
        if kind == b"trak" and track_id is None:
            for t_kind, t_at, t_header, t_size in boxes(data, body, b_at + b_size):
                if t_kind == b"tkhd":
                    version, _f = _full_box(data, t_at + t_header)
                    off = 20 if version == 1 else 12
                    track_id = struct.unpack_from(">I", data, t_at + t_header + off)[0]
                elif t_kind == b"mdia":
                    for m_kind, m_at, m_header, _m in boxes(data, t_at + t_header, t_at + t_size):
                        if m_kind == b"mdhd":
                            m_body = m_at + m_header
                            version, _f = _full_box(data, m_body)
                            off = 20 if version == 1 else 12
                            timescale = struct.unpack_from(">I", data, m_body + off)[0]
        elif kind == b"mvex":
            for x_kind, x_at, x_header, _x in boxes(data, body, b_at + b_size):
                if x_kind == b"trex":
                    x_body = x_at + x_header
                    tid = struct.unpack_from(">I", data, x_body + 4)[0]
                    trexes[tid] = (
                        struct.unpack_from(">I", data, x_body + 12)[0],
                        struct.unpack_from(">I", data, x_body + 20)[0],
                    )
    if trexes:
        dur, flags = trexes.get(track_id or 0, next(iter(trexes.values())))
    return timescale, dur, flags, track_id


def scan(data: bytes) -> Scan:
    """The complete initialisation segment and fragments of a (possibly torn) segment file."""
    init_length = 0
    timescale, dflt_dur, dflt_flags = 90000, 0, 0
    track_id: int | None = None
    next_time = 0
    fragments: list[tuple[FragmentBox, Moof]] = []
    moof: tuple[int, int] | None = None
    for kind, at, header, size in boxes(data):
        if kind == b"moov":
            try:
                timescale, dflt_dur, dflt_flags, track_id = _moov_facts(data, at, header, size)
            except struct.error:
                break
            init_length = at + size
        elif kind == b"moof":
            if not init_length:
                break
            moof = (at, size)
        elif kind == b"mdat" and moof is not None:
            m_at, m_size = moof
            raw = data[m_at : m_at + m_size]
            try:
                info = parse_moof(
                    raw, default_duration=dflt_dur, default_flags=dflt_flags, track_id=track_id
                )
            except Mp4Error:
                break
            [info], next_time = follow_on([info], next_time)
            fragments.append((FragmentBox(m_at, at + size - m_at, raw), info))
            moof = None
        elif kind not in (b"ftyp", b"free", b"styp", b"sidx", b"mfra", b"skip"):
            break
    return Scan(init_length, timescale or 90000, fragments, dflt_dur, dflt_flags, track_id)
