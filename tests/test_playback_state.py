"""Specification tests for a playback session's state table and pacing
(gateway.playback.state) and the playback HTTP API's parameters (gateway.playback.params)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.playback.params import MediaFormat, ParamError, parse_get, parse_list
from gateway.playback.state import (
    MAX_WAIT,
    TRANSITIONS,
    Event,
    Pacer,
    PlaybackState,
    StateError,
)
from gateway.protocols.rtsp import Headers
from gateway.protocols.rtsp_replay import Frames, FramesMode, ReplayRequest, parse_play

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
T0 = datetime(2026, 12, 1, 10, 15, tzinfo=UTC)
S = PlaybackState
E = Event
X = None

EXPECTED: dict[PlaybackState, dict[Event, PlaybackState | None]] = {
    S.READY: {E.PLAY: S.PLAYING, E.PAUSE: S.READY, E.END: X, E.TEARDOWN: S.CLOSED},
    S.PLAYING: {E.PLAY: S.PLAYING, E.PAUSE: S.PAUSED, E.END: S.ENDED, E.TEARDOWN: S.CLOSED},
    S.PAUSED: {E.PLAY: S.PLAYING, E.PAUSE: S.PAUSED, E.END: X, E.TEARDOWN: S.CLOSED},
    S.ENDED: {E.PLAY: S.PLAYING, E.PAUSE: S.ENDED, E.END: X, E.TEARDOWN: S.CLOSED},
    S.CLOSED: {E.PLAY: X, E.PAUSE: X, E.END: X, E.TEARDOWN: X},
}


@pytest.mark.parametrize("state", list(PlaybackState))
@pytest.mark.parametrize("event", list(Event))
def test_the_table_cell_by_cell(state: PlaybackState, event: Event) -> None:
    assert TRANSITIONS[state].get(event) == EXPECTED[state][event]
    pacer = Pacer(origin=T0, state=state)
    if EXPECTED[state][event] is None:
        with pytest.raises(StateError) as err:
            pacer.apply(event)
        assert err.value.status == 455 and pacer.state is state
    else:
        assert pacer.apply(event) is EXPECTED[state][event]


def req(*headers: tuple[str, str]) -> ReplayRequest:
    return parse_play(Headers(headers))


def test_first_play_starts_at_the_url_start_and_npt_counts_from_it() -> None:
    pacer = Pacer(origin=T0, end=T0 + timedelta(minutes=5))
    pos = pacer.play(req(("Range", "npt=0.000-")), now=100.0)
    assert (pos.start, pos.end, pos.scale) == (T0, T0 + timedelta(minutes=5), 1.0)
    pos = pacer.play(req(("Range", "npt=30-")), now=101.0)
    assert pos.start == T0 + timedelta(seconds=30) and pos.generation == 2


def test_a_clock_range_seeks_and_pause_then_play_resumes_after_the_last_unit() -> None:
    pacer = Pacer(origin=T0)
    pacer.play(req(("Range", "clock=20261201T102000Z-")), now=0.0)
    later = T0 + timedelta(minutes=5, seconds=3)
    pacer.sent(later, 0.0, keyframe=False)
    pacer.pause()
    assert pacer.state is S.PAUSED
    pos = pacer.play(req(), now=50.0)
    assert pos.start == later and pacer.state is S.PLAYING
    pos = pacer.play(req(("Range", "clock=20261201T101600Z-")), now=51.0, cseq=0x1FF)
    assert pos.start == T0 + timedelta(minutes=1) and pos.cseq == 0xFF


def test_scale_is_approximated_reverse_refused_and_backwards_ranges_457() -> None:
    pacer = Pacer(origin=T0)
    assert pacer.play(req(("Scale", "3.5")), now=0.0).scale == 4.0
    with pytest.raises(StateError) as err:
        pacer.play(req(("Scale", "-1")), now=0.0)
    assert err.value.status == 456
    ended = Pacer(origin=T0, end=T0)
    with pytest.raises(StateError) as err:
        ended.play(req(), now=0.0)
    assert err.value.status == 457


def test_onvif_fast_forward_without_rate_control_sends_key_frames_only() -> None:
    pacer = Pacer(origin=T0)
    pos = pacer.play(
        req(("Require", "onvif-replay"), ("Scale", "4"), ("Rate-Control", "no")), now=0.0
    )
    assert pos.frames.mode is FramesMode.INTRA
    assert pacer.wants(T0, keyframe=True) and not pacer.wants(T0, keyframe=False)
    assert pacer.due(T0 + timedelta(hours=1), now=7.0) == 7.0  # no pacing: as fast as read


def test_frames_intra_interval_skips_key_frames_too_close_together() -> None:
    pacer = Pacer(origin=T0)
    pacer.play(req(("Frames", "intra/2000")), now=0.0)
    assert pacer.position is not None and pacer.position.frames == Frames(FramesMode.INTRA, 2000)
    pacer.sent(T0, 0.0, keyframe=True)
    assert not pacer.wants(T0 + timedelta(seconds=1), keyframe=True)
    assert pacer.wants(T0 + timedelta(seconds=2), keyframe=True)


def test_units_past_the_range_end_are_not_wanted() -> None:
    pacer = Pacer(origin=T0)
    pacer.play(req(("Range", "clock=20261201T101500Z-20261201T101510Z")), now=0.0)
    assert pacer.wants(T0 + timedelta(seconds=9.96), keyframe=False)
    assert not pacer.wants(T0 + timedelta(seconds=10), keyframe=False)
    assert pacer.past_end(T0 + timedelta(seconds=10))


@pytest.mark.parametrize("scale", [1.0, 2.0, 4.0])
def test_pacing_follows_the_recording_divided_by_scale(scale: float) -> None:
    pacer = Pacer(origin=T0)
    pacer.play(req(("Scale", str(scale))), now=10.0)
    dues = []
    for i in range(50):
        captured = T0 + timedelta(milliseconds=40 * i)
        at = pacer.due(captured, now=10.0)
        pacer.sent(captured, at, keyframe=i % 25 == 0)
        dues.append(at)
    assert dues[0] == 10.0
    assert dues[-1] == pytest.approx(10.0 + 49 * 0.04 / scale)


def test_a_gap_in_the_recording_is_skipped_not_waited_through() -> None:
    pacer = Pacer(origin=T0)
    pacer.play(req(), now=0.0)
    pacer.sent(T0, pacer.due(T0, 0.0), True)
    t1 = T0 + timedelta(seconds=0.04)
    pacer.sent(t1, pacer.due(t1, 0.0), False)
    after_gap = T0 + timedelta(minutes=10)
    at = pacer.due(after_gap, now=0.0)
    assert at <= 0.04 + MAX_WAIT
    nxt = after_gap + timedelta(seconds=0.04)
    assert pacer.due(nxt, now=0.0) == pytest.approx(at + 0.04)


@FAST
@given(
    st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), min_size=1, max_size=60),
    st.sampled_from([1.0, 2.0, 4.0]),
)
def test_due_times_never_go_back_and_never_jump_more_than_max_wait(
    steps: list[float], scale: float
) -> None:
    pacer = Pacer(origin=T0)
    pacer.play(req(("Scale", str(scale))), now=0.0)
    captured = T0
    last = 0.0
    for step in steps:
        captured += timedelta(seconds=step)
        at = pacer.due(captured, now=0.0)
        assert last - MAX_WAIT - 1e-9 <= at <= last + MAX_WAIT + 1e-9
        pacer.sent(captured, at, keyframe=False)
        last = max(last, at)


# --- HTTP parameters (MediaMTX's names) --------------------------------------------------


def test_list_and_get_as_mediamtx_clients_send_them() -> None:
    p = parse_list({"path": "cam1", "start": "2026-12-01T10:15:00Z", "end": "2026-12-01T11:00:00Z"})
    assert (p.path, p.start, p.end) == ("cam1", T0, T0 + timedelta(minutes=45))
    assert parse_list({"path": "cam1"}).start is None
    g = parse_get({"path": "cam1", "start": "2026-12-01T10:15:00.5Z", "duration": "60.5"})
    assert g.format is MediaFormat.FMP4 and g.duration == 60.5
    assert g.end == T0 + timedelta(seconds=61)
    assert (
        parse_get(
            {"path": "cam1", "start": "2026-12-01T10:15:00Z", "duration": "1", "format": "MP4"}
        ).format
        is MediaFormat.MP4
    )


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ({}, "path"),
        ({"path": "../etc/passwd"}, "path"),
        ({"path": "cam1", "start": "monday"}, "start"),
        ({"path": "cam1", "start": "2026-12-01T11:00:00Z", "end": "2026-12-01T10:00:00Z"}, "end"),
        ({"path": "cam1", "start": "2025-01-01T00:00:00Z", "end": "2026-12-01T10:00:00Z"}, "end"),
        ({"path": "cam1", "colour": "red"}, "colour"),
    ],
)
def test_bad_list_parameters_are_named(query: dict[str, str], names: str) -> None:
    with pytest.raises(ParamError) as err:
        parse_list(query)
    assert str(err.value).startswith(names)


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ({"path": "cam1", "duration": "5"}, "start"),
        ({"path": "cam1", "start": "2026-12-01T10:15:00Z"}, "duration"),
        ({"path": "cam1", "start": "2026-12-01T10:15:00Z", "duration": "0"}, "duration"),
        ({"path": "cam1", "start": "2026-12-01T10:15:00Z", "duration": "1e3"}, "duration"),
        ({"path": "cam1", "start": "2026-12-01T10:15:00Z", "duration": "90000"}, "duration"),
        (
            {"path": "cam1", "start": "2026-12-01T10:15:00Z", "duration": "5", "format": "avi"},
            "format",
        ),
    ],
)
def test_bad_get_parameters_are_named(query: dict[str, str], names: str) -> None:
    with pytest.raises(ParamError) as err:
        parse_get(query)
    assert str(err.value).startswith(names)


def test_a_repeated_parameter_is_refused() -> None:
    from multidict import MultiDict

    q = MultiDict([("path", "cam1"), ("path", "cam2")])
    with pytest.raises(ParamError, match="path: given more than once"):
        parse_list(q)  # type: ignore[arg-type]
