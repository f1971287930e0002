"""Specification tests for gateway.protocols.rtsp_session: the RTSP server session as a table
(RFC 2326 A.2), transport choice and client-port checks, driven by the bytes real clients send
and fuzzed with hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gateway.protocols.rtsp import Request, RtspError, RtspParser
from gateway.protocols.rtsp_headers import TransportSpec, parse_transport
from gateway.protocols.rtsp_session import (
    TRANSITIONS,
    Method,
    RtspSession,
    SessionError,
    SessionMode,
    SessionState,
    TrackTransport,
    TransportMode,
    check_client_ports,
    choose_transport,
    reply_transport,
)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

P, R = SessionMode.PLAY, SessionMode.RECORD
INIT, READY, PLAYING, RECORDING = (
    SessionState.INIT,
    SessionState.READY,
    SessionState.PLAYING,
    SessionState.RECORDING,
)
M = Method
X = None  # refused with 455

# The expected machine, written out cell by cell: (mode, state) -> method -> next state.
EXPECTED: dict[tuple[SessionMode, SessionState], dict[Method, SessionState | None]] = {
    (P, INIT): {M.SETUP: READY, M.PLAY: X, M.RECORD: X, M.PAUSE: X, M.TEARDOWN: X},
    (P, READY): {M.SETUP: READY, M.PLAY: PLAYING, M.RECORD: X, M.PAUSE: READY, M.TEARDOWN: INIT},
    (P, PLAYING): {M.SETUP: X, M.PLAY: PLAYING, M.RECORD: X, M.PAUSE: READY, M.TEARDOWN: INIT},
    (R, INIT): {M.SETUP: READY, M.PLAY: X, M.RECORD: X, M.PAUSE: X, M.TEARDOWN: X},
    (R, READY): {M.SETUP: READY, M.PLAY: X, M.RECORD: RECORDING, M.PAUSE: READY, M.TEARDOWN: INIT},
    (R, RECORDING): {
        M.SETUP: X,
        M.PLAY: X,
        M.RECORD: RECORDING,
        M.PAUSE: RECORDING,  # a publisher is the camera's only source: PAUSE holds nothing back
        M.TEARDOWN: INIT,
    },
}
# Methods a session never sees (they carry no Session, or come before one exists).
SESSIONLESS = (M.OPTIONS, M.DESCRIBE, M.ANNOUNCE)


def tcp(track: int, channels: tuple[int, int] | None = None) -> TrackTransport:
    pair = channels or (2 * track, 2 * track + 1)
    spec = TransportSpec(profile="RTP/AVP/TCP", interleaved=pair)
    return TrackTransport(track, TransportMode.TCP_INTERLEAVED, spec, channels=pair)


def udp(track: int, ports: tuple[int, int] = (5000, 5001)) -> TrackTransport:
    spec = TransportSpec(profile="RTP/AVP", client_port=ports)
    return TrackTransport(track, TransportMode.UDP, spec, client_ports=ports)


def session_in(mode: SessionMode, state: SessionState) -> RtspSession:
    s = RtspSession(mode, timeout=60.0, last_activity=0.0)
    if state is INIT:
        return s
    s.setup(tcp(0), now=1.0)
    if state is PLAYING:
        s.apply(M.PLAY, 2.0)
    elif state is RECORDING:
        s.apply(M.RECORD, 2.0)
    assert s.state is state
    return s


# ---------------------------------------------------------------------- the table, cell by cell


@pytest.mark.parametrize(
    ("mode", "state", "method"),
    [(mode, state, method) for (mode, state), row in EXPECTED.items() for method in row],
)
def test_every_method_in_every_state(
    mode: SessionMode, state: SessionState, method: Method
) -> None:
    s = session_in(mode, state)
    expected = EXPECTED[(mode, state)][method]
    if expected is None:
        with pytest.raises(SessionError) as err:
            s.apply(method, 10.0)
        assert err.value.status == 455
        assert s.state is state, "a refused method changes nothing"
        assert s.last_activity != 10.0, "a refused method is not activity"
    else:
        assert s.apply(method, 10.0) is state
        assert s.state is expected
        assert s.last_activity == 10.0


@pytest.mark.parametrize(("mode", "state"), list(EXPECTED))
@pytest.mark.parametrize("method", [M.GET_PARAMETER, M.SET_PARAMETER])
def test_keepalives_are_valid_everywhere_and_change_nothing(
    mode: SessionMode, state: SessionState, method: Method
) -> None:
    s = session_in(mode, state)
    if state is INIT:
        with pytest.raises(SessionError):
            s.apply(method, 10.0)
        return
    s.apply(method, 10.0)
    assert s.state is state and s.last_activity == 10.0


def test_the_table_has_no_row_beyond_the_specification() -> None:
    for mode, rows in TRANSITIONS.items():
        for state, row in rows.items():
            expected = EXPECTED[(mode, state)]
            for method, nxt in row.items():
                assert method not in SESSIONLESS
                if method in (M.GET_PARAMETER, M.SET_PARAMETER):
                    assert nxt is state
                else:
                    assert expected[method] is nxt, (mode, state, method)


def test_refusals_name_what_went_wrong() -> None:
    with pytest.raises(SessionError, match="PLAY on a RECORD session"):
        session_in(R, READY).apply(M.PLAY, 1.0)
    with pytest.raises(SessionError, match="RECORD on a PLAY session"):
        session_in(P, READY).apply(M.RECORD, 1.0)
    with pytest.raises(SessionError, match="SETUP not allowed while playing"):
        session_in(P, PLAYING).check_setup(1)


def test_a_track_is_set_up_once_and_tracks_share_one_transport() -> None:
    s = session_in(P, READY)
    with pytest.raises(SessionError, match="already set up"):
        s.setup(tcp(0, (4, 5)), 3.0)
    with pytest.raises(SessionError) as err:
        s.setup(udp(1), 3.0)
    assert err.value.status == 461
    s.setup(tcp(1), 3.0)
    assert s.channels() == {0, 1, 2, 3}
    assert s.transport_mode is TransportMode.TCP_INTERLEAVED


def test_expiry_is_measured_from_the_last_activity() -> None:
    s = RtspSession(P, timeout=60.0, last_activity=100.0)
    assert not s.expired(160.0)
    assert s.expired(160.5)
    s.touch(150.0)
    assert s.expires_at == 210.0 and not s.expired(200.0)


# ---------------------------------------------------------------- byte fixtures of real clients


def requests(data: bytes) -> list[Request]:
    events = RtspParser().feed(data)
    assert all(isinstance(e, Request) for e in events)
    return [e for e in events if isinstance(e, Request)]


def drive(data: bytes, *, udp_ok: bool = True, secure: bool = False) -> RtspSession | None:
    """Run the session-bearing requests in ``data`` through the machine as the server does."""
    session: RtspSession | None = None
    now = 0.0
    for req in requests(data):
        now += 0.1
        method = Method(req.method)
        if method in SESSIONLESS:
            continue
        if method is M.SETUP:
            specs = parse_transport(req.headers.get("Transport") or "")
            mode = R if any(s.mode == "RECORD" for s in specs) else P
            used = session.channels() if session else set()
            track = len(session.tracks) if session else 0
            transport = choose_transport(
                specs, track, used_channels=used, udp=udp_ok, secure=secure
            )
            if session is None:
                session = RtspSession(mode, timeout=60.0, last_activity=now)
            session.setup(transport, now)
            continue
        assert session is not None, f"{method} before SETUP"
        session.apply(method, now)
    return session


def _req(method: str, uri: str, cseq: int, *extra: str) -> bytes:
    lines = [f"{method} {uri} RTSP/1.0", f"CSeq: {cseq}", *extra, "", ""]
    return "\r\n".join(lines).encode()


URL = "rtsp://127.0.0.1:8554/cam1"
SID = "Session: 5f3a1c9e0b7d2a64"
# ffmpeg 6.1 (Lavf60.16.100) playing over TCP, then its teardown.
FFMPEG_TCP = (
    _req("OPTIONS", URL, 1, "User-Agent: Lavf60.16.100")
    + _req("DESCRIBE", URL, 2, "Accept: application/sdp", "User-Agent: Lavf60.16.100")
    + _req(
        "SETUP",
        f"{URL}/trackID=0",
        3,
        "Transport: RTP/AVP/TCP;unicast;interleaved=0-1",
        "User-Agent: Lavf60.16.100",
    )
    + _req("PLAY", f"{URL}/", 4, "Range: npt=0.000-", "User-Agent: Lavf60.16.100", SID)
    + _req("TEARDOWN", f"{URL}/", 5, "User-Agent: Lavf60.16.100", SID)
)
# GStreamer 1.22 rtspsrc over UDP with two tracks: its PLAY, then PAUSE at EOS, then TEARDOWN.
GST_UA = "User-Agent: GStreamer/1.22.0"
RTSPSRC_UDP = (
    _req("OPTIONS", URL, 1, GST_UA)
    + _req("DESCRIBE", URL, 2, "Accept: application/sdp", GST_UA)
    + _req(
        "SETUP",
        f"{URL}/trackID=0",
        3,
        "Transport: RTP/AVP;unicast;client_port=41424-41425",
        GST_UA,
    )
    + _req(
        "SETUP",
        f"{URL}/trackID=1",
        4,
        "Transport: RTP/AVP;unicast;client_port=41426-41427",
        GST_UA,
        SID,
    )
    + _req("PLAY", f"{URL}/", 5, "Range: npt=0-", GST_UA, SID)
    + _req("GET_PARAMETER", f"{URL}/", 6, GST_UA, SID)
    + _req("PAUSE", f"{URL}/", 7, GST_UA, SID)
    + _req("TEARDOWN", f"{URL}/", 8, GST_UA, SID)
)
# ffmpeg publishing (-f rtsp -rtsp_transport tcp), one track.
FFMPEG_PUBLISH = (
    _req("OPTIONS", URL, 1, "User-Agent: Lavf60.16.100")
    + _req(
        "SETUP",
        f"{URL}/streamid=0",
        3,
        "Transport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record",
        "User-Agent: Lavf60.16.100",
    )
    + _req("RECORD", URL, 4, "Range: npt=0.000-", "User-Agent: Lavf60.16.100", SID)
    + _req("TEARDOWN", URL, 5, "User-Agent: Lavf60.16.100", SID)
)


def test_ffmpeg_over_tcp_plays_then_tears_down() -> None:
    head = FFMPEG_TCP[: FFMPEG_TCP.index(b"TEARDOWN")]
    s = drive(head)
    assert s is not None and s.state is PLAYING and s.mode is P
    assert s.tracks[0].channels == (0, 1) and s.transport_mode is TransportMode.TCP_INTERLEAVED
    s = drive(FFMPEG_TCP)
    assert s is not None and s.state is INIT


def test_rtspsrc_over_udp_pauses_at_eos_and_tears_down() -> None:
    head = RTSPSRC_UDP[: RTSPSRC_UDP.index(b"PAUSE")]
    s = drive(head)
    assert s is not None and s.state is PLAYING
    assert [t.client_ports for t in s.tracks.values()] == [(41424, 41425), (41426, 41427)]
    head = RTSPSRC_UDP[: RTSPSRC_UDP.index(b"TEARDOWN")]
    s = drive(head)
    assert s is not None and s.state is READY
    s = drive(RTSPSRC_UDP)
    assert s is not None and s.state is INIT


def test_a_publisher_records_and_cannot_play() -> None:
    s = drive(FFMPEG_PUBLISH[: FFMPEG_PUBLISH.index(b"TEARDOWN")])
    assert s is not None and s.mode is R and s.state is RECORDING
    with pytest.raises(SessionError, match="PLAY on a RECORD session"):
        s.apply(M.PLAY, 9.0)


def test_rtsps_refuses_udp_and_a_server_without_udp_answers_461() -> None:
    with pytest.raises(SessionError, match="TLS") as err:
        drive(RTSPSRC_UDP, secure=True)
    assert err.value.status == 461
    with pytest.raises(SessionError) as err:
        drive(RTSPSRC_UDP, udp_ok=False)
    assert err.value.status == 461


# ----------------------------------------------------------- hostile client ports (issue #9.2)

HOSTILE_PORTS = [
    ("client_port=0-0", 461, "0 is not a port"),
    ("client_port=0", 461, "0 is not a port"),
    ("client_port=5001-5002", 461, "odd"),
    ("client_port=5001", 461, "odd"),
    ("client_port=5002-5000", 461, "reversed"),
    ("client_port=5000-5000", 461, "reversed"),
    ("client_port=65536-65537", 400, "out of range"),
    ("client_port=65535", 400, "out of range"),  # no room for RTCP
    ("client_port=5000-99999", 400, "out of range"),
    ("client_port=-5000", 400, "invalid client port"),
]


@pytest.mark.parametrize(("param", "status", "why"), HOSTILE_PORTS)
def test_hostile_client_ports_are_refused(param: str, status: int, why: str) -> None:
    data = _req("SETUP", f"{URL}/trackID=0", 3, f"Transport: RTP/AVP;unicast;{param}")
    with pytest.raises((SessionError, RtspError)) as err:
        drive(data)
    assert err.value.status == status
    assert why in err.value.reason


def test_a_bad_udp_alternative_falls_back_to_the_next_one() -> None:
    specs = parse_transport("RTP/AVP;unicast;client_port=0-1,RTP/AVP/TCP;unicast;interleaved=0-1")
    t = choose_transport(specs, 0, used_channels=set(), udp=True, secure=False)
    assert t.mode is TransportMode.TCP_INTERLEAVED


@pytest.mark.parametrize(
    ("ports", "ok"),
    [((5000, 5001), True), ((5000, 5003), True), ((2, 3), True), ((65534, 65535), True)],
)
def test_ordinary_client_ports_pass(ports: tuple[int, int], ok: bool) -> None:
    assert (check_client_ports(ports) is None) is ok


def test_interleaved_channels_in_use_are_refused() -> None:
    specs = parse_transport("RTP/AVP/TCP;unicast;interleaved=0-1")
    with pytest.raises(SessionError, match="already in use") as err:
        choose_transport(specs, 1, used_channels={0, 1}, udp=True, secure=False)
    assert err.value.status == 461


def test_reply_never_names_a_third_party_destination() -> None:
    specs = parse_transport("RTP/AVP;unicast;destination=203.0.113.9;client_port=5000-5001")
    t = choose_transport(specs, 0, used_channels=set(), udp=True, secure=False)
    reply = reply_transport(t, (8000, 8001))
    assert reply.destination is None and reply.server_port == (8000, 8001)
    assert reply.client_port == (5000, 5001)


# ------------------------------------------------------------------------------------ fuzzing

ports = st.integers(0, 70000)
transport_params = st.one_of(
    st.builds(lambda a, b: f"client_port={a}-{b}", ports, ports),
    st.builds(lambda a: f"client_port={a}", ports),
    st.builds(lambda a, b: f"interleaved={a}-{b}", st.integers(0, 300), st.integers(0, 300)),
    st.sampled_from(["unicast", "multicast", "mode=record", "mode=play", "ttl=3", "ssrc=1A"]),
    st.text(st.characters(codec="ascii", exclude_characters="\r\n"), max_size=12),
)
alternatives = st.builds(
    lambda profile, params: ";".join([profile, *params]),
    st.sampled_from(["RTP/AVP", "RTP/AVP/TCP", "RTP/AVP/UDP", "RTP/SAVP", "RAW/RAW/UDP", "x"]),
    st.lists(transport_params, max_size=5),
)
transport_headers = st.builds(",".join, st.lists(alternatives, min_size=1, max_size=3))


@FAST
@given(
    transport_headers,
    st.integers(0, 3),
    st.sets(st.integers(0, 255), max_size=6),
    st.booleans(),
    st.booleans(),
)
def test_any_transport_header_is_served_safely_or_refused(
    header: str, track: int, used: set[int], udp_ok: bool, secure: bool
) -> None:
    try:
        specs = parse_transport(header)
    except RtspError as exc:
        assert exc.status == 400
        return
    try:
        t = choose_transport(specs, track, used_channels=used, udp=udp_ok, secure=secure)
    except SessionError as exc:
        assert exc.status == 461
        return
    if t.mode is TransportMode.UDP:
        assert t.client_ports is not None and t.channels is None
        assert udp_ok and not secure
        assert check_client_ports(t.client_ports) is None
        rtp, rtcp = t.client_ports
        assert 0 < rtp < rtcp <= 65535 and rtp % 2 == 0
    else:
        assert t.channels is not None and not (set(t.channels) & used)
        assert all(0 <= c <= 255 for c in t.channels)
    reply = reply_transport(t, (8000, 8001))
    assert reply.destination is None and reply.source is None


class SessionMachine(RuleBasedStateMachine):
    """Any sequence of requests against a session keeps it inside the table: a refused method
    changes nothing, and the state is always one the table has a row for."""

    def __init__(self) -> None:
        super().__init__()
        self.session: RtspSession | None = None
        self.now = 0.0
        self.model: SessionState = INIT

    @precondition(lambda self: self.session is None)
    @rule(mode=st.sampled_from(list(SessionMode)))
    def open(self, mode: SessionMode) -> None:
        self.session = RtspSession(mode, timeout=5.0, last_activity=self.now)

    @precondition(lambda self: self.session is not None)
    @rule(method=st.sampled_from([m for m in Method if m not in SESSIONLESS]), dt=st.floats(0, 3))
    def request(self, method: Method, dt: float) -> None:
        s = self.session
        assert s is not None
        self.now += dt
        before = (s.state, s.last_activity, dict(s.tracks))
        if method is M.SETUP:
            track = len(s.tracks)
            try:
                s.setup(tcp(track), self.now)
            except SessionError as exc:
                assert exc.status == 455
                assert (s.state, s.last_activity, s.tracks) == before
                assert EXPECTED[(s.mode, s.state)][M.SETUP] is None
                return
            self.model = READY
            return
        expected = EXPECTED[(s.mode, s.state)].get(method, s.state if s.state is not INIT else X)
        try:
            s.apply(method, self.now)
        except SessionError as exc:
            assert exc.status == 455 and expected is None
            assert (s.state, s.last_activity, s.tracks) == before
            return
        assert expected is not None and s.state is expected
        assert s.last_activity == self.now
        self.model = expected

    @invariant()
    def state_has_a_row(self) -> None:
        if self.session is not None:
            assert self.session.state in TRANSITIONS[self.session.mode]
            assert self.session.state is self.model
            if self.session.state is not INIT:
                assert self.session.tracks, "only a set-up session leaves INIT"


TestSessionMachine = SessionMachine.TestCase
TestSessionMachine.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
