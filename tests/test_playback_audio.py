"""RTSP playback of a recording with sound (issue #13 scope 2, playaudio): a real ffmpeg camera
publishes H.264 and AAC (a 440 Hz tone), the gateway's recorder records both tracks, and RTSP
playback offers and sends both: ffprobe through the URL form sees h264 and aac, and ffmpeg
receives and decodes both (the sound still a 440 Hz tone); a recording without sound is still
described and played as one track."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from conftest import FFMPEG, RunningGateway, publish_argv, publishing, running_gateway, wait_for
from test_recording import _ffprobe, recording_config
from test_recording_audio import probe_streams, publish_with_audio_argv

from gateway.playback.feed import aac_packet, audio_track
from gateway.playback.media import MediaError
from gateway.protocols.rtp import payload_of, rtp_header
from gateway.recording.audio import AacFormat, aac_format, aac_units
from gateway.recording.index import RecordingIndex, Segment

TONE = 440.0  # Hz: what publish_with_audio_argv's microphone hears


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


@dataclass
class Recorded:
    gw: RunningGateway
    index: RecordingIndex
    closed: list[Segment]  # the camera's closed segments (2 s each), oldest first

    def url(self, start: datetime, extra: str = "") -> str:
        return self.gw.url(f"cam1?start={iso(start)}{extra}")


@contextlib.asynccontextmanager
async def recorded(
    tmp_path: Path, procs: Any, *, sound: bool = True, segments: int = 3
) -> AsyncIterator[Recorded]:
    """A gateway recording cam1 from a real ffmpeg camera (with or without its microphone)
    until ``segments`` segments are closed; the camera keeps publishing (and recording) on."""
    cfg = recording_config(tmp_path)
    async with running_gateway(cfg) as gw:
        index = gw.gateway.recorder.index
        url = gw.url("cam1")
        await procs(publish_with_audio_argv(url) if sound else publish_argv(url))
        await publishing(gw, "cam1")

        def closed() -> list[Segment]:
            return [s for s in index.segments("cam1") if s.closed]

        await wait_for(lambda: len(closed()) >= segments, 60, what="closed segments")
        yield Recorded(gw, index, closed())


def first_sound(index: RecordingIndex, t: datetime) -> datetime:
    """The capture time of the first recorded sound at or after ``t``, read from the segment
    files whole (each track counts from its segment's start)."""
    times = []
    for seg in index.segments("cam1"):
        if seg.closed:
            with av.open(str(index.file(seg))) as c:
                sound = c.streams.audio[0]
                times += [
                    seg.start + timedelta(seconds=float(p.pts * sound.time_base))
                    for p in c.demux(sound)
                    if p.size and p.pts is not None
                ]
    return min(x for x in times if x >= t)


def decoded_sound(path: Path) -> tuple[float, int, float]:
    """(the strongest frequency of a file's decoded sound, its sample rate, its seconds)."""
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        chunks = [f.to_ndarray().astype(np.float64).reshape(-1) for f in c.decode(stream)]
        rate = int(stream.codec_context.sample_rate)
    samples = np.concatenate(chunks)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum)) * rate / len(samples), rate, len(samples) / rate


