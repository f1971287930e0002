"""The recorder in ``/metrics`` (``feedgate_recording_*``), read at scrape time."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gateway.recording.disk import Pressure
from gateway.recording.service import Recorder

_PRESSURE = {Pressure.OK: 0, Pressure.LOW: 1, Pressure.CRITICAL: 2}


def recording_families(rec: Recorder) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
    state = rec.state
    yield GaugeMetricFamily(
        "feedgate_recording_disk_state",
        "Recording disk: 0 above the low-water mark, 1 below it (deleting), 2 below critical",
        value=_PRESSURE[state.pressure],
    )
    yield GaugeMetricFamily(
        "feedgate_recording_stopped",
        "1 while recording is stopped because free space is below the critical mark",
        value=1 if state.stopped_for_disk else 0,
    )
    if state.space is not None:
        yield GaugeMetricFamily(
            "feedgate_recording_free_bytes", "Free bytes on the recording disk",
            value=state.space.free,
        )  # fmt: skip
    yield GaugeMetricFamily(
        "feedgate_recording_queued_bytes", "Bytes of access units waiting for the writers",
        value=rec.queued_bytes(),
    )  # fmt: skip
    deleted = CounterMetricFamily(
        "feedgate_recording_deleted_segments", "Segments deleted", labels=["reason"]
    )
    deleted.add_metric(["retention"], rec.housekeeper.deleted_retention)
    deleted.add_metric(["disk_pressure"], rec.housekeeper.deleted_pressure)
    yield deleted
    labels = ["camera"]
    fams = {
        "bytes_in": CounterMetricFamily(
            "feedgate_recording_bytes_received", "RTP bytes handed to the writer", labels=labels
        ),
        "bytes_written": CounterMetricFamily(
            "feedgate_recording_bytes_written", "Bytes written to segment files", labels=labels
        ),
        "fragments": CounterMetricFamily(
            "feedgate_recording_fragments", "Fragments written and indexed", labels=labels
        ),
        "segments": CounterMetricFamily(
            "feedgate_recording_segments", "Segment files started", labels=labels
        ),
        "gaps": CounterMetricFamily(
            "feedgate_recording_gaps", "Gaps recorded in the index", labels=labels
        ),
        "write_errors": CounterMetricFamily(
            "feedgate_recording_write_errors", "Segment writes that failed", labels=labels
        ),
        "audio_units": CounterMetricFamily(
            "feedgate_recording_audio_units", "AAC access units recorded", labels=labels
        ),
        "bad_audio": CounterMetricFamily(
            "feedgate_recording_bad_audio_packets",
            "Audio packets refused as not the AAC their SDP describes",
            labels=labels,
        ),
    }
    dropped = CounterMetricFamily(
        "feedgate_recording_dropped_units",
        "Access units not recorded (writers behind, or waiting for a keyframe)",
        labels=labels,
    )
    retention = GaugeMetricFamily(
        "feedgate_recording_retention_days", "Retention applied to the camera's footage",
        labels=["camera", "source"],
    )  # fmt: skip
    counters = rec.counters()
    loop_drops = rec.dropped()
    for camera in rec.recorded:
        c = counters.get(camera)
        for key, fam in fams.items():
            fam.add_metric([camera], getattr(c, key) if c is not None else 0)
        dropped.add_metric(
            [camera], loop_drops.get(camera, 0) + (c.units_dropped if c is not None else 0)
        )
        applied = rec.retention_cached(camera)
        if applied is not None:
            retention.add_metric([camera, applied.source], applied.days)
    yield from fams.values()
    yield dropped
    yield retention
