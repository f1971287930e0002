"""A camera's AAC audio as the recorder muxes it beside the video (sans-I/O apart from
:func:`add_aac_stream`): the format from the SDP (RFC 3640 ``mpeg4-generic``, the
``AudioSpecificConfig`` in ``config=``), the access units out of each RTP payload, and the
MP4 track they go into, never re-encoded.

RFC 3640 AAC-hbr / AAC-lbr: a payload is a 16-bit AU-headers-length (in bits), that many bits of
AU headers (``sizelength`` bits of size, then ``indexlength`` bits of index for the first and
``indexdeltalength`` for the rest), padded to a byte, then the access units back to back. Each
AU is 1024 samples (960 when the config says so), so a packet's units follow its RTP time by
that much each. An AU split over packets (bigger than one packet) is rare for AAC: such packets
are refused as malformed and that audio is lost, never guessed at.

Opus tracks are recorded too, as they are (:mod:`gateway.recording.sound_codecs`, which also
expands G.711 to 16-bit PCM for the muxer; G.711 is not recorded yet, see ``RECORDED_SOUND``);
other audio codecs are not.

Placing the sound against the pictures: by the source's own clock, each track's RTCP sender
report (:func:`reported_offset`), which is how the camera says its tracks line up. Arrival
times would not do: ffmpeg, for one, packs up to 0.7 s of AAC frames into one RTP packet, so a
packet's first frame arrives hundreds of milliseconds after it was captured.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av

from gateway.protocols.rtp import RtpError, SenderReport, parse_rtcp
from gateway.recording.sound_codecs import SoundError, SoundFormat, sound_format, sound_frames
from gateway.stream.tracks import Track

__all__ = [
    "AacFormat",
    "AudioError",
    "AudioFormat",
    "aac_format",
    "aac_units",
    "add_aac_stream",
    "audio_track",
    "frames_of",
    "report_of",
    "reported_offset",
]

_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000,
          7350)  # fmt: skip
# One silent AAC-LC frame with an ADTS header: only so PyAV has an AAC stream to copy a track
# from; its rate, layout and config are replaced by the camera's own.
_TEMPLATE = bytes((0xFF, 0xF1, 0x50, 0x40, 0x01, 0xFF, 0xFC)) + bytes(8)
# AAC channel configurations 1-7 (0: a program config element, which is not taken).
_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "4.0", 5: "5.0", 6: "5.1", 7: "7.1"}
MAX_AUS = 64  # per packet: 16 bits of AU-headers-length allow more, no camera sends them
_NTP_ONE = 1 << 32
_NTP_MOD = 1 << 64


class AudioError(ValueError):
    """An SDP or payload the recorder cannot take as AAC."""


@dataclass(frozen=True, slots=True)
class AacFormat:
    config: bytes  # the AudioSpecificConfig
    sample_rate: int
    channels: int  # the channel configuration (1-7)
    frame_length: int  # samples per access unit
    size_length: int
    index_length: int
    index_delta_length: int


def _bits(data: bytes, at: int, n: int) -> int:
    value = 0
    for i in range(at, at + n):
        value = (value << 1) | ((data[i >> 3] >> (7 - (i & 7))) & 1)
    return value


def parse_config(config: bytes) -> tuple[int, int, int]:
    """(sample rate, channel configuration, samples per frame) from an AudioSpecificConfig."""
    need = 2
    try:
        at = 5
        obj = _bits(config, 0, 5)
        if obj == 31:
            obj = 32 + _bits(config, 5, 6)
            at = 11
        index = _bits(config, at, 4)
        at += 4
        if index == 15:
            need = 5
            rate = _bits(config, at, 24)
            at += 24
        elif index < len(_RATES):
            rate = _RATES[index]
        else:
            raise AudioError(f"AAC config: sampling frequency index {index}")
        channels = _bits(config, at, 4)
        frame = 960 if obj in (1, 2, 3, 4, 6, 7, 17, 19, 20, 21, 22, 23) and _bits(
            config, at + 4, 1
        ) else 1024  # fmt: skip
    except IndexError:
        raise AudioError(f"AAC config: {len(config)} bytes, at least {need} needed") from None
    if not 0 < rate <= 192_000 or not 0 < channels <= 7:
        raise AudioError(f"AAC config: {rate} Hz, {channels} channels")
    return rate, channels, frame


def aac_format(track: Track) -> AacFormat | None:
    """The AAC format of an ``mpeg4-generic`` audio track in AAC-hbr or AAC-lbr mode; None for
    any other track."""
    if track.media != "audio" or track.codec != "MPEG4-GENERIC":
        return None
    params: dict[str, str] = {}
    for line in track.sdp_lines:
        if line.lower().startswith("a=fmtp:"):
            for item in line.partition(" ")[2].split(";"):
                key, _, value = item.strip().partition("=")
                params[key.strip().lower()] = value.strip()
    if params.get("mode", "").lower() not in ("aac-hbr", "aac-lbr"):
        return None
    try:
        config = bytes.fromhex(params.get("config", ""))
        size, index = int(params.get("sizelength", "")), int(params.get("indexlength", "0"))
        delta = int(params.get("indexdeltalength", "0"))
        rate, channels, frame = parse_config(config)
    except (ValueError, AudioError):
        return None
    if not (1 <= size <= 16 and 0 <= index <= 8 and 0 <= delta <= 8):
        return None
    return AacFormat(config, rate, channels, frame, size, index, delta)


# What a recorded audio track is: AAC (copied), Opus (copied) or G.711 (expanded to 16-bit PCM).
AudioFormat = AacFormat | SoundFormat


# Encodings of sound_format's that are recorded. Not G.711 yet: its 16-bit PCM track ('ipcm') is
# refused by browsers' MSE ("Unsupported audio format 0x6970636d in stsd box", Chromium), and an
# init segment without that track, before fragments that still hold it, fails to parse as well,
# so HLS of the recording's own bytes would lose the camera's pictures too; it is recorded once
# the HLS variant leaves that track out.
RECORDED_SOUND = frozenset({"OPUS"})


def audio_track(tracks: tuple[Track, ...]) -> tuple[Track, AudioFormat] | None:
    """The track a camera's audio is recorded from: its first AAC or Opus track."""
    for t in tracks:
        fmt: AudioFormat | None = aac_format(t)
        if fmt is None and (sound := sound_format(t)) is not None:
            fmt = sound if sound.codec in RECORDED_SOUND else None
        if fmt is not None:
            return t, fmt
    return None


