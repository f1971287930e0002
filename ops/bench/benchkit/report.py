"""The fan-out benchmark's tables: one column per target and the feedgate/GStreamer ratio."""

from __future__ import annotations

from typing import Any

ROWS: list[tuple[str, str]] = [
    ("sessions requested", "sessions_requested"),
    ("sessions reached PLAY", "sessions_playing"),
    ("sessions alive at end", "sessions_alive_end"),
    ("measuring window (s)", "window_s"),
    ("delivered Mbit/s (aggregate)", "delivered_mbps"),
    ("expected Mbit/s (clip x PLAYing)", "expected_mbps"),
    ("delivered / expected (%)", "delivered_pct_of_expected"),
    ("delivered Mbit/s per reader", "per_reader_mbps"),
    ("server CPU-s in window", "server_cpu_s"),
    ("server CPU (% of one core)", "server_cpu_pct_of_one_core"),
    ("server CPU-s per delivered Gbit", "server_cpu_s_per_gbit"),
    ("server CPU ms per reader-second", "server_cpu_ms_per_reader_s"),
    ("server peak RSS (MiB, tree)", "server_peak_rss_mib"),
    ("PLAY -> 1st keyframe p50 (s)", "ttfk_p50_s"),
    ("PLAY -> 1st keyframe p95 (s)", "ttfk_p95_s"),
    ("PLAY -> 1st keyframe max (s)", "ttfk_max_s"),
    ("connect -> 1st keyframe p50 (s)", "ttfk_from_connect_p50_s"),
    ("connect -> 1st keyframe p95 (s)", "ttfk_from_connect_p95_s"),
    ("connect -> 1st keyframe max (s)", "ttfk_from_connect_max_s"),
    ("sessions with a keyframe", "ttfk_n"),
    ("start behind live p50 (s), sampled", "behind_live_p50_s"),
    ("start behind live p95 (s), sampled", "behind_live_p95_s"),
    ("PLAY -> live edge p50 (s), sampled", "ttle_p50_s"),
    ("PLAY -> live edge p95 (s), sampled", "ttle_p95_s"),
    ("PLAY -> 1st RTP packet p50 (s)", "first_packet_p50_s"),
    ("PLAY -> 1st RTP packet p95 (s)", "first_packet_p95_s"),
    ("sampled sessions (full parse)", "sampled_sessions"),
    ("lost pkts, sampled, window", "sampled_lost_window"),
    ("pkts parsed, sampled, window", "sampled_packets_window"),
    ("lost pkts, sampled, whole run", "sampled_lost_total"),
    ("media s per wall s, sampled", "sampled_media_s_per_wall_s"),
    ("server dropped-packet counter", "server_dropped_packets"),
    ("server-reported Mbit/s sent", "server_bytes_sent_mbps"),
    ("source ffmpeg CPU-s", "source_cpu_s"),
    ("load generator CPU-s", "loadgen_cpu_s"),
    ("load generator (% of one core)", "loadgen_cpu_pct_of_one_core"),
    ("machine busy before start (%)", "machine_busy_before_pct"),
    ("machine CPU busy (% of all cores)", "machine_cpu_busy_pct"),
    ("kernel irq+softirq CPU-s", "irq_softirq_cpu_s"),
    ("other processes CPU-s", "other_processes_cpu_s"),
]


def fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 10 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def print_table(results: list[dict[str, Any]]) -> None:
    names = [r["target"] for r in results]
    has_ratio = set(names) >= {"feedgate", "gstreamer"}
    w0 = max(len(label) for label, _ in ROWS) + 2
    cols = [*names, *(["feedgate/gst"] if has_ratio else [])]
    print("".ljust(w0) + "".join(c.rjust(15) for c in cols))
    print("-" * (w0 + 15 * len(cols)))
    by = {r["target"]: r for r in results}
    for label, key in ROWS:
        cells = [fmt(r.get(key)) for r in results]
        if has_ratio:
            a, b = by["feedgate"].get(key), by["gstreamer"].get(key)
            ratio = (
                f"{a / b:.2f}x"
                if isinstance(a, int | float) and isinstance(b, int | float) and b
                else ""
            )
            cells.append(ratio)
        print(label.ljust(w0) + "".join(c.rjust(15) for c in cells))
    for r in results:
        print(f"\n{r['target']}: fed by {r.get('feed', 'n/a')}")
        if r.get("probe"):
            print(f"  probe: {r['probe']}")
        if r.get("failures"):
            print(f"  session failures: {r['failures']}")
        if r.get("error"):
            print(f"  ERROR: {r['error']}")
