"""One playback session's feed: recorded fragments, read off disk in a worker thread, paced
by the recording's own timestamps and the session's Scale, packed into RTP and handed to the
session's private hub path, so what a playback viewer receives goes through the same readers,
masks, flow control and counters as live.

The feed owns one task per PLAY (a seek or a resume cancels the last one and starts again at
the key frame at or before the new instant). It never holds more than the fragment being sent
and the next one, read ahead.

Sound. A recording with an AAC track is played as two tracks on one timeline: each unit's RTP
time counts from the PLAY's first picture at its track's own rate, every packet carries ONVIF's
extension with its capture time, and each track's RTCP sender reports map its RTP time to that
same capture time (NTP), which is how a player lines the tracks up. The path's timeline is told
to pass those NTP times through (it would otherwise put the hub's wall clock there), and its
RTP time still runs on across seeks. Fast forward (Scale > 1) and key frames only send no
sound, as ONVIF says.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar

from gateway.masking.transcoder import h264_track
from gateway.playback.media import (
    AUDIO,
    VIDEO,
    MediaError,
    RecordedFormat,
    RecordedUnit,
    Unreachable,
)
from gateway.playback.recorded import Cache, RecordedSource
from gateway.playback.state import Pacer, PlaybackPosition
from gateway.protocols import h264, h265
from gateway.protocols.onvif_rtp import ReplayExtension, add_replay_extension, ntp_from_datetime
from gateway.protocols.rtp import RtpPacket, SenderReport, build_sender_report
from gateway.protocols.rtsp_replay import FramesMode
from gateway.recording.audio import AacFormat
from gateway.recording.index import Fragment
from gateway.stream.hub import PathStream
from gateway.stream.tracks import Track

__all__ = [
    "PlaybackFeed",
    "aac_packet",
    "audio_track",
    "recorded_track",
    "recorded_tracks",
    "rtp_packets",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
MTU = 1400
PAYLOAD_TYPE = 96
AUDIO_PAYLOAD_TYPE = 97
# Fragments listed per index query; the feed asks again as it runs out.
BATCH = 32
# How long a feed waits at the end of the recording for more of it while its segment is open
# (playing close behind live), between looks.
TAIL_POLL = 0.5
# How long a congested reader (its socket full) is waited for before units are offered anyway
# (the hub then drops to the next key frame and, past its write timeout, disconnects it).
CONGESTION_WAIT = 5.0
# A break between fragments longer than this is a gap: ONVIF's E and D flags mark it.
GAP = timedelta(milliseconds=500)
TOUCHING = timedelta(milliseconds=1)  # fragments this close follow each other
STEP = timedelta(milliseconds=1)  # the least a frame's time moves on from the last one
MAX_STEP = 2.0  # seconds: a longer step between units sent is a gap, not recording served
# Seconds of recording between two sender reports of a track (RFC 3550 asks for about 5 s;
# a player joining or seeking should not wait that long to line the tracks up).
REPORT_EVERY = 1.0
# Audio units read before a PLAY's first picture (a segment's last sound is indexed just
# ahead of the next segment's first key frame) kept until that picture has gone.
MAX_EARLY = 64
_TS_MOD = 1 << 32


def recorded_track(fmt: RecordedFormat) -> Track:
    """The track a player is described: the recording's own parameter sets."""
    if fmt.codec == "H264":
        return h264_track(fmt.sps, fmt.pps)
    vps, sps, pps = fmt.parameter_sets[-3:]
    b64 = [base64.b64encode(n).decode() for n in (vps, sps, pps)]
    return Track(
        index=0,
        media="video",
        codec="H265",
        clock_rate=90000,
        payload_type=PAYLOAD_TYPE,
        sdp_lines=(
            f"a=rtpmap:{PAYLOAD_TYPE} H265/90000",
            f"a=fmtp:{PAYLOAD_TYPE} sprop-vps={b64[0]}; sprop-sps={b64[1]}; sprop-pps={b64[2]}",
        ),
    )


