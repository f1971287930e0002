"""Sans-I/O RTSP 1.0 server sessions: which method is valid in which state, and the transport
each track is delivered over.

RFC 2326 Appendix A.2 gives the server's state machine; :data:`TRANSITIONS` is that machine
as a table, per session mode (a reader PLAYs, a publisher RECORDs), in the manner of h11's
``_state.py``. A method missing from a state's row is refused with 455. Nothing here touches a
socket or a clock: callers pass ``now`` (monotonic seconds), and the asyncio layer acts on the
state this module reports.

Transport negotiation is here too: :func:`choose_transport` picks the first alternative of a
SETUP's Transport header the server can serve, and refuses UDP client ports that no real
client sends (port 0, an odd RTP port, a reversed range), so no session is created for them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from gateway.protocols.rtsp_headers import TransportSpec

__all__ = [
    "TRANSITIONS",
    "Method",
    "RtspSession",
    "SessionError",
    "SessionMode",
    "SessionState",
    "TrackTransport",
    "TransportMode",
    "check_client_ports",
    "choose_transport",
    "reply_transport",
]


class Method(StrEnum):
    OPTIONS = "OPTIONS"
    DESCRIBE = "DESCRIBE"
    ANNOUNCE = "ANNOUNCE"
    SETUP = "SETUP"
    PLAY = "PLAY"
    RECORD = "RECORD"
    PAUSE = "PAUSE"
    TEARDOWN = "TEARDOWN"
    GET_PARAMETER = "GET_PARAMETER"
    SET_PARAMETER = "SET_PARAMETER"


class SessionMode(StrEnum):
    """What a session does with media: a reader PLAYs it, a publisher RECORDs it to us."""

    PLAY = "play"
    RECORD = "record"


class SessionState(StrEnum):
    INIT = "init"  # before the first SETUP, and after TEARDOWN
    READY = "ready"
    PLAYING = "playing"
    RECORDING = "recording"


class TransportMode(StrEnum):
    TCP_INTERLEAVED = "tcp"  # RTP in '$' frames on the RTSP connection (RFC 2326 §10.12)
    UDP = "udp"  # RTP and RTCP datagrams to/from the client's port pair


class SessionError(Exception):
    """A request this session cannot take; ``status`` is what to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


_S = SessionState
_M = Method
# Requests that only prove the client is alive: valid in every state, changing nothing.
_KEEPALIVE = (_M.GET_PARAMETER, _M.SET_PARAMETER)


def _row(*pairs: tuple[Method, SessionState], stay: SessionState) -> dict[Method, SessionState]:
    return {**{m: stay for m in _KEEPALIVE}, **dict(pairs)}


# mode -> state -> method -> next state (RFC 2326 A.2). Departures from the RFC, on purpose:
# - SETUP while playing or recording is refused: adding a track to a running session would
#   change the channel map readers share.
# - PAUSE of a publisher is acknowledged and changes nothing: its media is the camera's one
#   source, and holding it back would stall every reader.
TRANSITIONS: Mapping[SessionMode, Mapping[SessionState, Mapping[Method, SessionState]]] = {
    SessionMode.PLAY: {
        _S.INIT: {_M.SETUP: _S.READY},
        _S.READY: _row(
            (_M.SETUP, _S.READY),
            (_M.PLAY, _S.PLAYING),
            (_M.PAUSE, _S.READY),
            (_M.TEARDOWN, _S.INIT),
            stay=_S.READY,
        ),
        _S.PLAYING: _row(
            (_M.PLAY, _S.PLAYING),
            (_M.PAUSE, _S.READY),
            (_M.TEARDOWN, _S.INIT),
            stay=_S.PLAYING,
        ),
    },
    SessionMode.RECORD: {
        _S.INIT: {_M.SETUP: _S.READY},
        _S.READY: _row(
            (_M.SETUP, _S.READY),
            (_M.RECORD, _S.RECORDING),
            (_M.PAUSE, _S.READY),
            (_M.TEARDOWN, _S.INIT),
            stay=_S.READY,
        ),
        _S.RECORDING: _row(
            (_M.RECORD, _S.RECORDING),
            (_M.PAUSE, _S.RECORDING),
            (_M.TEARDOWN, _S.INIT),
            stay=_S.RECORDING,
        ),
    },
}

# Why a method is refused, for the 455's reason phrase.
_REFUSALS: Mapping[tuple[SessionMode, Method], str] = {
    (SessionMode.RECORD, _M.PLAY): "PLAY on a RECORD session",
    (SessionMode.PLAY, _M.RECORD): "RECORD on a PLAY session",
    (SessionMode.PLAY, _M.SETUP): "SETUP not allowed while playing",
    (SessionMode.RECORD, _M.SETUP): "SETUP not allowed while recording",
}


@dataclass(frozen=True)
class TrackTransport:
    """How one set-up track travels: interleaved channels, or the client's UDP ports."""

    track: int
    mode: TransportMode
    spec: TransportSpec  # the alternative the client offered that we took
    channels: tuple[int, int] | None = None  # TCP interleaved (rtp, rtcp)
    client_ports: tuple[int, int] | None = None  # UDP (rtp, rtcp)


