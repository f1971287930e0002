"""The ``[rtsp]`` config section: the RTSP server's ports, limits and deadlines.

Kept apart from :mod:`gateway.config` (which imports it), and outside the ``gateway.rtsp``
package, so loading the config (as the control plane does) loads no part of the media plane."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic.dataclasses import dataclass

from gateway.configpaths import ConfigPath
from gateway.configtypes import STRICT, Port, Seconds


def _even(port: int) -> int:
    if port % 2:
        raise ValueError("must be even (RTCP uses the next port)")
    return port


@dataclass(frozen=True, config=STRICT)
class RtspConfig:
    host: str = "0.0.0.0"
    port: Port = 8554
    # UDP egress/ingest ports: RTP on rtp_port, RTCP on rtp_port + 1.
    rtp_port: Annotated[Port, AfterValidator(_even)] = 8000
    # Worker processes sharing the RTSP port (SO_REUSEPORT); worker 0 owns every camera's ingest.
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    session_timeout: Seconds = 60.0
    # A reader whose socket stays backed up this long is disconnected (MediaMTX uses 10 s).
    write_timeout: Seconds = 10.0
    # Bytes a reader may have queued in its socket buffer before it starts losing frames.
    reader_queue_bytes: Annotated[int, Field(ge=64 * 1024)] = 8 * 1024 * 1024
    # Upper bound on one camera's GOP cache; a longer GOP is not cached (readers then wait).
    gop_cache_bytes: Annotated[int, Field(ge=0)] = 16 * 1024 * 1024
    # A joiner starts from the cached GOP only when its keyframe is at most this old (else at
    # the next keyframe), so no viewer starts further behind live than this.
    join_max_behind: Annotated[float, Field(ge=0, le=60, allow_inf_nan=False)] = 2.0
    # The largest cached GOP sent at once to a UDP joiner (a burst beyond a receive buffer is
    # dropped by the kernel); a bigger one waits for the next keyframe.
    udp_join_burst_bytes: Annotated[int, Field(ge=0)] = 64 * 1024
    max_connections: Annotated[int, Field(ge=1)] = 10_000
    # Deadlines for slow or silent peers: a request's head from its first byte, its body after
    # the head, and the next request on a connection that holds no session (the first one
    # included). Connections with a session are bounded by session_timeout instead, and so is
    # the wind-down of a session its source ended (from its end to the client's TEARDOWN).
    request_head_timeout: Seconds = 5.0
    request_body_timeout: Seconds = 5.0
    idle_timeout: Seconds = 5.0
    # Connections one address may hold before any request of theirs is admitted by the access
    # layer (e.g. a VMS behind NAT reconnecting its cameras at once needs headroom).
    max_unauthenticated_per_ip: Annotated[int, Field(ge=1)] = 256
    # Seconds between usage reports for open sessions (a crash loses at most one interval).
    report_interval: Seconds = 5.0
    # RTSPS (RTSP over TLS, media interleaved in the same TLS stream) on tls_port when tls_cert
    # and tls_key (PEM, relative to the config file) are set. Served by worker 0 only.
    tls_port: Port = 8322
    tls_cert: ConfigPath = ""
    tls_key: ConfigPath = ""
    # Accept Basic credentials (a password in the clear) on plain RTSP; RTSPS always does.
    basic_over_plain: bool = False
