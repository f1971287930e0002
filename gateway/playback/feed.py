"""One playback session's feed: recorded fragments, read off disk in a worker thread, paced
by the recording's own timestamps and the session's Scale, packed into RTP and handed to the
session's private hub path, so what a playback viewer receives goes through the same readers,
masks, flow control and counters as live.

The feed owns one task per PLAY (a seek or a resume cancels the last one and starts again at
the key frame at or before the new instant). It never holds more than the fragment being sent
and the next one, read ahead.
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
    MediaError,
    RecordedFormat,
    RecordedUnit,
    Unreachable,
)
from gateway.playback.recorded import Cache, RecordedSource
from gateway.playback.state import Pacer, PlaybackPosition
from gateway.protocols import h264, h265
from gateway.protocols.onvif_rtp import ReplayExtension, add_replay_extension, ntp_from_datetime
from gateway.protocols.rtp import RtpPacket
from gateway.recording.index import Fragment
from gateway.stream.hub import PathStream
from gateway.stream.tracks import Track

__all__ = ["PlaybackFeed", "recorded_track", "rtp_packets"]

log = logging.getLogger(__name__)

T = TypeVar("T")
MTU = 1400
PAYLOAD_TYPE = 96
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
        onvif: bool = False,
        congested: Callable[[], bool] = lambda: False,
        on_end: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.source = source
        self.stream = stream
        self.track = track
        self.pacer = pacer
        self.onvif = onvif
        self.congested = congested
        self.on_end = on_end
        self.clock = clock
        self.sleep = sleep
        self.source_id = f"playback-{random.getrandbits(32):08x}"
        self.ssrc = random.getrandbits(32)
        self.seq = random.getrandbits(16)
        self.task: asyncio.Task[None] | None = None
        # What was sent, for the tests, metering and the session's end audit.
        self.units_sent = 0
        self.first_sent: datetime | None = None
        self.first = asyncio.Event()  # set when this PLAY's first unit has gone out
        self.error: str | None = None
        # Seconds of recording delivered, all PLAYs together (what playback is metered by).
        self.served_seconds = 0.0
        self._prev: datetime | None = None

    def play(self, position: PlaybackPosition) -> None:
        """Start (again) at ``position``: the old PLAY's task is cancelled, the hub path's
        timeline is re-synced (a seek is a pause to the reader, not a jump back) and its GOP
        cache emptied, so a reader attached after this gets the new position's key frame."""
        self.cancel()
        self.stream.attach_source(self.source_id, (self.track,))
        self.first_sent = None
        self.first = asyncio.Event()
        self._prev = None
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
        """The recording from ``pos``: (unit, a gap or seek comes before it, a gap follows it),
        one fragment read ahead, following a recording still being written."""
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
                    for j, unit in enumerate(units):
                        yield unit, gap_before and j == 0, gap_after and j == len(units) - 1
                    first = False
                    prev_end = frag.end
        finally:
            if ahead is not None:
                ahead.cancel()

    async def _feed(self, pos: PlaybackPosition) -> None:
        base_capture: datetime | None = None
        base_ts = random.getrandbits(32)
        discontinuity = False
        last: datetime | None = None
        async for unit, gap_before, gap_after in self._units(pos):
            if self.pacer.past_end(unit.captured):
                break
            if last is not None and unit.captured <= last:
                # A recording's fragment times come from its writer's clock and its frames'
                # from the camera's: where they disagree by a few milliseconds, time still only
                # moves forward for the player (RTP time and the NTP extension alike).
                unit = replace(unit, captured=last + STEP)
            last = unit.captured
            discontinuity = discontinuity or gap_before
            if not self.pacer.wants(unit.captured, unit.keyframe):
                continue
            if base_capture is None:
                base_capture = unit.captured
            now = self.clock()
            # What comes before the asked instant (from its key frame) goes at once.
            due = now if unit.captured < pos.start else self.pacer.due(unit.captured, now)
            if due > now:
                await self.sleep(due - now)
            await self._backpressure()
            offset = (unit.captured - base_capture).total_seconds()
            ts = (base_ts + round(offset * self.track.clock_rate)) & 0xFFFFFFFF
            self._send(unit, ts, pos, discontinuity=discontinuity, end=gap_after)
            discontinuity = False
            self.pacer.sent(unit.captured, due, unit.keyframe)
            if not pos.rate_control:
                await self.sleep(0)  # as fast as the reader takes it, but never hog the loop
        self._finish()

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

    def _send(
        self,
        unit: RecordedUnit,
        ts: int,
        pos: PlaybackPosition,
        *,
        discontinuity: bool,
        end: bool,
    ) -> None:
        replay = None
        if self.onvif:
            replay = ReplayExtension(
                ntp_from_datetime(unit.captured),
                clean_point=unit.keyframe,
                discontinuity=discontinuity,
                end=end,
                cseq=pos.cseq,
            )
        packets = rtp_packets(
            unit,
            self.track.codec,
            seq=self.seq,
            timestamp=ts,
            ssrc=self.ssrc,
            replay=replay,
        )
        self.seq = (self.seq + len(packets)) & 0xFFFF
        for packet in packets:
            self.stream.on_rtp(0, packet)
        self.units_sent += 1
        # The recording this unit covers: up to the next one sent (a key frame at Scale 4
        # covers its GOP), never across a gap.
        step = (unit.captured - self._prev).total_seconds() if self._prev else unit.duration
        self.served_seconds += step if 0 < step <= MAX_STEP else unit.duration
        self._prev = unit.captured
        if self.first_sent is None:
            self.first_sent = unit.captured
            self.first.set()

    def _finish(self) -> None:
        self.first.set()  # nothing (more) to send: whoever waits for the first unit goes on
        self.pacer.ended()
        self.on_end()