def audio_track(aac: AacFormat, index: int = 1) -> Track:
    """The recorded AAC track as the live path describes a camera's AAC: RFC 3640
    ``mpeg4-generic`` in AAC-hbr mode (one 13-bit AU size and 3-bit index per AU header), the
    AudioSpecificConfig in ``config=``."""
    return Track(
        index=index,
        media="audio",
        codec="MPEG4-GENERIC",
        clock_rate=aac.sample_rate,
        payload_type=AUDIO_PAYLOAD_TYPE,
        sdp_lines=(
            f"a=rtpmap:{AUDIO_PAYLOAD_TYPE} MPEG4-GENERIC/{aac.sample_rate}/{aac.channels}",
            f"a=fmtp:{AUDIO_PAYLOAD_TYPE} profile-level-id=1;mode=AAC-hbr;sizelength=13;"
            f"indexlength=3;indexdeltalength=3; config={aac.config.hex()}",
        ),
    )


def recorded_tracks(fmt: RecordedFormat, *, sound: bool = True) -> tuple[Track, ...]:
    """What a player is described: the pictures and, when the recording has it (and the viewer
    gets it), the sound."""
    video = recorded_track(fmt)
    if fmt.audio is None or not sound:
        return (video,)
    return (video, audio_track(fmt.audio))


def aac_packet(
    au: bytes, *, seq: int, timestamp: int, ssrc: int, replay: ReplayExtension | None = None
) -> bytes:
    """One AAC access unit as one RTP packet (RFC 3640 AAC-hbr: a 16-bit AU-headers-length,
    one AU header of 13 bits of size and 3 of index, then the unit), marker set."""
    if not 0 < len(au) < 1 << 13:
        raise MediaError(f"AAC access unit of {len(au)} bytes")
    payload = (16).to_bytes(2, "big") + (len(au) << 3).to_bytes(2, "big") + au
    data = RtpPacket(
        AUDIO_PAYLOAD_TYPE, seq & 0xFFFF, timestamp, ssrc, payload, marker=True
    ).serialize()
    return add_replay_extension(data, replay) if replay is not None else data


def rtp_packets(
    unit: RecordedUnit,
    codec: str,
    *,
    seq: int,
    timestamp: int,
    ssrc: int,
    replay: ReplayExtension | None = None,
) -> list[bytes]:
    """One access unit as RTP packets (single NAL units and FU-A/FU fragments), the marker on
    the last. With ONVIF's extension on each: its D flag only on the first packet and its E
    flag only on the last, its C flag on every packet of a key frame."""
    pack = h264.packetize if codec == "H264" else h265.packetize
    payloads = [p for nal in unit.nals for p in pack(nal, MTU)]
    out: list[bytes] = []
    n = len(payloads)
    for i, payload in enumerate(payloads):
        data = RtpPacket(
            PAYLOAD_TYPE, (seq + i) & 0xFFFF, timestamp, ssrc, payload, marker=i == n - 1
        ).serialize()
        if replay is not None:
            ext = replace(
                replay,
                discontinuity=replay.discontinuity and i == 0,
                end=replay.end and i == n - 1,
            )
            data = add_replay_extension(data, ext)
        out.append(data)
    return out


