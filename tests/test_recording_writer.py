"""The writer and the reconciler, on real libx264 access units fed as the hub delivers them:
segments roll over at keyframes, parameter sets known only from the SDP are put in front of a
segment's first IDR, lost units are a gap, and after a crash the reconciler cuts a torn file to
its last complete fragment and makes the index agree with the files."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from recording_fixtures import T0, TRACK, feed, h264_access_units, rtp_units, writer

from gateway.recording import fmp4
from gateway.recording.index import GapReason, RecordingIndex
from gateway.recording.reconcile import reconcile
from gateway.recording.writer import CameraWriter, Unit
from gateway.stream.tracks import Track
from tenants.db import Database


@pytest.fixture
def index(tmp_path: Path) -> RecordingIndex:
    return RecordingIndex(Database.open(f"sqlite:///{tmp_path}/i.db"), tmp_path / "rec")


def ffprobe_frames(path: Path) -> tuple[int, str]:
    exe = shutil.which("ffprobe")
    assert exe, "ffprobe (Debian ffmpeg) is installed by ops/install.sh"
    out = subprocess.run(
        [exe, "-v", "error", "-count_frames", "-show_entries", "stream=nb_read_frames",
         "-of", "json", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    frames = int(json.loads(out.stdout)["streams"][0]["nb_read_frames"])
    return frames, out.stderr


def agrees(index: RecordingIndex, camera: str = "cam") -> None:
    """Every segment's rows are exactly the complete fragments of its file, and vice versa."""
    for seg in index.segments(camera):
        data = index.file(seg).read_bytes()
        facts = fmp4.scan(data)
        assert facts.sound_length == len(data) == seg.bytes, seg.id
        rows = index.fragments(seg.id)
        assert [(f.offset, f.length) for f in rows] == [
            (b.offset, b.length) for b, _m in facts.fragments
        ], seg.id
        assert seg.closed
    files = {p.relative_to(index.root).as_posix() for p in index.root.rglob("*.mp4")}
    assert files == {s.path for s in index.segments(camera)}


def test_segments_roll_over_at_keyframes_and_read_cleanly(
    index: RecordingIndex, tmp_path: Path
) -> None:
    aus = h264_access_units(10.0, gop=50)  # a keyframe every 2 s
    w = writer(index, index.root, segment_seconds=3.0)
    end = feed(w, aus)
    w.stop()
    segs = index.segments("cam")
    # 3 s asked for, keyframes every 2 s: segments of 4 s, 4 s and the 2 s left.
    assert [round(s.duration.total_seconds(), 2) for s in segs] == [4.0, 4.0, 2.0]
    assert segs[0].start == datetime.fromtimestamp(T0, UTC)
    assert abs(segs[-1].end.timestamp() - end) < 1e-3
    total = 0
    for seg in segs:
        frames, errors = ffprobe_frames(index.file(seg))
        assert errors == ""
        total += frames
    assert total == len(aus)
    agrees(index)
    assert index.gaps("cam") == []
    assert w.counters.bytes_written == sum(s.bytes for s in segs)


def test_parameter_sets_only_in_the_sdp_go_in_front_of_each_segment(
    index: RecordingIndex,
) -> None:
    aus = h264_access_units(6.0, gop=50)
    sps = next(n for au in aus for n in au if n[0] & 0x1F == 7)
    pps = next(n for au in aus for n in au if n[0] & 0x1F == 8)
    bare = tuple(tuple(n for n in au if n[0] & 0x1F not in (7, 8)) for au in aus)
    import base64

    sprop = f"{base64.b64encode(sps).decode()},{base64.b64encode(pps).decode()}"
    track = Track(0, "video", "H264", 90000, 96, (
        "a=rtpmap:96 H264/90000", f"a=fmtp:96 packetization-mode=1;sprop-parameter-sets={sprop}",
    ))  # fmt: skip
    w = CameraWriter("cam", index.root, index, track, segment_seconds=2.0)
    for i, (items, key, _ts) in enumerate(rtp_units(bare)):
        w.feed(Unit(items, key, T0 + i / 25, "s", 0, (track,)))
    w.stop()
    segs = index.segments("cam")
    assert len(segs) == 3
    for seg in segs:
        frames, errors = ffprobe_frames(index.file(seg))
        assert errors == "" and frames == 50


