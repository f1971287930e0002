"""The ONVIF replay RTP header extension (ONVIF Streaming Specification §6.3), sans-I/O.

Every RTP packet of an ONVIF replay carries, as its RFC 3550 header extension::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |            0xABAC             |          length = 3           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                  NTP timestamp (seconds since 1900)           |
    |                  NTP timestamp (fraction)                     |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |C|E|D|T|  mbz  |     CSeq      |            padding            |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

The NTP time is when the frame was captured (the recording's wall clock). C marks a clean point
(the packets of a key frame), E the last packet of a contiguous stretch (a gap follows), D the
first packet after a discontinuity (a gap or a seek), T the last packet of the requested range.
CSeq is the low byte of the PLAY request that asked for this media, so a client can tell the old
range's packets from the new one's after a seek.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.protocols.rtp import RtpError

__all__ = [
    "NTP_EPOCH",
    "ONVIF_REPLAY_PROFILE",
    "ReplayExtension",
    "add_replay_extension",
    "datetime_from_ntp",
    "ntp_from_datetime",
    "read_replay_extension",
]

ONVIF_REPLAY_PROFILE = 0xABAC
NTP_EPOCH = datetime(1900, 1, 1, tzinfo=UTC)
_WORDS = 3
_EXT = struct.Struct("!HHQBBH")  # profile, length, NTP, flags, CSeq, padding
_FLAG_C, _FLAG_E, _FLAG_D, _FLAG_T = 0x80, 0x40, 0x20, 0x10
_NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900 to 1970


def ntp_from_datetime(when: datetime) -> int:
    """A 64-bit NTP timestamp (32.32 fixed point since 1900) for an aware datetime."""
    delta = when.astimezone(UTC) - NTP_EPOCH
    micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    if not 0 <= micros < (1 << 32) * 1_000_000:
        raise ValueError("instant outside the NTP era 0 (1900-2036)")
    seconds, rest = divmod(micros, 1_000_000)
    # Round to the nearest fraction so a round trip through datetime_from_ntp is exact.
    return (seconds << 32) | ((rest << 32) + 500_000) // 1_000_000


def datetime_from_ntp(ntp: int) -> datetime:
    seconds, fraction = ntp >> 32, ntp & 0xFFFFFFFF
    micros = (fraction * 1_000_000 + (1 << 31)) >> 32
    return NTP_EPOCH + timedelta(seconds=seconds, microseconds=micros)


@dataclass(frozen=True, slots=True)
class ReplayExtension:
    ntp: int
    clean_point: bool = False
    end: bool = False
    discontinuity: bool = False
    terminal: bool = False
    cseq: int = 0

    @property
    def captured(self) -> datetime:
        return datetime_from_ntp(self.ntp)

    def pack(self) -> bytes:
        """The extension as it sits in the packet: profile, length and the three words."""
        if not 0 <= self.ntp < 1 << 64:
            raise RtpError("NTP timestamp out of range")
        flags = (
            (_FLAG_C if self.clean_point else 0)
            | (_FLAG_E if self.end else 0)
            | (_FLAG_D if self.discontinuity else 0)
            | (_FLAG_T if self.terminal else 0)
        )
        return _EXT.pack(ONVIF_REPLAY_PROFILE, _WORDS, self.ntp, flags, self.cseq & 0xFF, 0)

    @classmethod
    def unpack(cls, profile: int, data: bytes | memoryview) -> ReplayExtension:
        """From an RTP extension's profile and data (as :class:`~gateway.protocols.rtp.RtpPacket`
        keeps them). Words after the first three (other extensions) are ignored."""
        if profile != ONVIF_REPLAY_PROFILE:
            raise RtpError(f"not the ONVIF replay extension: 0x{profile:04X}")
        if len(data) < 4 * _WORDS:
            raise RtpError("ONVIF replay extension shorter than 3 words")
        ntp, flags, cseq, _ = struct.unpack_from("!QBBH", data, 0)
        return cls(
            ntp=ntp,
            clean_point=bool(flags & _FLAG_C),
            end=bool(flags & _FLAG_E),
            discontinuity=bool(flags & _FLAG_D),
            terminal=bool(flags & _FLAG_T),
            cseq=cseq,
        )


def _header_length(packet: bytes | bytearray | memoryview) -> int:
    """The fixed header and CSRCs, checked against the packet's length."""
    if len(packet) < 12:
        raise RtpError("RTP packet shorter than its header")
    if packet[0] >> 6 != 2:
        raise RtpError("not RTP version 2")
    fixed = 12 + 4 * (packet[0] & 0x0F)
    if len(packet) < fixed:
        raise RtpError("RTP packet shorter than its CSRC list")
    return fixed


def add_replay_extension(packet: bytes | bytearray | memoryview, ext: ReplayExtension) -> bytes:
    """The packet with ``ext`` as its header extension, in one copy. An extension the packet
    already had is replaced: RTP allows one, and a replay's must be ONVIF's."""
    fixed = _header_length(packet)
    rest = fixed
    if packet[0] & 0x10:
        if len(packet) < fixed + 4:
            raise RtpError("RTP extension header truncated")
        words = struct.unpack_from("!H", packet, fixed + 2)[0]
        rest = fixed + 4 + 4 * words
        if len(packet) < rest:
            raise RtpError("RTP extension truncated")
    head = bytearray(packet[:fixed])
    head[0] |= 0x10
    return b"".join((head, ext.pack(), bytes(packet[rest:])))


def read_replay_extension(packet: bytes | bytearray | memoryview) -> ReplayExtension | None:
    """The ONVIF replay extension of a packet, or None when it has none (or another one)."""
    fixed = _header_length(packet)
    if not packet[0] & 0x10:
        return None
    if len(packet) < fixed + 4:
        raise RtpError("RTP extension header truncated")
    profile, words = struct.unpack_from("!HH", packet, fixed)
    if len(packet) < fixed + 4 + 4 * words:
        raise RtpError("RTP extension truncated")
    if profile != ONVIF_REPLAY_PROFILE:
        return None
    data = memoryview(bytes(packet))[fixed + 4 : fixed + 4 + 4 * words]
    return ReplayExtension.unpack(profile, data)
