"""Recorded media off disk (gateway.playback.media): fragmented MP4 written by real ffmpeg
(the fragment layout the recorder writes: frag_keyframe+empty_moov+default_base_moof) becomes
access units with capture times and in-band parameter sets; torn and foreign bytes are
MediaErrors."""

from __future__ import annotations

import itertools
import struct
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import FFMPEG

from gateway.playback.media import (
    MediaError,
    read_file_range,
    read_format,
    read_fragment,
    split_samples,
)

T0 = datetime(2026, 12, 1, 10, 15, tzinfo=UTC)


def boxes(data: bytes) -> list[tuple[str, int, int]]:
    out = []
    pos = 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        out.append((kind.decode(), pos, size))
        pos += size
    return out


def fmp4(path: Path, *, seconds: int = 4, codec: str = "libx264", gop: int = 25) -> Path:
    subprocess.run(
        [
            FFMPEG,
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-t",
            str(seconds),
            "-c:v",
            codec,
            "-preset",
            "ultrafast",
            "-g",
            str(gop),
            "-bf",
            "0",
            "-pix_fmt",
            "yuv420p",
            "-movflags",
            "frag_keyframe+empty_moov+default_base_moof",
            "-f",
            "mp4",
            str(path),
        ],
        check=True,
        timeout=120,
    )
    return path


def split(data: bytes) -> tuple[bytes, list[bytes]]:
    """The init segment and each moof+mdat, as the recorder's index records them."""
    found = boxes(data)
    first = next(pos for kind, pos, _ in found if kind == "moof")
    frags = []
    for (kind, pos, size), (kind2, _pos2, size2) in itertools.pairwise(found):
        if kind == "moof" and kind2 == "mdat":
            frags.append(data[pos : pos + size + size2])
    return data[:first], frags


@pytest.fixture(scope="module")
def h264_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return fmp4(tmp_path_factory.mktemp("rec") / "a.mp4").read_bytes()


def test_a_fragment_becomes_timed_access_units(h264_file: bytes) -> None:
    init, frags = split(h264_file)
    assert len(frags) == 4  # one per key frame, a second each
    fmt = read_format(init)
    assert (fmt.codec, fmt.width, fmt.height, fmt.length_size) == ("H264", 320, 240, 4)
    assert fmt.sps[0] & 0x1F == 7 and fmt.pps[0] & 0x1F == 8
    units = read_fragment(init, frags[1], T0, fmt)
    assert len(units) == 25
    assert units[0].keyframe and not any(u.keyframe for u in units[1:])
    # The key frame carries SPS and PPS in band, then its IDR slice.
    assert [n[0] & 0x1F for n in units[0].nals[:2]] == [7, 8]
    assert any(n[0] & 0x1F == 5 for n in units[0].nals)
    assert units[0].captured == T0
    assert units[24].captured == T0 + timedelta(milliseconds=960)
    assert all(u.duration == pytest.approx(0.04) for u in units)


def test_h265_recordings_are_read_too(tmp_path: Path) -> None:
    data = fmp4(tmp_path / "b.mp4", seconds=2, codec="libx265").read_bytes()
    init, frags = split(data)
    fmt = read_format(init)
    assert fmt.codec == "H265" and len(fmt.parameter_sets) == 3
    units = read_fragment(init, frags[0], T0, fmt)
    assert units[0].keyframe
    assert [(n[0] >> 1) & 0x3F for n in units[0].nals[:3]] == [32, 33, 34]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda init, frag: (init, frag[:100]),  # torn in the middle of its moof
        lambda init, frag: (init, b"\x00\x00\x00\x10mdat" + bytes(8)),  # not a moof
        lambda init, frag: (b"", frag),  # no init
        lambda init, frag: (b"garbage!" * 4, frag),  # foreign init
        lambda init, frag: (init, bytes(64)),
    ],
)
def test_torn_and_foreign_bytes_are_media_errors(h264_file: bytes, mangle) -> None:  # type: ignore[no-untyped-def]
    init, frags = split(h264_file)
    bad_init, bad_frag = mangle(init, frags[1])
    with pytest.raises(MediaError):
        units = read_fragment(bad_init, bad_frag, T0)
        # A torn mdat may demux to nothing at all; that is not media either.
        if not units:
            raise MediaError("empty")


def test_samples_with_lying_lengths_are_refused() -> None:
    assert split_samples(b"\x00\x00\x00\x02ab\x00\x00\x00\x01c", 4) == [b"ab", b"c"]
    for bad in (b"\x00\x00\x00\x09ab", b"\x00\x00", b"\x00\x00\x00\x00"):
        with pytest.raises(MediaError):
            split_samples(bad, 4)


def test_file_ranges_are_all_or_an_error(tmp_path: Path) -> None:
    f = tmp_path / "seg.mp4"
    f.write_bytes(b"0123456789")
    assert read_file_range(f, 2, 3) == b"234"
    for offset, length in ((8, 5), (-1, 2), (0, 0)):
        with pytest.raises(MediaError):
            read_file_range(f, offset, length)
    with pytest.raises(MediaError):
        read_file_range(tmp_path / "gone.mp4", 0, 1)
