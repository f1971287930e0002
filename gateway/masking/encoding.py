"""The masked stream's encoding: libx264's options, the parameters an encoder is opened with
and when it must be reopened, and the SDP track that describes its output."""

from __future__ import annotations

import base64
import binascii

from gateway.stream.tracks import Track

__all__ = [
    "DEFAULT_FPS",
    "DEFAULT_GOP",
    "MAX_BITRATE",
    "MIN_BITRATE",
    "PAYLOAD_TYPE",
    "default_bitrate",
    "encoder_options",
    "h264_track",
    "reopen_needed",
    "sprop_nals",
]

PAYLOAD_TYPE = 96
DEFAULT_FPS = 25.0
DEFAULT_GOP = 50
MIN_BITRATE = 64_000
MAX_BITRATE = 50_000_000


def _parse_fmtp(track: Track) -> dict[str, str]:
    params: dict[str, str] = {}
    for line in track.sdp_lines:
        if not line.lower().startswith("a=fmtp:"):
            continue
        _pt, _, rest = line[7:].partition(" ")
        for item in rest.split(";"):
            key, sep, value = item.strip().partition("=")
            if sep:
                params[key.lower()] = value.strip()
    return params


def sprop_nals(track: Track) -> list[bytes]:
    """SPS/PPS NAL units from the track's ``sprop-parameter-sets`` ([] if absent or bad)."""
    raw = _parse_fmtp(track).get("sprop-parameter-sets", "")
    out = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            nal = base64.b64decode(item + "=" * (-len(item) % 4), validate=True)
        except (binascii.Error, ValueError):
            return []
        if nal:
            out.append(nal)
    return out


def h264_track(sps: bytes, pps: bytes, *, index: int = 0) -> Track:
    """An H.264 video track whose SDP describes these parameter sets (packetization-mode 1)."""
    sprop = ",".join(base64.b64encode(n).decode() for n in (sps, pps))
    profile_level = sps[1:4].hex().upper() if len(sps) >= 4 else "42E01F"
    return Track(
        index=index,
        media="video",
        codec="H264",
        clock_rate=90000,
        payload_type=PAYLOAD_TYPE,
        sdp_lines=(
            f"a=rtpmap:{PAYLOAD_TYPE} H264/90000",
            f"a=fmtp:{PAYLOAD_TYPE} packetization-mode=1; profile-level-id={profile_level}; "
            f"sprop-parameter-sets={sprop}",
        ),
    )


def encoder_options(bitrate: int) -> dict[str, str]:
    """libx264 options of the masked stream (the benchmark gives ffmpeg the same ones)."""
    return {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "forced-idr": "1",
        # SPS/PPS before every IDR; keyframes only where the source has them; a bounded VBV
        # (1 s buffer, peaks at twice the rate) so keyframes do not burst far above the source.
        "x264-params": f"repeat-headers=1:scenecut=0:vbv-maxrate={bitrate * 2 // 1000}"
        f":vbv-bufsize={bitrate // 1000}",
    }


def default_bitrate(width: int, height: int) -> int:
    # About 0.1 bit per pixel at 25 fps: 2.6 Mbit/s at 720p, 5.2 Mbit/s at 1080p.
    return max(MIN_BITRATE, min(MAX_BITRATE, int(width * height * 25 * 0.1)))


def reopen_needed(
    current: tuple[int, int, int, int, str] | None, wanted: tuple[int, int, int, int, str]
) -> bool:
    """Reopen the encoder (at a keyframe only) on a new size or format, or when the source's GOP
    or bitrate moved by more than half from what the encoder was opened with."""
    if current is None:
        return True
    w0, h0, gop0, rate0, fmt0 = current
    w1, h1, gop1, rate1, fmt1 = wanted
    if (w0, h0, fmt0) != (w1, h1, fmt1):
        return True
    if abs(gop1 - gop0) > max(2, gop0 // 2):
        return True
    return abs(rate1 - rate0) > rate0 // 2
