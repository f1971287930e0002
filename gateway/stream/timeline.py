"""A camera path's continuous output timeline: every source's RTP numbering and its RTCP sender
reports mapped onto one output numbering per track, across source restarts. Sans-I/O: the
caller passes ``now`` (monotonic seconds).

Readers keep two things from a path: each track's RTP sequence and timestamp, which must run on
across a camera restart (a gap, not a new stream), and the wall-clock-to-RTP mapping of each
track's last sender report, which is how they place tracks against each other (lip sync) and in
time. A restarted source starts its own numbering and its own clock, so:

- Sequence numbers continue from the last one sent, whatever the new source starts at.
- Timestamps are placed by the new source's first sender report when it arrives before the
  track's first packet (cameras and ffmpeg send one first): the report's time, on the path's
  output clock (and never before the end of the media already sent), is put on the line
  readers already hold for that track. Every track of one
  source shares one wall-clock offset, so the source's own A/V alignment reaches readers, and the
  mapping readers hold stays where it was: no step when the next report comes.
- A track whose first packet comes before any report continues from its last timestamp, moved
  on by the wall-clock gap; its first report is then put on the readers' line where that
  timestamp lies, so that report does not move the mapping either.
- A track whose first packet comes before its own first report but after another track's (a
  UDP source: its RTCP has a socket of its own, so which is read first is chance) is placed
  where that report puts the source's clock now, so it keeps the source's A/V alignment: by
  the gap it was off by as much as the old media ran ahead of its reports (0.5 s for ffmpeg).
- Sender reports carry output NTP times: the source's times moved by that source's offset.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["NTP_UNIX_OFFSET", "PathTimeline", "TrackTimeline", "ntp_from_seconds"]

_SEQ_MOD = 1 << 16
_TS_MOD = 1 << 32
_NTP_MOD = 1 << 64
_NTP_ONE = 1 << 32  # one second in 32.32 fixed point
NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900 (NTP's epoch) to 1970
# A report placing a restarted track further ahead of its last packet than this is not
# believed (a source whose wall clock jumped); the track continues by the gap instead.
_MAX_AHEAD = 60.0
# A restarted source starts at least this long after the last media readers were sent (its
# first packets may be stamped a little before its first report).
_MARGIN = 0.1


def ntp_from_seconds(seconds: float) -> int:
    """Seconds since 1970 as a 64-bit NTP timestamp."""
    return int((seconds + NTP_UNIX_OFFSET) * _NTP_ONE) % _NTP_MOD


def _signed(delta: int, mod: int) -> int:
    delta %= mod
    return delta - mod if delta >= mod // 2 else delta


@dataclass
class TrackTimeline:
    """One track's mapping from the current source's numbering to the output's."""

    rate: int
    ssrc: int = field(default_factory=lambda: random.getrandbits(32))
    seq_offset: int = 0
    ts_offset: int = 0
    seq_synced: bool = False
    ts_synced: bool = False
    ntp_offset: int | None = None  # output NTP - source NTP, set by this source's first report
    last_out_seq: int = field(default_factory=lambda: random.getrandbits(16))
    last_out_ts: int = field(default_factory=lambda: random.getrandbits(32))
    last_seen: float | None = None  # when the last packet of this track went out
    line: tuple[int, int] | None = None  # (output NTP, output RTP) of the last report sent

    def restart(self) -> None:
        self.seq_synced = self.ts_synced = False
        self.ntp_offset = None

    def ts_after_gap(self, now: float) -> int:
        gap = now - self.last_seen if self.last_seen is not None else 0.0
        return (self.last_out_ts + max(1, int(gap * self.rate))) % _TS_MOD

    def ts_on_line(self, ntp: int) -> int | None:
        """The output timestamp readers' last report puts at NTP time ``ntp``."""
        if self.line is None:
            return None
        line_ntp, line_ts = self.line
        return (line_ts + round(_signed(ntp - line_ntp, _NTP_MOD) * self.rate / _NTP_ONE)) % (
            _TS_MOD
        )

    def ntp_on_line(self, ts: int) -> int | None:
        """The output NTP time readers' last report puts at output timestamp ``ts``."""
        if self.line is None:
            return None
        line_ntp, line_ts = self.line
        return (line_ntp + round(_signed(ts - line_ts, _TS_MOD) * _NTP_ONE / self.rate)) % _NTP_MOD


