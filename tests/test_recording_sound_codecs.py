"""Opus recorded, G.711 ready (issue #13, recaudio 2): a real ffmpeg camera publishes H.264 with
Opus (RFC 7587); the recorder writes the Opus packets as they are, in time with the pictures and
without a break across segment files; ffprobe reads the files and /get's MP4, ffmpeg decodes them
without an error. G.711 cameras (PCMA, PCMU, RFC 3551) are recorded without their sound still
(browsers' MSE takes no 16-bit PCM track, and HLS serves the files' own bytes), but a segment
file takes G.711 expanded to 16-bit PCM (``ipcm``: the MP4 muxer takes no A-law or mu-law), which
ffmpeg decodes, and the expansion gives the camera's bytes back."""

from __future__ import annotations

import itertools
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import av
import pytest
from conftest import FFMPEG, publishing, running_gateway, serving_http, wait_for
from recording_fixtures import h264_access_units
from test_recording import recording_config
from test_recording_audio import probe_streams
from test_recording_audio_continuity import flash_and_beep_argv, read_segment

from gateway.recording.audio import audio_track
from gateway.recording.codecs import CODECS, picture_size
from gateway.recording.index import Segment
from gateway.recording.segment_file import SegmentFile
from gateway.recording.sound_codecs import (
    SoundError,
    SoundFormat,
    compand,
    expand,
    opus_samples,
    sound_format,
)
from gateway.stream.tracks import Track

CAMERAS = {
    # RTP encoding: ffmpeg's options, the recorded codec (None: not recorded), its rate, one
    # frame's length (s)
    "PCMA": (("-c:a", "pcm_alaw", "-ar", "8000"), None, "8000", 0.02),
    "PCMU": (("-c:a", "pcm_mulaw", "-ar", "8000"), None, "8000", 0.02),
    "OPUS": (("-c:a", "libopus", "-ar", "48000", "-b:a", "32k"), "opus", "48000", 0.02),
}


