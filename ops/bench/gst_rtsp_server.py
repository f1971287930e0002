"""Minimal GStreamer RTSP server used as the baseline in the fan-out benchmark.

Run it with Debian's interpreter (python3-gi lives there, not in the project venv):

    /usr/bin/python3 ops/bench/gst_rtsp_server.py PORT UDP_PORT [MOUNT [repay|relay]]

It serves ``rtsp://127.0.0.1:PORT/MOUNT`` (default mount ``/bench``) from ONE shared
media fed by RTP/H.264 packets sent to ``UDP_PORT`` (e.g. by
``ffmpeg -re ... -c copy -f rtp rtp://127.0.0.1:UDP_PORT``). Mode ``repay`` (default):
``udpsrc ! rtph264depay ! rtph264pay name=pay0``, i.e. GStreamer re-packetizes (no
re-encoding) and its payloader pushes one buffer list per NAL unit, which the server writes to
each TCP client with one writev. Mode ``relay``: the launch line is a ``udpsrc`` named ``pay0``
and the packets are relayed to every client as they are, one write per packet per client
(about 3-4x the CPU per Gbit; on 2 shared cores it cannot keep up with 1,000 readers).

Prints ``READY`` on stdout once the server socket is listening; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

CAPS = "application/x-rtp,media=video,clock-rate=90000,encoding-name=H264,payload=96"


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(f"usage: {argv[0]} PORT UDP_PORT [MOUNT [repay|relay]]", file=sys.stderr)
        return 2
    port, udp_port = int(argv[1]), int(argv[2])
    mount = argv[3] if len(argv) > 3 else "/bench"
    mode = argv[4] if len(argv) > 4 else "repay"
    Gst.init(None)

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    # The default listen backlog is 5: far too small for a 200 connections/s ramp.
    server.set_backlog(4096)

    factory = GstRtspServer.RTSPMediaFactory()
    # 16 MiB kernel receive buffer (udpsrc falls back to SO_RCVBUFFORCE as root) so that
    # the burst of a keyframe sent at once by ffmpeg -re is not dropped by the kernel.
    src = f'udpsrc address=127.0.0.1 port={udp_port} buffer-size=16777216 caps="{CAPS}"'
    if mode == "relay":
        launch = f"( {src.replace('udpsrc ', 'udpsrc name=pay0 ', 1)} )"
    elif mode == "repay":
        launch = (
            f"( {src} ! rtph264depay ! "
            "rtph264pay name=pay0 pt=96 mtu=1400 config-interval=-1 aggregate-mode=zero-latency )"
        )
    else:
        print(f"unknown mode {mode!r}", file=sys.stderr)
        return 2
    factory.set_launch(launch)
    factory.set_shared(True)
    server.get_mount_points().add_factory(mount, factory)

    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{port}", file=sys.stderr)
        return 1

    loop = GLib.MainLoop()

    def _stop(*_args: object) -> bool:
        loop.quit()
        return GLib.SOURCE_REMOVE

    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, _stop)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, _stop)

    print("READY", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