def test_units_lost_before_the_writer_are_a_gap(index: RecordingIndex) -> None:
    aus = h264_access_units(8.0, gop=25)
    w = writer(index, index.root, segment_seconds=60.0)
    units = list(rtp_units(aus))
    for i, (items, key, _ts) in enumerate(units):
        if 60 <= i < 80:
            if i == 60:
                w.dropped()  # the queue was full: 20 units never reach the writer
            continue
        w.feed(Unit(items, key, T0 + i / 25, "s", 0, (TRACK,)))
    w.stop()
    gaps = index.gaps("cam")
    assert [(g.reason, g.start.timestamp(), g.end.timestamp()) for g in gaps] == [
        (GapReason.WRITER_OVERRUN, pytest.approx(T0 + 60 / 25), pytest.approx(T0 + 100 / 25))
    ]  # recording resumes at the next keyframe (unit 100)
    spans = index.spans("cam", datetime.fromtimestamp(T0, UTC), datetime.fromtimestamp(T0 + 9, UTC))
    assert len(spans) == 2


def test_a_new_source_or_a_silence_ends_the_run(index: RecordingIndex) -> None:
    aus = h264_access_units(4.0, gop=25)
    w = writer(index, index.root, outage_after=1.0)
    end = feed(w, aus, source="a")
    w.idle(end + 0.5)
    assert w.recording  # not yet quiet for outage_after
    w.idle(end + 1.5)
    assert not w.recording and all(s.closed for s in index.segments("cam"))
    end2 = feed(w, aus, start=end + 5, source="a")
    feed(w, aus, start=end2 + 0.2, source="b")  # a new publisher, almost at once
    w.stop()
    reasons = [g.reason for g in index.gaps("cam")]
    assert reasons == [GapReason.CAMERA_OUTAGE, GapReason.CAMERA_OUTAGE]
    assert len(index.segments("cam")) == 3


def test_the_clock_wrap_and_a_replayed_gop_keep_time(index: RecordingIndex) -> None:
    """The RTP clock wraps 2 s in (rtp_units starts near 2^32); times stay continuous."""
    aus = h264_access_units(6.0, gop=50)
    w = writer(index, index.root)
    feed(w, aus)
    w.stop()
    frags = [f for s in index.segments("cam") for f in index.fragments(s.id)]
    assert frags[0].start.timestamp() == pytest.approx(T0)
    assert frags[-1].end.timestamp() == pytest.approx(T0 + 6.0, abs=1e-3)
    assert all(a.end == b.start for a, b in itertools.pairwise(frags))