@dataclass
class RtspSession:
    """One session's protocol state: mode, state, set-up tracks and liveness."""

    mode: SessionMode
    timeout: float
    last_activity: float
    state: SessionState = SessionState.INIT
    tracks: dict[int, TrackTransport] = field(default_factory=dict)

    def next_state(self, method: Method) -> SessionState:
        """The state ``method`` leads to from here; SessionError(455) if it is not valid."""
        nxt = TRANSITIONS[self.mode][self.state].get(method)
        if nxt is None:
            reason = _REFUSALS.get((self.mode, method))
            raise SessionError(455, reason or f"{method} not valid in state {self.state}")
        return nxt

    def apply(self, method: Method, now: float) -> SessionState:
        """Take ``method``: move to its next state and count it as activity. Returns the state
        it left, so the caller can tell a change (READY -> PLAYING) from a repeat."""
        nxt = self.next_state(method)
        previous, self.state = self.state, nxt
        self.last_activity = now
        return previous

    def check_setup(self, track: int) -> None:
        """Whether a SETUP of ``track`` is valid now, before a transport is chosen for it."""
        self.next_state(Method.SETUP)
        if track in self.tracks:
            raise SessionError(455, f"track {track} already set up")

    def setup(self, transport: TrackTransport, now: float) -> None:
        """SETUP of one more track (the first moves INIT -> READY)."""
        self.check_setup(transport.track)
        if any(t.mode is not transport.mode for t in self.tracks.values()):
            raise SessionError(461, "all tracks of a session must use the same transport")
        self.apply(Method.SETUP, now)
        self.tracks[transport.track] = transport

    @property
    def transport_mode(self) -> TransportMode | None:
        for t in self.tracks.values():
            return t.mode
        return None

    def channels(self) -> set[int]:
        """Interleaved channels this session's tracks use."""
        used: set[int] = set()
        for t in self.tracks.values():
            if t.channels is not None:
                used.update(t.channels)
        return used

    def touch(self, now: float) -> None:
        self.last_activity = now

    @property
    def expires_at(self) -> float:
        return self.last_activity + self.timeout

    def expired(self, now: float) -> bool:
        return now > self.expires_at


def check_client_ports(ports: tuple[int, int]) -> str | None:
    """Why a UDP client port pair cannot be sent to, or None when it can.

    RTP goes to an even port and RTCP to a higher one (RFC 3550 §11, RFC 2326 §12.39); port 0
    is nobody's, and a reversed or collapsed range leaves RTCP nowhere to go."""
    rtp, rtcp = ports
    if rtp == 0 or rtcp == 0:
        return "client_port 0 is not a port"
    if rtp % 2:
        return f"client_port RTP port {rtp} is odd (RTP uses an even port)"
    if rtcp <= rtp:
        return f"client_port range {rtp}-{rtcp} is reversed"
    return None


def choose_transport(
    specs: Iterable[TransportSpec],
    track: int,
    *,
    used_channels: set[int],
    udp: bool,
    secure: bool,
) -> TrackTransport:
    """The first alternative (in the client's order) this server can deliver ``track`` over.

    ``used_channels`` are interleaved channels already taken on the connection; ``udp`` says
    whether the server has UDP sockets; ``secure`` (RTSPS) keeps media inside the TLS stream.
    Raises SessionError(461) naming why the last usable-looking alternative was refused.
    """
    why = "no supported transport (TCP interleaved or UDP unicast)"
    for spec in specs:
        if not spec.unicast:
            continue  # multicast is not offered
        if spec.is_tcp:
            pair = spec.interleaved or (2 * track, 2 * track + 1)
            if pair[0] in used_channels or pair[1] in used_channels:
                why = f"interleaved channels {pair[0]}-{pair[1]} already in use"
                continue
            return TrackTransport(track, TransportMode.TCP_INTERLEAVED, spec, channels=pair)
        if not spec.profile.startswith("RTP/AVP"):
            continue  # RTP/SAVP, RAW/RAW/UDP, ...
        if spec.client_port is None:
            why = "UDP transport without client_port"
            continue
        if secure:
            why = "RTSPS carries media interleaved in the TLS stream (TCP) only"
            continue
        if not udp:
            continue
        bad = check_client_ports(spec.client_port)
        if bad is not None:
            why = bad
            continue
        return TrackTransport(track, TransportMode.UDP, spec, client_ports=spec.client_port)
    raise SessionError(461, why)


def reply_transport(transport: TrackTransport, server_ports: tuple[int, int]) -> TransportSpec:
    """The Transport header value a SETUP's 200 carries for ``transport``."""
    spec = transport.spec
    if transport.channels is not None:
        return replace(
            spec,
            profile="RTP/AVP/TCP",
            interleaved=transport.channels,
            client_port=None,
            server_port=None,
            destination=None,
            source=None,
        )
    # Media only ever goes to the connection's own address: a Transport destination naming a
    # third party would make us a traffic reflector.
    return replace(
        spec,
        server_port=server_ports,
        interleaved=None,
        destination=None,
        source=None,
    )
