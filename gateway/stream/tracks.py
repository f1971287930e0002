"""Tracks: what a path's source carries, derived from its SDP and described again to readers."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from gateway.protocols.sdp import SdpError, SessionDescription, parse_sdp

# Attributes that describe the source's transport or addressing, not the media format: readers
# get our own values for these (control) or none at all.
_DROP_ATTRS = frozenset({"control", "range", "sendonly", "recvonly", "sendrecv", "inactive"})
MAX_TRACKS = 8


@dataclass(frozen=True)
class Track:
    """One media section of a path's source, as readers see it (control ``trackID=<index>``)."""

    index: int
    media: str  # "video", "audio", "application"
    codec: str  # upper-case encoding name, e.g. "H264"
    clock_rate: int
    payload_type: int
    sdp_lines: tuple[str, ...]  # the media section's attribute lines passed through to readers
    control: str | None = None  # the source's own control attribute (for ingest SETUP)

    @property
    def is_video(self) -> bool:
        return self.media == "video"

    def same_format(self, other: Track) -> bool:
        return (self.media, self.codec, self.clock_rate, self.payload_type) == (
            other.media,
            other.codec,
            other.clock_rate,
            other.payload_type,
        )

    def parameter_sets(self) -> tuple[bytes, ...]:
        """The out-of-band parameter sets of an H.264 (SPS, PPS) or H.265 (VPS, SPS, PPS)
        track, from its SDP's fmtp; () when it has none or they do not decode."""
        keys = {
            "H264": ("sprop-parameter-sets",),
            "H265": ("sprop-vps", "sprop-sps", "sprop-pps"),
        }.get(self.codec, ())
        params: dict[str, str] = {}
        for line in self.sdp_lines:
            if line.lower().startswith("a=fmtp:"):
                for item in line.partition(" ")[2].split(";"):
                    key, _, value = item.strip().partition("=")
                    params[key.lower()] = value.strip()
        nals: list[bytes] = []
        for key in keys:
            for item in params.get(key, "").split(","):
                if item.strip():
                    try:
                        nals.append(base64.b64decode(item.strip(), validate=True))
                    except (binascii.Error, ValueError):
                        return ()
        return tuple(n for n in nals if n)


class TrackError(ValueError):
    """The source's SDP cannot be relayed."""


def tracks_from_sdp(
    sdp: str | bytes | SessionDescription,
) -> tuple[tuple[Track, ...], SessionDescription]:
    """The relayable tracks of a source SDP (RTP/AVP media with a payload type)."""
    try:
        sd = sdp if isinstance(sdp, SessionDescription) else parse_sdp(sdp)
    except SdpError as exc:
        raise TrackError(f"bad SDP: {exc}") from None
    tracks: list[Track] = []
    for md in sd.media:
        if len(tracks) >= MAX_TRACKS:
            raise TrackError(f"more than {MAX_TRACKS} media sections")
        if "RTP/AVP" not in md.proto.upper():
            raise TrackError(f"unsupported media protocol {md.proto!r}")
        pt = md.payload_type
        if pt is None:
            raise TrackError(f"media section {md.media!r} has no payload type")
        lines = tuple(
            f"a={k}:{v}" if v is not None else f"a={k}"
            for k, v in md.attributes
            if k.lower() not in _DROP_ATTRS
        )
        tracks.append(
            Track(
                index=len(tracks),
                media=md.media.lower(),
                codec=(md.codec or "").upper(),
                clock_rate=md.clock_rate or 90000,
                payload_type=pt,
                sdp_lines=lines,
                control=md.control,
            )
        )
    if not tracks:
        raise TrackError("no media sections")
    return tuple(tracks), sd


def describe_sdp(tracks: tuple[Track, ...], *, name: str, session_id: int, host: str) -> str:
    """The SDP a reader gets from DESCRIBE: the source's formats, our own control URLs."""
    ip_ver = "IP6" if ":" in host else "IP4"
    lines = [
        "v=0",
        f"o=- {session_id} 1 IN {ip_ver} {host}",
        f"s={(name or 'feedgate').replace(chr(13), ' ').replace(chr(10), ' ')}",
        f"c=IN {ip_ver} {'::' if ip_ver == 'IP6' else '0.0.0.0'}",
        "t=0 0",
        "a=control:*",
        "a=range:npt=now-",
    ]
    for t in tracks:
        lines.append(f"m={t.media} 0 RTP/AVP {t.payload_type}")
        lines.extend(t.sdp_lines)
        lines.append(f"a=control:trackID={t.index}")
    return "\r\n".join(lines) + "\r\n"