def crash_mid_segment(index: RecordingIndex, *, flush_every: int) -> tuple[CameraWriter, Path]:
    """A writer killed in the middle of a segment: some fragments indexed, some written but not
    yet indexed, the one being built lost; plus a torn fragment at the end of the file."""
    aus = h264_access_units(6.0, gop=25)
    w = writer(index, index.root, segment_seconds=60.0)
    for i, (items, key, _ts) in enumerate(rtp_units(aus)):
        w.feed(Unit(items, key, T0 + i / 25, "s", 0, (TRACK,)))
        if i < flush_every:
            w.flush_index()
    seg = index.open_segments()[0]
    path = index.file(seg)
    data = path.read_bytes()
    moof = fmp4.scan(data).fragments[-1][0]
    with path.open("ab") as f:  # half of a fragment: what a kill -9 mid-write leaves
        f.write(data[moof.offset : moof.offset + moof.length // 2])
    return w, path


def test_reconcile_cuts_a_torn_file_and_indexes_what_the_file_holds(
    index: RecordingIndex,
) -> None:
    _w, path = crash_mid_segment(index, flush_every=60)
    before = index.open_segments()[0]
    indexed_before = len(index.fragments(before.id))
    on_disk = len(fmp4.scan(path.read_bytes()).fragments)
    assert indexed_before < on_disk  # the index lagged the file
    report = reconcile(index)
    assert report.segments_closed == 1 and report.bytes_truncated > 0
    assert report.fragments_added == on_disk - indexed_before
    agrees(index)
    frames, errors = ffprobe_frames(path)
    assert errors == "" and frames >= 125  # 5 of the 6 s: the fragment being built is lost
    seg = index.segments("cam")[0]
    assert seg.end.timestamp() >= T0 + 5.0
    # Running it again changes nothing.
    again = reconcile(index)
    assert (again.segments_closed, again.bytes_truncated, again.fragments_added) == (0, 0, 0)


def test_reconcile_drops_rows_past_the_file_and_removes_empty_files(
    index: RecordingIndex,
) -> None:
    _w, path = crash_mid_segment(index, flush_every=10**6)
    seg = index.open_segments()[0]
    frags = index.fragments(seg.id)
    # The file lost its tail (cut short by hand): rows past the cut must go.
    cut = frags[2]
    with path.open("r+b") as f:
        f.truncate(cut.offset + 10)
    # A file our writer created but never got a fragment into, and a stranger's file.
    empty = index.root / "cam" / path.parent.name / "100500.000000Z.mp4"
    empty.write_bytes(path.read_bytes()[: seg.init_length])
    report = reconcile(index)
    assert report.fragments_dropped == len(frags) - 2
    assert report.files_removed == 1 and not empty.exists()
    agrees(index)


def test_reconcile_adopts_a_file_the_index_never_heard_of(index: RecordingIndex) -> None:
    _w, _path = crash_mid_segment(index, flush_every=0)
    seg = index.open_segments()[0]
    assert index.fragments(seg.id) == []
    index.delete_segment(seg.id)  # as if the crash came before its first row
    report = reconcile(index)
    assert report.orphans_indexed == 1
    agrees(index)
    adopted = index.segments("cam")[0]
    assert adopted.start == datetime.fromtimestamp(T0, UTC)
    assert adopted.end - adopted.start >= timedelta(seconds=5)


def test_the_quick_depacketizer_agrees_with_the_full_one_or_steps_aside() -> None:
    from gateway.protocols import h264
    from gateway.protocols.rtp import payload_of
    from gateway.recording.codecs import h264_quick, length_prefixed

    for items, _key, _ts in rtp_units(h264_access_units(2.0, gop=25)):
        payloads = [payload_of(p) for _t, p, _r in items]
        nals = h264.depacketize(payloads)
        quick = h264_quick(payloads)
        assert quick is not None
        assert quick[0] == length_prefixed(nals)
        assert quick[1] == [n[0] & 0x1F for n in nals]
        assert quick[2] == {n[0] & 0x1F: n for n in nals if n[0] & 0x1F in (7, 8)}
    sps, pps = b"\x67\x42\x00\x1f", b"\x68\xce"
    stap = memoryview(
        b"\x18" + len(sps).to_bytes(2, "big") + sps + len(pps).to_bytes(2, "big") + pps
    )
    assert h264_quick([stap]) is None  # an aggregate: the full depacketizer's job
    fu = h264.packetize(b"\x65" + bytes(range(256)) * 20, 500)
    assert h264_quick([memoryview(p) for p in fu[:-1]]) is None  # its end lost
    assert h264_quick([memoryview(p) for p in fu[1:]]) is None  # its start lost
    assert h264_quick([memoryview(b"")]) is None
    big_sps = h264.packetize(b"\x67" + bytes(range(1, 256)) * 8, 500)
    assert h264_quick([memoryview(p) for p in big_sps]) is None  # an SPS in pieces


def test_an_h265_camera_is_recorded_too(index: RecordingIndex) -> None:
    import struct

    from recording_fixtures import FFMPEG

    from gateway.protocols import h265

    raw = subprocess.run(
        [FFMPEG, "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
         "-t", "4", "-c:v", "libx265", "-preset", "ultrafast", "-x265-params",
         "bframes=0:keyint=25:min-keyint=25:repeat-headers=1:log-level=error", "-f", "hevc",
         "-"],
        capture_output=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    units: list[list[bytes]] = []
    cur: list[bytes] = []
    for nal in h265.split_annexb(raw):
        cur.append(nal)
        if h265.nal_type(nal) < 32:  # a slice ends the unit (one slice per picture here)
            units.append(cur)
            cur = []
    track = Track(0, "video", "H265", 90000, 96, ("a=rtpmap:96 H265/90000",))
    w = CameraWriter("cam", index.root, index, track, segment_seconds=2.0)
    seq = 0
    for i, au in enumerate(units):
        payloads = [p for nal in au for p in h265.packetize(nal)]
        items = []
        for j, p in enumerate(payloads):
            marker = 0x80 if j == len(payloads) - 1 else 0
            items.append((0, struct.pack(">BBHII", 0x80, marker | 96, seq, i * 3600, 1) + p, False))
            seq += 1
        w.feed(Unit(items, False, T0 + i / 25, "s", 0, (track,)))
    w.stop()
    segs = index.segments("cam")
    assert len(segs) == 2 and all(s.codec == "H265" for s in segs)
    total = 0
    for seg in segs:
        frames, errors = ffprobe_frames(index.file(seg))
        assert errors == ""
        total += frames
    assert total == len(units) == 100
    agrees(index)


@pytest.mark.parametrize(
    ("profile", "pix_fmt"),
    [("baseline", "yuv420p"), ("high", "yuv420p"), ("high422", "yuv422p"),
     ("high10", "yuv420p10le")],
)  # fmt: skip
def test_each_h264_profile_is_declared_with_ffmpegs_own_avcc_and_reads_cleanly(
    index: RecordingIndex, tmp_path: Path, profile: str, pix_fmt: str
) -> None:
    """The writer hands the muxer length-prefixed samples and the track's avcC itself; the
    record must be the one ffmpeg writes for the same stream (the High profiles add the chroma
    format and bit depths), and the file must decode."""
    from recording_fixtures import FFMPEG

    from gateway.protocols import h264
    from gateway.recording.codecs import avcc_record

    raw, mp4 = tmp_path / "clip.h264", tmp_path / "ffmpeg.mp4"
    subprocess.run(
        [FFMPEG, "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
         "-t", "2", "-pix_fmt", pix_fmt, "-c:v", "libx264", "-profile:v", profile, "-bf", "0",
         "-g", "25", "-x264-params", "repeat-headers=1", "-f", "h264", str(raw)],
        check=True, timeout=60,
    )  # fmt: skip
    subprocess.run(
        [FFMPEG, "-loglevel", "error", "-i", str(raw), "-c", "copy", str(mp4)],
        check=True, timeout=60,
    )  # fmt: skip
    data = mp4.read_bytes()
    at = data.index(b"avcC")
    theirs = data[at + 4 : at - 4 + int.from_bytes(data[at - 4 : at], "big")]
    nals = h264.split_annexb(raw.read_bytes())
    sps = next(n for n in nals if n[0] & 0x1F == 7)
    pps = next(n for n in nals if n[0] & 0x1F == 8)
    assert avcc_record(sps, pps) == theirs

    aus: list[tuple[bytes, ...]] = []
    cur: list[bytes] = []
    for nal in nals:
        cur.append(nal)
        if nal[0] & 0x1F in (1, 5):
            aus.append(tuple(cur))
            cur = []
    w = writer(index, index.root, segment_seconds=60.0)
    feed(w, tuple(aus))
    w.stop()
    [seg] = index.segments("cam")
    ours = index.file(seg).read_bytes()
    assert theirs in ours  # the declared record, as it is
    frames, errors = ffprobe_frames(index.file(seg))
    assert (frames, errors) == (len(aus), "")
    agrees(index)


_NAL = st.tuples(
    st.integers(0, 255), st.binary(min_size=0, max_size=300), st.sampled_from([40, 120, 400])
)  # (NAL unit header byte, body, MTU it is sent at)


@settings(max_examples=400, deadline=None)
@given(
    nals=st.lists(_NAL, min_size=1, max_size=5),
    drop=st.none() | st.integers(0, 40),
    poke=st.none() | st.tuples(st.integers(0, 40), st.integers(0, 15), st.integers(0, 255)),
    others=st.lists(st.tuples(st.integers(0, 40), st.integers(1, 2)), max_size=3),
)
def test_the_one_pass_depacketizer_agrees_with_the_quick_one_or_steps_aside(
    nals: list[tuple[int, bytes, int]],
    drop: int | None,
    poke: tuple[int, int, int] | None,
    others: list[tuple[int, int]],
) -> None:
    """h264_items reads the hub's items in one pass; on anything (a lost packet, a bit flipped
    in an RTP, NAL or FU header, another track's packets or RTCP among them) it gives exactly
    what the quick depacketizer gives for the video payloads, or None, and None only where the
    quick path also refuses or a packet is not the common case it is for (a longer RTP header,
    a payload under two bytes)."""
    import struct

    from gateway.protocols import h264
    from gateway.recording.codecs import h264_items, h264_quick

    payloads = [p for head, body, mtu in nals for p in h264.packetize(bytes((head,)) + body, mtu)]
    header = struct.Struct(">BBHII")
    packets = [header.pack(0x80, 96, i, 0xFEDCBA98, 7) + p for i, p in enumerate(payloads)]
    if drop is not None and drop < len(packets):
        del packets[drop]
    if poke is not None and poke[0] < len(packets) and poke[1] < len(packets[poke[0]]):
        i, at, value = poke
        packets[i] = packets[i][:at] + bytes((value,)) + packets[i][at + 1 :]
    items = [(0, p, False) for p in packets]
    for at, kind in others:  # an audio packet (track 1) or an RTCP report of the video
        items.insert(min(at, len(items)), (1, b"\xff" * 3, False) if kind == 1 else (0, b"", True))
    got = h264_items(items, 0)
    quick = h264_quick([memoryview(p)[12:] for p in packets]) if packets else None
    common = bool(packets) and all(p[0] == 0x80 and len(p) >= 14 for p in packets)
    if got is not None:
        assert quick is not None
        assert got == (*quick, int.from_bytes(packets[0][4:8], "big"))
    else:
        assert quick is None or not common
