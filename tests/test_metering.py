"""The meter's clock: intervals, pauses and the final report, against a recording sink."""

from __future__ import annotations

import asyncio
import time

from billing.model import UsageEvent
from gateway.metering import UsageMeter
from gateway.stream.hub import Reader


class RecordingSink:
    """Keeps what the meter emits (the UsageSink interface is this one method)."""

    def __init__(self) -> None:
        self.events: list[UsageEvent] = []

    def emit(self, event: UsageEvent) -> None:
        self.events.append(event)


def _start(meter: UsageMeter, reader: Reader, since: float | None = None) -> None:
    meter.start(
        session_id="s1",
        tenant="police",
        principal="p",
        camera="cam",
        camera_owner="council",
        variant="unmasked",
        reader=reader,
        since=since,
    )


async def test_intervals_are_dense_and_add_up_to_the_bytes_sent() -> None:
    sink = RecordingSink()
    meter = UsageMeter(sink, interval=0.05)
    reader = Reader(channels=(0,))
    _start(meter, reader)
    for _ in range(5):
        reader.bytes_sent += 1000
        await asyncio.sleep(0.03)  # the session runs; the meter reports on its own clock
    meter.end("s1")
    await meter.stop()
    assert [e.seq for e in sink.events] == list(range(len(sink.events)))
    assert sum(e.bytes_sent for e in sink.events) == 5000
    assert sink.events[-1].final and len({e.event_id for e in sink.events}) == len(sink.events)
    # Consecutive intervals meet: no time is lost or counted twice between reports.
    for a, b in zip(sink.events, sink.events[1:], strict=False):
        assert a.end == b.start


async def test_a_paused_session_accrues_no_viewing_time() -> None:
    sink = RecordingSink()
    meter = UsageMeter(sink, interval=10)
    reader = Reader(channels=(0,))
    _start(meter, reader)
    await asyncio.sleep(0.2)
    meter.pause("s1")
    paused_at = sum(e.duration_ms for e in sink.events)
    await asyncio.sleep(0.3)  # paused: this time is not viewing
    meter.attach_reader("s1", reader)  # PLAY again
    await asyncio.sleep(0.1)
    meter.end("s1")
    total = sum(e.duration_ms for e in sink.events)
    assert 150 <= paused_at <= 400
    assert total - paused_at < 250, (paused_at, total)  # the 300 ms pause is not in it
    await meter.stop()


async def test_a_session_is_metered_from_the_recorded_start_of_it() -> None:
    """An RTSP reader exists only once the PLAY reply is out, which on a loaded machine is
    milliseconds after the session's start was audited. The meter takes the audited instant,
    so the seconds billed and the seconds the audited end states are the same span (the
    billing end-to-end test saw them 14 ms apart)."""
    sink = RecordingSink()
    meter = UsageMeter(sink, interval=10)
    reader = Reader(channels=(0,))
    recorded = time.monotonic() - 0.5  # the start was recorded half a second ago
    _start(meter, reader, since=recorded)
    meter.end("s1")
    ended = time.monotonic()
    await meter.stop()
    (event,) = sink.events
    assert abs(event.duration_ms - (ended - recorded) * 1000) <= 2
    assert (event.end - event.start).total_seconds() * 1000 == event.duration_ms
