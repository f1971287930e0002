"""Fragmentation-unit reassembly shared by H.264 (RFC 6184 FU-A/FU-B) and H.265 (RFC 7798 FU).

Both codecs split one NAL unit over packets the same way: a start fragment carrying the inner
NAL type, continuations, and an end fragment, with nothing else in between. Only the byte
layout of the FU header differs, so each codec parses its header and this module keeps the one
state machine (and its refusals) they share.
"""

from __future__ import annotations

__all__ = ["FragmentAssembler", "NalError", "fragment"]


class NalError(ValueError):
    """Inconsistent or truncated NAL data that cannot be reassembled or parsed."""


class FragmentAssembler:
    """Joins one access unit's fragments back into NAL units, refusing inconsistent runs."""

    __slots__ = ("_parts", "_type")

    def __init__(self) -> None:
        self._parts: list[bytes] | None = None
        self._type = -1

    def feed(
        self, start: bool, end: bool, nal_type: int, header: bytes, body: bytes
    ) -> bytes | None:
        """One fragment (``header`` is the rebuilt NAL header, used on a start fragment).
        Returns the whole NAL unit on its end fragment, else None."""
        parts = self._parts
        if start:
            if parts is not None:
                raise NalError("FU start while a previous fragment is incomplete")
            parts = self._parts = [header, body]
            self._type = nal_type
        else:
            if parts is None:
                raise NalError("FU continuation without a start fragment")
            if nal_type != self._type:
                raise NalError("FU fragments disagree on NAL unit type")
            parts.append(body)
        if end:
            self._parts = None
            return b"".join(parts)
        return None

    def interrupted(self) -> None:
        """A packet that is not a fragment arrived: it must not split a NAL unit."""
        if self._parts is not None:
            raise NalError("FU interrupted by another packet before its end fragment")

    def finish(self) -> None:
        """The access unit ended: no fragment may be left open."""
        if self._parts is not None:
            raise NalError("access unit ends inside a fragmented NAL unit")


def fragment(prefix: bytes, nal_type: int, body: memoryview, chunk: int) -> list[bytes]:
    """FU payloads carrying ``body`` (the NAL unit without its header) ``chunk`` bytes at a
    time: each is ``prefix`` (the codec's payload header), the FU header byte, then data."""
    count = (len(body) + chunk - 1) // chunk
    out = []
    for i in range(count):
        fu = nal_type | (0x80 if i == 0 else 0) | (0x40 if i == count - 1 else 0)
        out.append(prefix + bytes((fu,)) + body[i * chunk : (i + 1) * chunk])
    return out