def decode_errors(path: Path) -> str:
    out = subprocess.run(
        [FFMPEG, "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return out.stderr


@pytest.mark.parametrize("encoding", sorted(CAMERAS))
async def test_a_g711_or_opus_camera_is_recorded_and_served(
    tmp_path: Path, procs: Any, encoding: str
) -> None:
    options, codec, rate, frame = CAMERAS[encoding]
    cfg = recording_config(tmp_path)
    async with running_gateway(cfg) as gw:
        index = gw.gateway.recorder.index
        await procs(flash_and_beep_argv(gw.url("cam1"), options))
        await publishing(gw, "cam1")
        tracks = gw.hub.path("cam1").tracks
        assert [t.codec for t in tracks] == ["H264", encoding], tracks

        def closed() -> list[Segment]:
            return [s for s in index.segments("cam1") if s.closed]

        await wait_for(lambda: len(closed()) >= 3, 60, what="segments")
        segments = closed()
        counters = gw.gateway.recorder.counters()["cam1"]
        if codec is None:  # G.711: the pictures only, as before
            assert counters.audio_units == 0 and counters.bad_audio == 0, counters
            for seg in segments:
                streams, errors = probe_streams(index.file(seg))
                assert errors == "" and [s["codec_type"] for s in streams] == ["video"], streams
            return
        assert counters.audio_units > 0 and counters.bad_audio == 0, counters
        # The files: both tracks, read cleanly and decoded without an error.
        for seg in segments:
            path = index.file(seg)
            streams, errors = probe_streams(path)
            assert errors == "" and decode_errors(path) == "", (errors, seg)
            assert [(s["codec_type"], s["codec_name"]) for s in streams] == [
                ("video", "h264"),
                ("audio", codec),
            ], streams
            assert streams[1]["sample_rate"] == rate
        # In time with the pictures and following on from file to file.
        read = [read_segment(index.file(s), s.start) for s in segments]
        for i, (video, sound) in enumerate(read):
            steps = [b[0] - a[1] for a, b in itertools.pairwise(sound.packets)]
            assert all(abs(s) < 0.001 for s in steps), (i, max(steps, key=abs))
            assert 0 <= sound.start - video.start < frame, (i, sound.start - video.start)
            assert abs(sound.end - video.end) < frame, (i, sound.end - video.end)
            if i and segments[i - 1].end == segments[i].start:
                assert abs(sound.start - read[i - 1][1].end) < 0.001, i
            pairs = [
                min(sound.onsets, key=lambda b, f=f: abs(b - f)) - f
                for f in video.onsets
                if f - sound.start > 3 * frame
            ]
            print(encoding, i, "beep - flash ms", [round(1000 * p, 1) for p in pairs])
            assert pairs and all(abs(p) < 0.005 for p in pairs), (i, pairs)
        # /get: an MP4 with both tracks, read and decoded cleanly.
        async with serving_http(gw) as (server, http):
            params = {
                "path": "cam1",
                "start": (segments[1].start - timedelta(seconds=1)).isoformat(),
                "duration": "2",
                "format": "mp4",
            }
            async with http.get(server.make_url("/get"), params=params) as r:
                body = await r.read()
                assert r.status == 200, body
    got = tmp_path / "got.mp4"
    got.write_bytes(body)
    streams, errors = probe_streams(got)
    assert errors == "" and decode_errors(got) == "", errors
    assert [(s["codec_type"], s["codec_name"]) for s in streams] == [
        ("video", "h264"),
        ("audio", codec),
    ], streams
    for s in streams:
        assert abs(float(s["duration"]) - 2.0) <= 1.0, s


@pytest.mark.parametrize("encoding", ["PCMA", "PCMU"])
def test_a_segment_file_takes_g711_as_pcm_that_gives_the_cameras_bytes_back(
    tmp_path: Path, encoding: str
) -> None:
    """A segment file with a camera's H.264 and G.711 (every byte value, 20 ms a packet)
    expanded to 16-bit PCM: ffprobe reads pcm_s16be at 8 kHz, ffmpeg decodes it without an
    error, and the recorded samples compand back to the bytes sent (mu-law's 0x7F as 0xFF)."""
    aus = h264_access_units(seconds=2.0)
    params = {n[0] & 0x1F: n for au in aus for n in au if n[0] & 0x1F in (7, 8)}
    codec = CODECS["H264"]
    path = tmp_path / "g711.mp4"
    file = SegmentFile(
        path, codec, *picture_size(codec, params), audio=SoundFormat(encoding, 8000, 1),
        params=params,
    )  # fmt: skip
    sent = bytes(i % 256 for i in range(2 * 8000))  # 2 s of G.711
    packets = [sent[i : i + 160] for i in range(0, len(sent), 160)]
    per_picture = len(packets) // len(aus)
    for i, au in enumerate(aus):
        file.mux(
            codec.sample(list(au)), i * 3600, bool(i == 0 or any(n[0] & 0x1F == 5 for n in au))
        )
        for j in range(i * per_picture, (i + 1) * per_picture):
            file.mux_audio(expand(packets[j], encoding), j * 160, 160)
    file.close()
    streams, errors = probe_streams(path)
    assert errors == "" and decode_errors(path) == "", errors
    assert [(s["codec_name"], s.get("sample_rate")) for s in streams][1] == ("pcm_s16be", "8000")
    with av.open(str(path)) as c:
        recorded = b"".join(bytes(p) for p in c.demux(c.streams.audio[0]) if p.size)
    back = compand(recorded, encoding)
    assert len(back) == per_picture * len(aus) * 160
    expected = sent[: len(back)]
    if encoding == "PCMU":
        expected = expected.replace(b"\x7f", b"\xff")
    assert back == expected


def test_g711_expands_to_pcm_and_back_to_the_same_bytes() -> None:
    every = bytes(range(256))
    assert compand(expand(every, "PCMA"), "PCMA") == every
    # mu-law's two zeros (0x7F, 0xFF) both expand to 0; it comes back as 0xFF, silence.
    back = compand(expand(every, "PCMU"), "PCMU")
    assert [i for i in range(256) if back[i] != every[i]] == [0x7F] and back[0x7F] == 0xFF
    assert len(expand(every, "PCMA")) == 512
    assert expand(b"\xd5", "PCMA") == (8).to_bytes(2, "big")  # A-law's smallest step
    with pytest.raises(SoundError):
        compand((1).to_bytes(2, "big"), "PCMA")  # no A-law byte expands to 1


def test_opus_packets_last_what_their_toc_says() -> None:
    assert opus_samples(bytes((0xFC, 0xFF))) == 960  # CELT 20 ms, one frame
    assert opus_samples(bytes((0x08,))) == 960  # SILK 20 ms
    assert opus_samples(bytes((0xF1,))) == 960  # CELT 10 ms, two frames (code 1)
    assert opus_samples(bytes((0xF9,))) == 1920  # CELT 20 ms, two frames
    assert opus_samples(bytes((0x03 | (1 << 3), 3))) == 2880  # SILK 20 ms, three frames
    for bad in (b"", bytes((0x03,)), bytes((0x03, 0)), bytes((0x1B, 48))):
        with pytest.raises(SoundError):
            opus_samples(bad)


def test_the_sdp_says_which_g711_or_opus_track_is_recorded() -> None:
    pcmu = Track(1, "audio", "PCMU", 8000, 0, ("a=rtpmap:0 PCMU/8000",))
    opus = Track(1, "audio", "OPUS", 48000, 97, ("a=rtpmap:97 opus/48000/2",))
    stereo = Track(1, "audio", "OPUS", 48000, 97, ("a=fmtp:97 sprop-stereo=1",))
    assert sound_format(pcmu) == SoundFormat("PCMU", 8000, 1)
    assert sound_format(opus) == SoundFormat("OPUS", 48000, 1)
    assert sound_format(stereo) == SoundFormat("OPUS", 48000, 2)
    assert sound_format(Track(1, "audio", "PCMA", 16000, 97, ())) is None  # not G.711's rate
    assert sound_format(Track(1, "audio", "L16", 8000, 97, ())) is None
    video = Track(0, "video", "H264", 90000, 96, ())
    assert audio_track((video, opus)) == (opus, SoundFormat("OPUS", 48000, 1))
    assert audio_track((video, pcmu)) is None  # G.711 is not recorded yet
