"""A camera's AAC audio, recorded beside its video and played back (issue #13, recperf 3): a real
ffmpeg camera publishes H.264 and AAC (RFC 3640); the recorder muxes both into each fMP4
segment without re-encoding; /get's MP4 carries both tracks, as long as the range asked; the
AAC depacketizer takes RFC 3640 payloads and refuses torn ones."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import publish_argv, publishing, running_gateway, serving_http, wait_for
from test_recording import _ffprobe, metrics_text, recording_config

from gateway.recording.audio import AacFormat, AudioError, aac_format, aac_units, parse_config
from gateway.recording.index import RecordingIndex
from gateway.stream.tracks import Track
from tenants.db import Database


def publish_with_audio_argv(url: str) -> list[str]:
    """ffmpeg as a camera with a microphone: H.264 and AAC (RFC 3640 mpeg4-generic)."""
    argv = publish_argv(url)
    at = argv.index("-c:v")
    audio_in = ["-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]
    out = argv.index("-f", at)  # the output's format: rtsp
    return [*argv[:at], *audio_in, *argv[at:out], "-c:a", "aac", "-b:a", "64k", *argv[out:]]


def probe_streams(path: Path) -> tuple[list[dict[str, str]], str]:
    out = subprocess.run(
        [_ffprobe(), "-v", "error", "-show_entries", "stream=codec_type,codec_name,sample_rate,"
         "channels,start_time,duration", "-of", "json", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return json.loads(out.stdout or "{}").get("streams", []), out.stderr


async def test_a_cameras_aac_audio_is_recorded_beside_its_video(tmp_path: Path, procs: Any) -> None:
    """The camera's AAC goes into each segment as a second track, not re-encoded: ffprobe
    reads both, the audio as the camera sent it (44.1 kHz mono), lasting as long as the video
    within a fraction of a second; the index still times fragments by the video."""
    cfg = recording_config(tmp_path)
    start = procs  # type: ignore[assignment]
    async with running_gateway(cfg) as gw:
        index = gw.gateway.recorder.index
        await start(publish_with_audio_argv(gw.url("cam1")))  # type: ignore[operator]
        await publishing(gw, "cam1")
        tracks = gw.hub.path("cam1").tracks
        assert [t.codec for t in tracks] == ["H264", "MPEG4-GENERIC"], tracks
        await wait_for(
            lambda: sum(1 for s in index.segments("cam1") if s.closed) >= 2, 30, what="segments"
        )
        counters = gw.gateway.recorder.counters()["cam1"]
        text = await metrics_text(gw)
        shown = re.search(r'feedgate_recording_audio_units_total\{camera="cam1"\} (\d+)', text)
        assert shown is not None and int(shown.group(1)) >= counters.audio_units > 0
    assert counters.audio_units > 0 and counters.bad_audio == 0
    index = RecordingIndex(Database.open(cfg.database_url), cfg.recording_dir)
    seg = next(s for s in index.segments("cam1") if s.closed)
    path = index.file(seg)
    streams, errors = probe_streams(path)
    assert errors == "", errors
    video, audio = streams
    assert (video["codec_type"], video["codec_name"]) == ("video", "h264")
    assert (audio["codec_type"], audio["codec_name"]) == ("audio", "aac")
    assert (audio["sample_rate"], audio["channels"]) == ("44100", 1)
    assert abs(float(audio["duration"]) - float(video["duration"])) < 0.5
    assert abs(float(audio["start_time"]) - float(video["start_time"])) < 0.2
    frags = index.fragments(seg.id)
    assert frags[0].start == seg.start and frags[-1].end == seg.end
    assert abs((seg.end - seg.start).total_seconds() - float(video["duration"])) < 0.1


async def test_get_serves_the_recorded_audio_with_the_video(tmp_path: Path, procs: Any) -> None:
    """ffprobe reads /get's MP4 (and fMP4) of a recorded range: two streams, H.264 and AAC,
    each lasting the range asked within a second."""
    cfg = recording_config(tmp_path)
    async with running_gateway(cfg) as gw:
        await procs(publish_with_audio_argv(gw.url("cam1")))
        await publishing(gw, "cam1")
        index = gw.gateway.recorder.index
        await wait_for(
            lambda: sum(1 for s in index.segments("cam1") if s.closed) >= 3, 40, what="segments"
        )
        closed = [s for s in index.segments("cam1") if s.closed]
        start = closed[0].start + timedelta(seconds=0.5)
        duration = 4.0
        async with serving_http(gw) as (server, http):
            for fmt in ("mp4", "fmp4"):
                url = server.make_url("/get")
                params = {
                    "path": "cam1",
                    "start": start.isoformat().replace("+00:00", "Z"),
                    "duration": str(duration),
                    "format": fmt,
                }
                async with http.get(url, params=params) as r:
                    body = await r.read()
                    assert r.status == 200, body
                got = tmp_path / f"got.{fmt}.mp4"
                got.write_bytes(body)
                streams, errors = probe_streams(got)
                assert errors == "", errors
                assert [(s["codec_type"], s["codec_name"]) for s in streams] == [
                    ("video", "h264"),
                    ("audio", "aac"),
                ], streams
                for s in streams:
                    assert abs(float(s["duration"]) - duration) <= 1.0, (fmt, s)


FMT = AacFormat(bytes.fromhex("1208"), 44100, 1, 1024, 13, 3, 3)


def _payload(*units: bytes) -> bytes:
    headers = b"".join((len(u) << 3).to_bytes(2, "big") for u in units)  # 13-bit size, index 0
    return (len(headers) * 8).to_bytes(2, "big") + headers + b"".join(units)


def test_rfc3640_payloads_give_their_access_units_and_torn_ones_are_refused() -> None:
    a, b = bytes(range(1, 200)), b"\x21" * 300
    assert aac_units(_payload(a), FMT) == [a]
    assert aac_units(_payload(a, b), FMT) == [a, b]
    whole = _payload(a, b)
    for torn in (
        whole[:1],  # no AU-headers-length
        whole[:3],  # headers cut
        whole[:-1],  # the last AU short of its size
        b"\x00\x00" + whole[2:],  # no headers at all
        b"\x00\x0c" + whole[2:],  # 12 bits: a header cut in half
        (64 * 16 + 16).to_bytes(2, "big") + bytes(200),  # more AUs than any camera sends
    ):
        with pytest.raises(AudioError):
            aac_units(torn, FMT)


def test_the_sdp_says_whether_and_how_audio_is_recorded() -> None:
    fmtp = "a=fmtp:97 profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;"
    track = Track(
        1, "audio", "MPEG4-GENERIC", 44100, 97, (fmtp + "indexdeltalength=3; config=1190",)
    )
    assert aac_format(track) == AacFormat(bytes.fromhex("1190"), 48000, 2, 1024, 13, 3, 3)
    for lines in (
        (fmtp.replace("AAC-hbr", "CELP-cbr") + " config=1190",),  # not AAC
        (fmtp + " config=zz",),  # no config
        (fmtp + " config=17",),  # a config cut short
        (fmtp.replace("sizelength=13", "sizelength=40") + " config=1190",),
    ):
        assert aac_format(dataclasses.replace(track, sdp_lines=lines)) is None, lines
    pcmu = Track(1, "audio", "PCMU", 8000, 0, ("a=rtpmap:0 PCMU/8000",))
    assert aac_format(pcmu) is None  # G.711 is not recorded
    assert parse_config(bytes.fromhex("1208")) == (44100, 1, 1024)
    assert parse_config(bytes.fromhex("120c")) == (44100, 1, 960)  # frameLengthFlag
    with pytest.raises(AudioError):
        parse_config(bytes.fromhex("1f"))