class PlaybackFeed:
    """Feeds one session's private hub path from the recording, one PLAY at a time."""

    def __init__(
        self,
        source: RecordedSource,
        stream: PathStream,
        track: Track,
        pacer: Pacer,
        *,
        audio: AacFormat | None = None,
        onvif: bool = False,
        congested: Callable[[], bool] = lambda: False,
        on_end: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.source = source
        self.stream = stream
        self.track = track
        # The sound as the player was described it (None: pictures only); audio units of
        # another format (the camera changed its audio) are left out.
        self.audio = audio
        self.tracks = (track,) if audio is None else (track, audio_track(audio))
        self.pacer = pacer
        self.onvif = onvif
        self.congested = congested
        self.on_end = on_end
        self.clock = clock
        self.sleep = sleep
        self.source_id = f"playback-{random.getrandbits(32):08x}"
        self.ssrc = random.getrandbits(32)
        self.seq = random.getrandbits(16)
        self.audio_ssrc = random.getrandbits(32)
        self.audio_seq = random.getrandbits(16)
        self.task: asyncio.Task[None] | None = None
        # What was sent, for the tests, metering and the session's end audit.
        self.units_sent = 0  # pictures
        self.audio_units_sent = 0
        self.first_sent: datetime | None = None  # this PLAY's first picture
        self.first = asyncio.Event()  # set when this PLAY's first unit has gone out
        self.error: str | None = None
        # Seconds of recording delivered, all PLAYs together (what playback is metered by).
        self.served_seconds = 0.0
        self._prev: datetime | None = None
        # Per track, this PLAY's RTP time: (the capture time it counts from, its RTP time),
        # and the capture time of the track's last sender report.
        self._base: tuple[datetime, list[int]] | None = None
        self._reported: list[datetime | None] = [None, None]
        self._sent = [[0, 0], [0, 0]]  # per track: packets, payload octets (for the reports)
        # Per track, this PLAY's first output (sequence, RTP time) at its first picture's
        # capture time: what RTP-Info names.
        self.start_rtp: list[tuple[int, int]] = []

    def play(self, position: PlaybackPosition) -> None:
        """Start (again) at ``position``: the old PLAY's task is cancelled, the hub path's
        timeline is re-synced (a seek is a pause to the reader, not a jump back) and its GOP
        cache emptied, so a reader attached after this gets the new position's key frame."""
        self.cancel()
        self.stream.attach_source(self.source_id, self.tracks)
        self.first_sent = None
        self.first = asyncio.Event()
        self._prev = None
        self._base = None
        self._reported = [None, None]
        self.start_rtp = []
        self.task = asyncio.get_running_loop().create_task(
            self._run(position), name=f"playback {self.source.camera}"
        )

    def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
        self.stream.detach_source(self.source_id)

    async def _fragments(self, after: datetime, end: datetime | None) -> list[Fragment]:
        return await self.source.run(
            partial(self.source.index.fragments_from, self.source.camera, after, end, limit=BATCH)
        )

    async def _run(self, pos: PlaybackPosition) -> None:
        try:
            await self._feed(pos)
        except asyncio.CancelledError:
            raise
        except MediaError as exc:
            self.error = str(exc)
            log.warning("playback of %s stopped: %s", self.source.camera, exc)
            self._finish()
        except Exception:
            self.error = "internal error"
            log.exception("playback of %s failed", self.source.camera)
            self._finish()

    async def _units(self, pos: PlaybackPosition) -> AsyncIterator[tuple[RecordedUnit, bool, bool]]:
        """The recording from ``pos``: (unit, a gap or seek comes before it, a gap follows it:
        on each track's last unit of the fragment), one fragment read ahead, following a
        recording still being written."""
        cache: Cache = {}
        last: tuple[datetime, str, int] | None = None  # the last fragment read, in index order
        prev_end: datetime | None = None
        ahead: asyncio.Future[list[RecordedUnit]] | None = None
        first = True
        skipped = False  # fragments whose file is not on this node were passed over: a gap
        try:
            while True:
                listed = await self._fragments(prev_end or pos.start, pos.end)
                queue = [f for f in listed if last is None or (f.start, f.segment, f.seq) > last]
                if not queue:
                    if pos.end is not None and prev_end is not None and prev_end >= pos.end:
                        return
                    if not await self.source.run(self.source.still_recording):
                        return
                    await self.sleep(TAIL_POLL)  # close behind live: wait for more
                    continue
                for i, frag in enumerate(queue):
                    last = (frag.start, frag.segment, frag.seq)
                    try:
                        units = await (ahead or self._read(frag, cache))
                    except Unreachable as exc:  # another node's disk: played as a gap
                        if not skipped:
                            log.warning("playback of %s: %s", self.source.camera, exc)
                        skipped, prev_end, ahead = True, frag.end, None
                        continue
                    nxt = queue[i + 1] if i + 1 < len(queue) else None
                    ahead = self._read(nxt, cache) if nxt is not None else None
                    gap_before = (
                        first
                        or skipped
                        or (prev_end is not None and await self._broken(prev_end, frag.start))
                    )
                    skipped = False
                    gap_after = nxt is not None and await self._broken(frag.end, nxt.start)
                    ends = {u.track: j for j, u in enumerate(units)}  # each track's last unit
                    for j, unit in enumerate(units):
                        yield unit, gap_before and j == 0, gap_after and ends[unit.track] == j
                    first = False
                    prev_end = frag.end
        finally:
            if ahead is not None:
                ahead.cancel()

    async def _feed(self, pos: PlaybackPosition) -> None:
        # Sound only at Scale 1 with every frame (ONVIF: fast forward carries no audio).
        sound = self.audio is not None and pos.scale == 1 and pos.frames.mode is FramesMode.ALL
        discontinuity = [False, False]  # per track: the next unit sent carries ONVIF's D
        last: list[datetime | None] = [None, None]
        early: list[tuple[RecordedUnit, bool]] = []  # sound read before the first picture
        async for unit, gap_before, gap_after in self._units(pos):
            track = unit.track
            if track == AUDIO:
                if not sound or unit.aac != self.audio or self.pacer.past_end(unit.captured):
                    continue
            elif self.pacer.past_end(unit.captured):
                break
            before = last[track]
            if before is not None and unit.captured <= before:
                # A recording's fragment times come from its writer's clock and its frames'
                # from the camera's: where they disagree by a few milliseconds, time still only
                # moves forward for the player (RTP time and the NTP extension alike).
                unit = replace(unit, captured=before + STEP)
            last[track] = unit.captured
            if gap_before:
                discontinuity = [True, True]
            if track == VIDEO and not self.pacer.wants(unit.captured, unit.keyframe):
                continue
            if self._base is None:
                if track == AUDIO:
                    if len(early) < MAX_EARLY:
                        early.append((unit, gap_after))
                    continue
                self._start(unit.captured)
            queued = [(unit, gap_after)]
            if early:
                # What was read ahead of this PLAY's first picture follows it, from its instant.
                base = unit.captured
                queued += [(u, e) for u, e in early if u.captured >= base]
                early = []
            for u, end in queued:
                await self._pace(u, pos)
                self._send(u, pos, discontinuity=discontinuity[u.track], end=end)
                discontinuity[u.track] = False
                if not pos.rate_control:
                    await self.sleep(0)  # as fast as the reader takes it, but never hog the loop
        self._finish()

    async def _pace(self, unit: RecordedUnit, pos: PlaybackPosition) -> None:
        now = self.clock()
        # What comes before the asked instant (from its key frame) goes at once.
        due = now if unit.captured < pos.start else self.pacer.due(unit.captured, now)
        if due > now:
            await self.sleep(due - now)
        await self._backpressure()
        if unit.track == VIDEO:
            self.pacer.sent(unit.captured, due, unit.keyframe)

    def _start(self, base: datetime) -> None:
        """This PLAY's first picture: each track's RTP time counts from its capture time, and
        the path's timeline passes the feed's NTP (capture) times through to the players while
        its RTP time runs on from what they already have (``ts_after_gap``: a seek is a pause
        to them, not a jump back)."""
        first = [random.getrandbits(32) for _ in self.tracks]
        self._base = (base, first)
        timeline = self.stream.timeline
        if timeline is None:
            return
        now = time.monotonic()  # the hub's clock, whatever the feed is paced by
        for tl, ts in zip(timeline.tracks, first, strict=False):
            out = tl.ts_after_gap(now)
            tl.ts_offset = (out - ts) % _TS_MOD
            tl.ts_synced = True
            tl.ntp_offset = 0
            # The hub numbers the track's next packet on from its last one.
            self.start_rtp.append(((tl.last_out_seq + 1) & 0xFFFF, out))

    def _rtp_time(self, unit: RecordedUnit) -> int:
        assert self._base is not None
        base, first = self._base
        rate = self.tracks[unit.track].clock_rate
        return (first[unit.track] + round((unit.captured - base).total_seconds() * rate)) % _TS_MOD

    def _report(self, unit: RecordedUnit, ts: int) -> None:
        """A sender report for the unit's track before it when none has gone for a while:
        this RTP time is this capture time."""
        track = unit.track
        reported = self._reported[track]
        if reported is not None and (unit.captured - reported).total_seconds() < REPORT_EVERY:
            return
        self._reported[track] = unit.captured
        packets, octets = self._sent[track]
        ssrc = self.ssrc if track == VIDEO else self.audio_ssrc
        sr = SenderReport(ssrc, ntp_from_datetime(unit.captured), ts, packets, octets)
        self.stream.on_rtcp(track, build_sender_report(sr))

    def _send(
        self, unit: RecordedUnit, pos: PlaybackPosition, *, discontinuity: bool, end: bool
    ) -> None:
        ts = self._rtp_time(unit)
        self._report(unit, ts)
        replay = None
        if self.onvif:
            replay = ReplayExtension(
                ntp_from_datetime(unit.captured),
                clean_point=unit.keyframe or unit.track == AUDIO,  # every AAC frame decodes
                discontinuity=discontinuity,
                end=end,
                cseq=pos.cseq,
            )
        if unit.track == AUDIO:
            packets = [
                aac_packet(
                    unit.nals[0],
                    seq=self.audio_seq,
                    timestamp=ts,
                    ssrc=self.audio_ssrc,
                    replay=replay,
                )
            ]
            self.audio_seq = (self.audio_seq + 1) & 0xFFFF
            self.audio_units_sent += 1
        else:
            packets = rtp_packets(
                unit, self.track.codec, seq=self.seq, timestamp=ts, ssrc=self.ssrc, replay=replay
            )
            self.seq = (self.seq + len(packets)) & 0xFFFF
        counts = self._sent[unit.track]
        for packet in packets:
            counts[0] += 1
            counts[1] += len(packet) - 12
            self.stream.on_rtp(unit.track, packet)
        if unit.track == AUDIO:
            return
        self.units_sent += 1
        # The recording this unit covers: up to the next one sent (a key frame at Scale 4
        # covers its GOP), never across a gap.
        step = (unit.captured - self._prev).total_seconds() if self._prev else unit.duration
        self.served_seconds += step if 0 < step <= MAX_STEP else unit.duration
        self._prev = unit.captured
        if self.first_sent is None:
            self.first_sent = unit.captured
            self.first.set()

    async def _broken(self, end: datetime, start: datetime) -> bool:
        """Whether the recording breaks between two fragments: a jump longer than GAP, or any
        shorter one over which the recorder recorded a gap (a quick restart)."""
        step = start - end
        if step > GAP:
            return True
        if step <= TOUCHING:
            return False
        return await self.source.run(self.source.gap_between, end, start)

    def _read(self, frag: Fragment, cache: Cache) -> asyncio.Future[list[RecordedUnit]]:
        return asyncio.ensure_future(self.source.run(self.source.read, frag, cache))

    async def _backpressure(self) -> None:
        if not self.congested():
            return
        deadline = self.clock() + CONGESTION_WAIT
        while self.congested() and self.clock() < deadline:
            await self.sleep(0.01)

    def _finish(self) -> None:
        self.first.set()  # nothing (more) to send: whoever waits for the first unit goes on
        self.pacer.ended()
        self.on_end()