class PathTimeline:
    """The output numbering of every track of one path. ``ntp_base`` is the output wall clock at
    monotonic time 0, as a 64-bit NTP timestamp (the hub passes the real clock)."""

    def __init__(self, rates: Iterable[int], *, ntp_base: int) -> None:
        self.tracks = [TrackTimeline(rate or 90000) for rate in rates]
        self.ntp_base = ntp_base
        self._source_ntp_offset: int | None = None
        # (output NTP, our monotonic now) of the current source's first report: its clock.
        self._source_anchor: tuple[int, float] | None = None

    def __len__(self) -> int:
        return len(self.tracks)

    def output_ntp(self, now: float) -> int:
        return (self.ntp_base + int(now * _NTP_ONE)) % _NTP_MOD

    def restart(self) -> None:
        """A new source with the same tracks: its numbering is mapped afresh."""
        self._source_ntp_offset = None
        self._source_anchor = None
        for track in self.tracks:
            track.restart()

    def rtp(self, track: int, seq: int, ts: int, now: float) -> tuple[int, int]:
        """Output (sequence, timestamp) of one source packet of ``track``."""
        tl = self.tracks[track]
        first = not tl.seq_synced
        if first:
            tl.seq_offset = (tl.last_out_seq + 1 - seq) % _SEQ_MOD
            tl.seq_synced = True
        if not tl.ts_synced:
            if self._source_anchor is not None:
                # Another track's report came first: this packet is the source's "now".
                anchor_ntp, anchor_now = self._source_anchor
                ntp = (anchor_ntp + int((now - anchor_now) * _NTP_ONE)) % _NTP_MOD
                tl.ts_offset = (self._placed(tl, ntp, now) - ts) % _TS_MOD
            else:
                tl.ts_offset = (tl.ts_after_gap(now) - ts) % _TS_MOD
            tl.ts_synced = True
        out_ts = (ts + tl.ts_offset) % _TS_MOD
        if first and tl.last_seen is not None:
            behind = _signed(tl.last_out_ts - out_ts, _TS_MOD)
            if behind >= 0 and tl.ntp_offset is not None:
                # The new source stamps its first packet before the media readers already
                # have (its report said otherwise): move this track on along the line its
                # report gave readers, timestamps and reports alike, so it never goes back.
                shift = behind + max(1, tl.rate // 100)
                tl.ts_offset = (tl.ts_offset + shift) % _TS_MOD
                tl.ntp_offset = (tl.ntp_offset + shift * _NTP_ONE // tl.rate) % _NTP_MOD
                out_ts = (out_ts + shift) % _TS_MOD
        out_seq = (seq + tl.seq_offset) % _SEQ_MOD
        tl.last_out_seq = out_seq
        tl.last_out_ts = out_ts
        tl.last_seen = now
        return out_seq, out_ts

    def shift_seq(self, track: int, n: int) -> None:
        """``n`` packets of our own were put into ``track`` before the last one mapped."""
        tl = self.tracks[track]
        tl.seq_offset = (tl.seq_offset + n) % _SEQ_MOD
        tl.last_out_seq = (tl.last_out_seq + n) % _SEQ_MOD

    def sender_report(self, track: int, ntp: int, ts: int, now: float) -> tuple[int, int]:
        """Output (NTP, RTP timestamp) of one source sender report of ``track``."""
        tl = self.tracks[track]
        if tl.ntp_offset is None:
            if self._source_ntp_offset is None:
                # The report's time is "now" at the source: that is our output clock's now,
                # unless the last source's media ran ahead of its own reports' clock, in which
                # case the new source starts where that media ended, on every track alike.
                start = self.output_ntp(now)
                end = self._media_end()
                if end is not None and _signed(end - start, _NTP_MOD) > 0:
                    start = end
                self._source_ntp_offset = (start - ntp) % _NTP_MOD
                self._source_anchor = (start, now)
            wanted_ntp = (ntp + self._source_ntp_offset) % _NTP_MOD
            if not tl.ts_synced:
                tl.ts_offset = (self._placed(tl, wanted_ntp, now) - ts) % _TS_MOD
                tl.ts_synced = True
            out_ts = (ts + tl.ts_offset) % _TS_MOD
            out_ntp = tl.ntp_on_line(out_ts)
            tl.ntp_offset = ((wanted_ntp if out_ntp is None else out_ntp) - ntp) % _NTP_MOD
        out_ntp = (ntp + tl.ntp_offset) % _NTP_MOD
        out_ts = (ts + tl.ts_offset) % _TS_MOD
        tl.line = (out_ntp, out_ts)
        return out_ntp, out_ts

    def _media_end(self) -> int | None:
        """The output NTP time, on readers' lines, just after the last packet of any track."""
        ends = []
        for tl in self.tracks:
            if tl.last_seen is not None and (end := tl.ntp_on_line(tl.last_out_ts)) is not None:
                ends.append(end)
        if not ends:
            return None
        latest = ends[0]
        for end in ends[1:]:
            if _signed(end - latest, _NTP_MOD) > 0:
                latest = end
        return (latest + int(_MARGIN * _NTP_ONE)) % _NTP_MOD

    def _placed(self, tl: TrackTimeline, ntp: int, now: float) -> int:
        """Where a restarted track's first report goes: on the readers' line if that moves
        forward from the last packet sent, else on by the wall-clock gap."""
        on_line = tl.ts_on_line(ntp)
        if on_line is not None and tl.last_seen is not None:
            ahead = _signed(on_line - tl.last_out_ts, _TS_MOD)
            if 0 < ahead <= _MAX_AHEAD * tl.rate:
                return on_line
        return tl.ts_after_gap(now)