async def test_ffprobe_and_ffmpeg_get_the_sound_through_the_url_form(
    tmp_path: Path, procs: Any
) -> None:
    async with recorded(tmp_path, procs) as rec:
        # From the key frame 1 s into a segment (GOP 1 s, segments 2 s).
        asked = rec.closed[1].start + timedelta(seconds=1.3)
        key = rec.index.fragments_from("cam1", asked, limit=1)[0].start
        url = rec.url(asked)
        probe = await procs(
            [_ffprobe(), "-v", "error", "-rtsp_transport", "tcp", "-show_streams", "-of", "json",
             url]
        )  # fmt: skip
        assert await probe.wait(60) == 0, probe.text
        streams = json.loads(probe.text)["streams"]
        got = [(s["codec_type"], s["codec_name"]) for s in streams]
        assert got == [("video", "h264"), ("audio", "aac")], streams
        audio = streams[1]
        assert (audio["sample_rate"], audio["channels"]) == ("44100", 1)
        # ffmpeg receives 3 s of both tracks and decodes both without an error.
        out = tmp_path / "played.mkv"
        p = await procs(
            [FFMPEG, "-v", "error", "-rtsp_transport", "tcp", "-i", url, "-map", "0", "-t", "3",
             "-c", "copy", "-y", str(out)]
        )  # fmt: skip
        assert await p.wait(60) == 0, p.text
        streams, errors = probe_streams(out)
        assert errors == "", errors
        assert [(s["codec_type"], s["codec_name"]) for s in streams] == got
        decode = await procs(
            [FFMPEG, "-v", "error", "-i", str(out), "-map", "0", "-f", "null", "-"]
        )
        assert await decode.wait(60) == 0 and decode.text.strip() == "", decode.text
        # The sound is the camera's: the recorded tone, decoded from what playback sent.
        frequency, rate, seconds = decoded_sound(out)
        assert rate == 44100 and abs(frequency - TONE) < 5, frequency
        assert abs(seconds - 3.0) < 0.5, seconds  # as much sound as pictures

        # ffmpeg lines the tracks up by the sender reports: its first sound is as far after its
        # first picture (the key frame) as recorded. (Its first picture has no timestamp of its
        # own out of ffmpeg's H.264 parser; its second is one frame, 40 ms, on.)
        frames = await procs(
            [_ffprobe(), "-v", "error", "-rtsp_transport", "tcp", "-read_intervals", "%+1",
             "-show_entries", "frame=media_type,pts_time", "-of", "json", url]
        )  # fmt: skip
        assert await frames.wait(60) == 0, frames.text
        listed = json.loads(frames.text)["frames"]
        pictures = [f for f in listed if f["media_type"] == "video"]
        sound = next(float(f["pts_time"]) for f in listed if f["media_type"] == "audio")
        assert abs(float(pictures[1]["pts_time"]) - 0.040) < 0.001, pictures[:2]
        expected = (first_sound(rec.index, key) - key).total_seconds()
        assert abs(sound - expected) < 0.005, (sound, expected)
        print(
            f"ffprobe: first sound {sound * 1000:.1f} ms after the first picture (recorded:"
            f" {expected * 1000:.1f} ms)"
        )


async def test_a_recording_without_sound_is_still_one_track(tmp_path: Path, procs: Any) -> None:
    async with recorded(tmp_path, procs, sound=False, segments=2) as rec:
        url = rec.url(rec.closed[0].start + timedelta(seconds=0.5))
        probe = await procs(
            [_ffprobe(), "-v", "error", "-rtsp_transport", "tcp", "-show_streams", "-of", "json",
             url]
        )  # fmt: skip
        assert await probe.wait(60) == 0, probe.text
        streams = json.loads(probe.text)["streams"]
        assert [(s["codec_type"], s["codec_name"]) for s in streams] == [("video", "h264")]
        out = tmp_path / "played.mp4"
        p = await procs(
            [FFMPEG, "-v", "error", "-rtsp_transport", "tcp", "-i", url, "-t", "2", "-c", "copy",
             "-y", str(out)]
        )  # fmt: skip
        assert await p.wait(60) == 0, p.text
        streams, errors = probe_streams(out)
        assert errors == "" and [s["codec_type"] for s in streams] == ["video"], streams


def test_an_aac_unit_is_one_rfc3640_packet_the_recorders_depacketizer_reads() -> None:
    """What playback sends is AAC-hbr as described (13-bit size, 3-bit index per AU header):
    the recorder's own RFC 3640 depacketizer gives the unit back; a unit too big for a 13-bit
    size is refused rather than sent with a wrong one."""
    aac = AacFormat(bytes.fromhex("1208"), 44100, 1, 1024, 13, 3, 3)
    track = audio_track(aac)
    assert aac_format(track) == aac  # the SDP says what the packets are
    assert track.sdp_lines[0] == "a=rtpmap:97 MPEG4-GENERIC/44100/1"
    unit = bytes(range(256)) * 3
    packet = aac_packet(unit, seq=7, timestamp=1024, ssrc=5)
    pt, marker, seq, ts, ssrc, _offset = rtp_header(packet)
    assert (pt, marker, seq, ts, ssrc) == (97, True, 7, 1024, 5)
    assert aac_units(payload_of(packet), aac) == [unit]
    with pytest.raises(MediaError):
        aac_packet(bytes(1 << 13), seq=0, timestamp=0, ssrc=0)
