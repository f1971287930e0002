"""G.711 and Opus audio as the recorder records it (sans-I/O apart from :func:`add_sound_stream`).

- **Opus** (RFC 7587, ``opus/48000/2``): each RTP payload is one Opus packet, recorded as it is,
  one MP4 sample each (``Opus`` sample entry with its ``dOps``), lasting what its TOC byte says
  (RFC 6716 section 3.1: 2.5 to 120 ms).
- **G.711** (RFC 3551, ``PCMA/8000``, ``PCMU/8000``): the MP4 muxer takes neither A-law nor
  mu-law, so each payload's samples are expanded to 16-bit linear PCM (``ipcm``, big-endian), which
  loses nothing: A-law expands one-to-one onto 256 distinct 16-bit values, mu-law too but for its
  two codes for zero (0x7F and 0xFF, both 0), so :func:`compand` gives back the camera's exact
  bytes (a mu-law zero as 0xFF) and RTSP playback sends them so.

An MP4 track is one of these or AAC (:mod:`gateway.recording.audio`); other audio is not recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from gateway.stream.tracks import Track

__all__ = [
    "SoundError",
    "SoundFormat",
    "add_sound_stream",
    "compand",
    "expand",
    "opus_samples",
    "sound_format",
    "sound_frames",
]

OPUS_RATE = 48_000
G711_RATE = 8_000
# Samples of one G.711 payload at most (1 s: cameras send 20-40 ms).
MAX_G711 = 8_000


class SoundError(ValueError):
    """A payload that is not the Opus or G.711 its SDP said."""


@dataclass(frozen=True, slots=True)
class SoundFormat:
    """A recorded G.711 or Opus track: ``codec`` is the RTP encoding name (``OPUS``, ``PCMA``,
    ``PCMU``)."""

    codec: str
    sample_rate: int
    channels: int

    @property
    def mux_codec(self) -> str:
        """The MP4 track's codec: Opus as sent, G.711 expanded to 16-bit PCM."""
        return "libopus" if self.codec == "OPUS" else "pcm_s16be"


def _alaw(byte: int) -> int:
    a = byte ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if a & 0x80 else -t


def _ulaw(byte: int) -> int:
    u = ~byte & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return 0x84 - t if u & 0x80 else t - 0x84


# The G.711 decoding tables (ITU-T G.711, as FFmpeg's pcm_alaw/pcm_mulaw decoders expand), and
# their inverses over every 16-bit value (-1: no G.711 byte expands to it).
_EXPAND = {
    "PCMA": np.array([_alaw(b) for b in range(256)], dtype=">i2"),
    "PCMU": np.array([_ulaw(b) for b in range(256)], dtype=">i2"),
}


def _inverse(table: np.ndarray[Any, Any], zero: int | None) -> np.ndarray[Any, Any]:
    inverse = np.full(1 << 16, -1, dtype=np.int16)
    inverse[table.astype(np.int32) + 32768] = np.arange(256, dtype=np.int16)
    if zero is not None:
        inverse[32768] = zero
    return inverse


# mu-law has two codes for zero (0x7F and 0xFF); silence is sent as 0xFF.
_COMPAND = {"PCMA": _inverse(_EXPAND["PCMA"], None), "PCMU": _inverse(_EXPAND["PCMU"], 0xFF)}


def expand(payload: bytes | memoryview, codec: str) -> bytes:
    """G.711 bytes as 16-bit big-endian linear PCM."""
    return _EXPAND[codec][np.frombuffer(payload, dtype=np.uint8)].tobytes()


def compand(pcm: bytes, codec: str) -> bytes:
    """16-bit big-endian PCM that :func:`expand` made, back to the camera's G.711 bytes;
    SoundError for a value no G.711 byte expands to."""
    found = _COMPAND[codec][np.frombuffer(pcm, dtype=">i2").astype(np.int32) + 32768]
    if found.size and int(found.min()) < 0:
        raise SoundError(f"PCM that is not expanded {codec}")
    return found.astype(np.uint8).tobytes()


def opus_samples(packet: bytes | memoryview) -> int:
    """Samples (48 kHz) one Opus packet lasts, from its TOC byte (RFC 6716 section 3.1)."""
    if not packet:
        raise SoundError("empty Opus packet")
    toc = packet[0]
    config = toc >> 3
    if config < 12:  # SILK: 10, 20, 40, 60 ms
        per = (480, 960, 1920, 2880)[config & 3]
    elif config < 16:  # hybrid: 10, 20 ms
        per = (480, 960)[config & 1]
    else:  # CELT: 2.5, 5, 10, 20 ms
        per = (120, 240, 480, 960)[config & 3]
    code = toc & 3
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    else:
        if len(packet) < 2:
            raise SoundError("Opus packet without its frame count")
        frames = packet[1] & 0x3F
        if frames == 0:
            raise SoundError("Opus packet of no frames")
    if per * frames > 5760:  # 120 ms at most
        raise SoundError("Opus packet longer than 120 ms")
    return per * frames


def sound_format(track: Track) -> SoundFormat | None:
    """The format of an Opus or G.711 audio track; None for any other track."""
    if track.media != "audio":
        return None
    if track.codec in ("PCMA", "PCMU") and track.clock_rate == G711_RATE:
        return SoundFormat(track.codec, G711_RATE, 1)
    if track.codec == "OPUS" and track.clock_rate == OPUS_RATE:
        stereo = any(
            "sprop-stereo=1" in line.replace(" ", "").lower()
            for line in track.sdp_lines
            if line.lower().startswith("a=fmtp:")
        )
        return SoundFormat("OPUS", OPUS_RATE, 2 if stereo else 1)
    return None


def sound_frames(payload: bytes | memoryview, fmt: SoundFormat) -> list[tuple[bytes, int]]:
    """The MP4 sample of one RTP payload and the samples it lasts; SoundError if malformed."""
    if fmt.codec == "OPUS":
        data = bytes(payload)
        return [(data, opus_samples(data))]
    n = len(payload)
    if not 0 < n <= MAX_G711:
        raise SoundError(f"G.711 payload of {n} bytes")
    return [(expand(payload, fmt.codec), n)]


def add_sound_stream(container: Any, fmt: SoundFormat) -> Any:
    """An Opus or 16-bit PCM track in an output container, for packets that are already
    encoded (the codec context only describes the track: nothing is encoded through it)."""
    layout = "stereo" if fmt.channels == 2 else "mono"
    stream: Any = container.add_stream(fmt.mux_codec, rate=fmt.sample_rate, layout=layout)
    stream.time_base = Fraction(1, fmt.sample_rate)
    return stream