def frames_of(payload: bytes | memoryview, fmt: AudioFormat) -> list[tuple[bytes, int]]:
    """The MP4 samples of one RTP payload, each with the audio samples it lasts; AudioError if
    malformed."""
    if isinstance(fmt, AacFormat):
        return [(au, fmt.frame_length) for au in aac_units(payload, fmt)]
    try:
        return sound_frames(payload, fmt)
    except SoundError as exc:
        raise AudioError(str(exc)) from None


def aac_units(payload: bytes | memoryview, fmt: AacFormat) -> list[bytes]:
    """The access units of one RTP payload (RFC 3640 section 3.2); AudioError if malformed."""
    data = bytes(payload)
    if len(data) < 2:
        raise AudioError("AAC payload shorter than its AU-headers-length")
    header_bits = (data[0] << 8) | data[1]
    start = 2 + (header_bits + 7) // 8
    if header_bits == 0 or start > len(data):
        raise AudioError(f"AAC payload: {header_bits} bits of AU headers in {len(data)} bytes")
    sizes: list[int] = []
    at, end = 16, 16 + header_bits
    first = True
    while at < end:
        width = fmt.size_length + (fmt.index_length if first else fmt.index_delta_length)
        if at + width > end or len(sizes) >= MAX_AUS:
            raise AudioError("AAC payload: a torn AU header")
        sizes.append(_bits(data, at, fmt.size_length))
        at += width
        first = False
    units: list[bytes] = []
    at = start
    for size in sizes:
        if size == 0 or at + size > len(data):
            raise AudioError(f"AAC payload: an AU of {size} bytes where {len(data) - at} remain")
        units.append(data[at : at + size])
        at += size
    return units


def report_of(packet: bytes) -> SenderReport | None:
    """The sender report at the front of an RTCP packet as the hub passes it on (its times on
    the path's output timeline, the same offset for every track of one source); None for
    anything else."""
    try:
        first = parse_rtcp(packet)[0]
    except RtpError:
        return None
    return first if isinstance(first, SenderReport) else None


def _signed(delta: int, mod: int) -> int:
    delta %= mod
    return delta - mod if delta >= mod // 2 else delta


def reported_offset(
    video: SenderReport, video_rtp: int, audio: SenderReport, audio_rtp: int, rate: int
) -> float:
    """Seconds by which the audio sample at RTP time ``audio_rtp`` was captured after the picture
    at ``video_rtp``, by the source's own clock (each track's sender report maps its RTP time to
    the same NTP clock). Both RTP times as sent (32 bits), within hours of their reports."""
    ntp = _signed(audio.ntp_timestamp - video.ntp_timestamp, _NTP_MOD) / _NTP_ONE
    after_audio = _signed(audio_rtp - audio.rtp_timestamp, 1 << 32) / rate
    after_video = _signed(video_rtp - video.rtp_timestamp, 1 << 32) / 90_000
    return ntp + after_audio - after_video


def add_aac_stream(container: Any, fmt: AacFormat) -> Any:
    """An AAC track in an output container, for packets that are already encoded."""
    with av.open(io.BytesIO(_TEMPLATE), format="aac", options={"probesize": "32"}) as tmpl:
        stream: Any = container.add_stream_from_template(tmpl.streams.audio[0])
    ctx = stream.codec_context
    ctx.sample_rate = fmt.sample_rate
    ctx.layout = _LAYOUTS[fmt.channels]
    ctx.extradata = fmt.config
    stream.time_base = Fraction(1, fmt.sample_rate)
    return stream
