"""A masked tenant's playback of a recording with sound (issue #13 scope 2, playaudio): it is
described and sent the masked pictures only, since the mask transcoder carries no sound and an
SDP must not offer a track that never comes; the same tenant on an unmasked camera's recording
with sound is described and sent both tracks."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

from conftest import FFMPEG
from export_fixtures import index_segment
from playback_world import playback_world
from rtsp_probe import Probe
from test_recording import _ffprobe
from test_recording_audio import probe_streams

from gateway.playback.rtsp import RtspPlayback


def write_segment_with_sound(path: Path, seconds: float) -> None:
    """A recorder-like fMP4 (a key frame fragment a second) with H.264 and AAC (a 440 Hz tone),
    the video its first track."""
    subprocess.run(
        [
            FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", str(seconds),
            "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast",
            "-pix_fmt", "yuv420p", "-g", "25", "-keyint_min", "25", "-sc_threshold", "0",
            "-c:a", "aac", "-b:a", "64k",
            "-movflags", "frag_keyframe+empty_moov+default_base_moof", "-f", "mp4", str(path),
        ],
        check=True,
        timeout=120,
    )  # fmt: skip


async def test_a_masked_tenant_is_described_and_sent_the_pictures_only(
    tmp_path: Path, procs: Any
) -> None:
    async with playback_world(tmp_path, http=False) as world:
        RtspPlayback(world.gw.gateway.rtsp, world.service)
        start = world.recent + timedelta(seconds=30)  # after the world's own 10 s recordings
        for camera in ("cam1", "cam2"):
            path = world.index.root / f"{camera}-sound.mp4"
            write_segment_with_sound(path, 6)
            index_segment(world.index, camera, f"{camera}-sound", path, start)
        police = world.token("police", "investigator")
        at = (start + timedelta(seconds=1.5)).isoformat().replace("+00:00", "Z")
        for camera, described in (("cam1", [b"video", b"audio"]), ("cam2", [b"video"])):
            query = f"{camera}?token={police}&purpose=incident-7&start={at}"
            probe = await Probe.connect("127.0.0.1", world.gw.port)
            try:
                r = await probe.request("DESCRIBE", f"rtsp://127.0.0.1:{world.gw.port}/{query}")
                assert r.status == 200, r
                media = [line.split()[0][2:] for line in r.body.split(b"\n") if line[:2] == b"m="]
                assert media == described, (camera, r.body)
            finally:
                await probe.close()
            url = world.gw.url(query)
            out = tmp_path / f"{camera}.mkv"
            p = await procs(
                [FFMPEG, "-v", "error", "-rtsp_transport", "tcp", "-i", url, "-map", "0",
                 "-t", "2", "-c", "copy", "-y", str(out)]
            )  # fmt: skip
            assert await p.wait(90) == 0, p.text
            streams, errors = probe_streams(out)
            assert errors == "", errors
            expected = ["video", "audio"] if camera == "cam1" else ["video"]
            assert [s["codec_type"] for s in streams] == expected, (camera, streams)
        probe_json = await procs(
            [_ffprobe(), "-v", "error", "-show_streams", "-of", "json", str(tmp_path / "cam1.mkv")]
        )
        assert await probe_json.wait(30) == 0
        codecs = [s["codec_name"] for s in json.loads(probe_json.text)["streams"]]
        assert codecs == ["h264", "aac"]
