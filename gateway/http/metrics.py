"""Prometheus ``/metrics``: the hub's and sessions' counters read at scrape time."""

from __future__ import annotations

import collections
import logging
import ssl
import time
from collections.abc import Iterable
from dataclasses import asdict

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.core import Gateway

log = logging.getLogger(__name__)


class _GatewayCollector(Collector):
    """Reads the hub's counters at scrape time, so the packet path pays nothing for metrics."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        gw = self.gateway
        labels = ["path"]
        fams: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "bytes_received": CounterMetricFamily(
                "feedgate_bytes_received", "RTP bytes received from the source", labels=labels
            ),
            "packets_received": CounterMetricFamily(
                "feedgate_packets_received", "RTP packets received from the source", labels=labels
            ),
            "bytes_sent": CounterMetricFamily(
                "feedgate_bytes_sent", "Bytes written to readers", labels=labels
            ),
            "packets_sent": CounterMetricFamily(
                "feedgate_packets_sent", "RTP/RTCP packets written to readers", labels=labels
            ),
            "dropped_packets": CounterMetricFamily(
                "feedgate_dropped_packets",
                "Packets not sent to slow readers (skipped to the next keyframe)",
                labels=labels,
            ),
            "dropped_frames": CounterMetricFamily(
                "feedgate_dropped_frames", "Access units not sent to slow readers", labels=labels
            ),
            "readers_kicked": CounterMetricFamily(
                "feedgate_readers_disconnected",
                "Readers disconnected by the hub (write timeout, format change)",
                labels=labels,
            ),
            "restarts": CounterMetricFamily(
                "feedgate_source_restarts", "Times the source came back", labels=labels
            ),
            "bad": CounterMetricFamily(
                "feedgate_bad_packets", "Malformed packets from the source", labels=labels
            ),
            "reordered": CounterMetricFamily(
                "feedgate_reordered_packets",
                "UDP source packets that arrived ahead of a gap and were put back in order",
                labels=labels,
            ),
            "late": CounterMetricFamily(
                "feedgate_late_packets",
                "UDP source packets that arrived after the reorder window (dropped)",
                labels=labels,
            ),
            "lost": CounterMetricFamily(
                "feedgate_lost_packets",
                "UDP source sequence numbers that never arrived within the reorder window",
                labels=labels,
            ),
            "stalled": GaugeMetricFamily(
                "feedgate_source_stalled",
                "1 while the camera sends no media (stalled; readers stay connected)",
                labels=labels,
            ),
            "stalls": CounterMetricFamily(
                "feedgate_source_stalls", "Times the camera's media stalled", labels=labels
            ),
            "silence": GaugeMetricFamily(
                "feedgate_source_silence_seconds",
                "Seconds since the camera's last packet",
                labels=labels,
            ),
            "readers": GaugeMetricFamily("feedgate_readers", "Readers playing", labels=labels),
            "up": GaugeMetricFamily("feedgate_source_up", "1 if the source is live", labels=labels),
            "gop": GaugeMetricFamily(
                "feedgate_gop_cache_bytes", "Bytes in the GOP cache", labels=labels
            ),
        }
        peers = gw.peer_stats()
        # Readers and bytes out are summed over all workers; what comes in is the primary's
        # own (the secondaries' intake is the primary's internal fan-out, not the camera's).
        out_keys = (
            "bytes_out",
            "packets_out",
            "packets_dropped",
            "frames_dropped",
            "readers_dropped",
            "readers",
        )
        now = time.monotonic()
        for name, stream in gw.hub.paths.items():
            c = {**asdict(stream.counters), "readers": len(stream.readers)}
            for peer in peers:
                theirs = peer.get("paths", {}).get(name, {})
                for key in out_keys:
                    c[key] += int(theirs.get(key, 0))
            fams["bytes_received"].add_metric([name], c["bytes_in"])
            fams["packets_received"].add_metric([name], c["packets_in"])
            fams["bytes_sent"].add_metric([name], c["bytes_out"])
            fams["packets_sent"].add_metric([name], c["packets_out"])
            fams["dropped_packets"].add_metric([name], c["packets_dropped"])
            fams["dropped_frames"].add_metric([name], c["frames_dropped"])
            fams["readers_kicked"].add_metric([name], c["readers_dropped"])
            fams["restarts"].add_metric([name], c["source_restarts"])
            fams["bad"].add_metric([name], c["bad_packets"])
            fams["reordered"].add_metric([name], stream.reorder.reordered)
            fams["late"].add_metric([name], stream.reorder.late)
            fams["lost"].add_metric([name], stream.reorder.lost)
            fams["stalled"].add_metric([name], 1 if stream.stall.state.value == "stalled" else 0)
            fams["stalls"].add_metric([name], stream.stall.stalls)
            fams["silence"].add_metric([name], round(stream.stall.silence(now), 3))
            fams["readers"].add_metric([name], c["readers"])
            fams["up"].add_metric([name], 1 if stream.has_source else 0)
            fams["gop"].add_metric([name], stream.gop_cached_bytes)
        yield from fams.values()
        yield GaugeMetricFamily(
            "feedgate_rtsp_connections",
            "Open RTSP connections",
            value=len(gw.rtsp.connections) + sum(p.get("connections", 0) for p in peers),
        )
        yield GaugeMetricFamily(
            "feedgate_rtsp_sessions",
            "Open RTSP sessions",
            value=len(gw.rtsp.sessions) + sum(p.get("sessions", 0) for p in peers),
        )
        yield GaugeMetricFamily(
            "feedgate_workers", "Worker processes reporting", value=1 + len(peers)
        )
        events: collections.Counter[str] = collections.Counter(gw.rtsp.counters)
        for peer in peers:
            events.update({k: int(v) for k, v in peer.get("events", {}).items()})
        errors = CounterMetricFamily(
            "feedgate_rtsp_events", "RTSP server events by kind", labels=["event"]
        )
        for key, value in sorted(events.items()):
            errors.add_metric([key], value)
        yield errors
        if gw.webrtc is not None:
            yield from _webrtc_families(gw.webrtc.stats())
        if gw.recorder is not None:
            from gateway.recording.metrics import recording_families

            yield from recording_families(gw.recorder)
        masked_hls = gw.playback.masked_hls if gw.playback is not None else None
        if masked_hls is not None:
            yield from masked_hls.families()
        worst, window = gw.loopwatch.read()
        lag = GaugeMetricFamily(
            "feedgate_event_loop_lag_seconds",
            "How late the event loop woke a 100 ms ticker: worst since start, since last scrape",
            labels=["over"],
        )
        lag.add_metric(["start"], worst)
        lag.add_metric(["scrape"], window)
        yield lag
        yield GaugeMetricFamily(
            "feedgate_asyncio_tasks",
            "Tasks on this process's event loop",
            value=gw.loopwatch.tasks(),
        )


def _webrtc_families(stats: dict[str, object]) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
    """WHEP sessions by state, the server's events (opened, connected, ended, refused_<status>)
    and, per served path, the parameter sets put in front of IDRs."""
    states = GaugeMetricFamily(
        "feedgate_webrtc_sessions", "WebRTC (WHEP) sessions by state", labels=["state"]
    )
    by_state = stats["states"]
    assert isinstance(by_state, dict)
    for state in ("checking", "connecting", "connected"):
        states.add_metric([state], by_state.get(state, 0))
    yield states
    events = CounterMetricFamily(
        "feedgate_webrtc_events", "WebRTC (WHEP) server events by kind", labels=["event"]
    )
    counters = stats["counters"]
    assert isinstance(counters, dict)
    for key, value in sorted(counters.items()):
        events.add_metric([key], value)
    yield events
    injected = CounterMetricFamily(
        "feedgate_webrtc_parameter_sets_injected",
        "IDRs sent to WebRTC viewers with the SPS/PPS put in front",
        labels=["path"],
    )
    passthroughs = stats["passthroughs"]
    assert isinstance(passthroughs, dict)
    for path, p in sorted(passthroughs.items()):
        injected.add_metric([path], p["parameter_sets_injected"])
    yield injected


def health_detail(gateway: Gateway) -> dict[str, object]:
    """Each path's source as an operator needs it: up, stalled, silent for how long, readers."""
    now = time.monotonic()
    paths: dict[str, object] = {}
    degraded = False
    for name, stream in sorted(gateway.hub.paths.items()):
        stalled = stream.stall.state.value == "stalled"
        degraded |= stalled and stream.on_stall is not None
        ingest = gateway.ingests.get(name)
        ctx = ingest.ssl_context if ingest is not None else None
        paths[name] = {
            "source_up": stream.has_source,
            # Why the pull is down (a refused TLS handshake names the certificate's fault).
            "source_error": ingest.last_error if ingest and not stream.has_source else None,
            # rtsps:// pulls: "verified", or "unverified" (tls_verify = false).
            "source_tls": None if ctx is None else _tls_state(ctx),
            "stalled": stalled,
            "silence_seconds": round(stream.stall.silence(now), 3),
            "stalls": stream.stall.stalls,
            "readers": len(stream.readers),
            "late_packets": stream.reorder.late,
        }
    return {"status": "degraded" if degraded else "ok", "paths": paths}


def _tls_state(ctx: ssl.SSLContext) -> str:
    return "unverified" if ctx.verify_mode == ssl.CERT_NONE else "verified"
