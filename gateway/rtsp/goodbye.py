"""How the server lets a playing reader go when the hub drops it.

A reader dropped because its camera came back with another codec or track layout is not
faulty: its SDP no longer describes the stream, and it can follow only by DESCRIBE again. It is
told the way RTP says a sender has left (RFC 3550 §6.6; RTSP 2.0, RFC 7826, dropped the
server-to-client ANNOUNCE RTSP 1.0 had for this): an RTCP BYE on each of its tracks, which
ffmpeg and GStreamer's rtspsrc take as the end of the stream. Its session ends then (usage and
audit stop), but its connection stays open, so its TEARDOWN still gets 200 and the client
closes, as after a normal end; a client that does nothing is closed cleanly, with a FIN after
what was queued, once the wind-down deadline (the session timeout, from the session's end) runs
out. The idle deadline of a connection without a session would be too short: a loaded player's
PAUSE can come more than its 5 s after the BYE, and would then find the connection gone.

Any other drop (a reader whose socket stayed full past the write timeout) aborts the
connection, discarding what is queued: its send buffer would never drain, and a FIN behind it
would never be read.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from gateway.protocols.rtp import build_goodbye
from gateway.rtsp.connection import RtspConnection
from gateway.rtsp.session import Session
from gateway.stream.hub import SOURCE_CHANGED

if TYPE_CHECKING:
    from gateway.rtsp.server import RtspServer

log = logging.getLogger(__name__)

# Sessions a connection remembers as ended by their source, for the TEARDOWN that follows.
MAX_FINISHED = 16


def reader_dropped(server: RtspServer, conn: RtspConnection, session: Session, why: str) -> None:
    if why != SOURCE_CHANGED or conn.closing:
        conn.abort()
        return
    stream = session.stream
    timeline = stream.timeline if stream is not None else None
    for index, setup in sorted(session.tracks.items()):
        if timeline is None or index >= len(timeline):
            continue
        bye = build_goodbye(timeline.tracks[index].ssrc, reason=why)
        if setup.channels is not None:
            n = len(bye)
            conn.write(bytes((0x24, setup.channels[1], n >> 8, n & 0xFF)) + bye)
        elif setup.client_ports is not None and server.udp.rtcp is not None:
            server.udp.rtcp.sendto(bye, (conn.peer_ip, setup.client_ports[1]))
    log.info("%s: session %s on %s ended: %s", conn.peer, session.id, session.path, why)
    if len(conn.finished) >= MAX_FINISHED:
        conn.finished.pop(next(iter(conn.finished)))
    conn.finished[session.id] = None
    server.end_session(session, why)
