"""PTZ arbitration as a specification: the state machine driven by an injected clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ptz.arbiter import (
    _TABLE,
    ArbiterSettings,
    CameraArbiter,
    Claimant,
    EffectKind,
    Event,
    IdleAction,
    LockState,
)
from gateway.ptz.locks import LocalLockStore
from gateway.ptz.model import ErrorCode, MoveKind, PtzError, check_move, check_token
from gateway.ptz.motion import MotionWatch

POLICE = Claimant("met-police", "police", "viido-vms", 30000, "incident 42")
POLICE_2 = Claimant("met-police", "police", "viido-desk-2", 30000)
COUNCIL = Claimant("council", "council", "council-operator", 20000)
PARTNER = Claimant("westfield", "retail", "westfield-security", 1000)
T0 = 1_800_000_000.0


def arbiter(**kw: object) -> CameraArbiter:
    return CameraArbiter("cam1", ArbiterSettings(**kw))  # type: ignore[arg-type]


def kinds(verdict: object) -> list[EffectKind]:
    return [e.kind for e in verdict.effects]  # type: ignore[attr-defined]


def test_every_state_answers_every_event() -> None:
    assert set(_TABLE) == {(s, e) for s in LockState for e in Event}


def test_first_mover_takes_the_lock_and_it_lapses_after_idle() -> None:
    a = arbiter(idle_release=5.0, return_after=0)
    v = a.claim(COUNCIL, T0)
    assert v.allowed and kinds(v) == [EffectKind.TAKEN] and v.until == T0 + 5.0
    assert a.view().holder_kind == "council"
    assert a.deadline() == T0 + 5.0
    assert not kinds(a.tick(T0 + 4.9)) and a.state == LockState.HELD
    lapsed = a.tick(T0 + 5.0)
    assert kinds(lapsed) == [EffectKind.RELEASED] and lapsed.effects[0].reason == "idle"
    assert a.state == LockState.FREE
    assert a.claim(PARTNER, T0 + 5.1).allowed  # anyone may take it now


def test_a_continuous_move_holds_the_lock_for_its_own_timeout_too() -> None:
    a = arbiter(idle_release=5.0)
    assert a.claim(COUNCIL, T0, hold=3.0).until == T0 + 8.0


def test_lower_or_equal_priority_is_refused_naming_kind_and_expiry_not_person() -> None:
    a = arbiter()
    a.claim(POLICE, T0)
    for other in (COUNCIL, POLICE_2):
        v = a.claim(other, T0 + 1)
        assert not v.allowed and v.code == "ptz_locked"
        assert v.holder_kind == "police" and v.until == T0 + 5.0
        assert "viido" not in v.reason and "met-police" not in v.reason
    assert a.holder == POLICE


def test_higher_priority_preempts_and_the_holder_is_told_why() -> None:
    a = arbiter()
    a.claim(PARTNER, T0)
    v = a.claim(POLICE, T0 + 1)
    assert v.allowed and kinds(v) == [EffectKind.PREEMPTED, EffectKind.TAKEN]
    lost = v.effects[0]
    assert lost.claimant == PARTNER and lost.by == POLICE
    assert lost.reason == "preempted by a higher priority (police)"
    assert a.holder == POLICE


def test_the_holder_renews_its_lock_by_moving() -> None:
    a = arbiter(idle_release=5.0)
    a.claim(COUNCIL, T0)
    v = a.claim(COUNCIL, T0 + 4)
    assert v.allowed and not v.effects and v.until == T0 + 9
    assert not kinds(a.tick(T0 + 8)) and a.state == LockState.HELD


def test_only_the_holder_releases() -> None:
    a = arbiter()
    a.claim(COUNCIL, T0)
    assert a.release(PARTNER, T0 + 1).code == "forbidden"
    v = a.release(COUNCIL, T0 + 1)
    assert kinds(v) == [EffectKind.RELEASED] and v.effects[0].reason == "released"
    assert a.state == LockState.FREE


def test_a_reservation_refuses_even_a_higher_priority_until_it_ends() -> None:
    a = arbiter()
    a.claim(PARTNER, T0)
    v = a.reserve(COUNCIL, "incident 7: fire on High St", T0 + 600, T0 + 1)
    assert v.allowed and kinds(v) == [EffectKind.PREEMPTED, EffectKind.RESERVED]
    assert v.effects[0].claimant == PARTNER
    refused = a.claim(POLICE, T0 + 2)
    assert not refused.allowed and refused.code == "ptz_locked"
    assert refused.holder_kind == "council" and refused.until == T0 + 600
    # Any principal of the reserving tenant steers; the lapse of an idle lock does not end it.
    assert a.claim(Claimant("council", "council", "council-admin", 1), T0 + 3).allowed
    assert not kinds(a.tick(T0 + 100)) and a.state == LockState.RESERVED
    assert a.view().reason == "incident 7: fire on High St"
    ended = a.tick(T0 + 600)
    assert kinds(ended) == [EffectKind.RESERVATION_ENDED] and ended.effects[0].reason == "expired"
    assert a.claim(POLICE, T0 + 601).allowed


def test_only_the_reserving_tenant_ends_or_overrides_a_reservation() -> None:
    a = arbiter()
    a.reserve(POLICE, "op trident", T0 + 600, T0)
    assert a.release(COUNCIL, T0 + 1).code == "forbidden"
    assert a.reserve(COUNCIL, "mine", T0 + 600, T0 + 1).code == "ptz_locked"
    assert a.reserve(POLICE_2, "op trident, extended", T0 + 900, T0 + 2).allowed
    assert a.view().until == T0 + 900
    v = a.release(POLICE_2, T0 + 3)
    assert kinds(v) == [EffectKind.RESERVATION_ENDED] and a.state == LockState.FREE


def test_reservations_are_bounded() -> None:
    a = arbiter(max_reservation=3600)
    assert a.reserve(POLICE, "x", T0, T0).code == "bad_request"
    assert a.reserve(POLICE, "x", T0 + 3601, T0).code == "bad_request"
    assert a.state == LockState.FREE


def test_an_unreachable_camera_releases_its_lock_but_not_a_reservation() -> None:
    a = arbiter()
    a.claim(COUNCIL, T0)
    v = a.fail(T0 + 1)
    assert kinds(v) == [EffectKind.RELEASED] and v.effects[0].reason == "camera unreachable"
    assert a.state == LockState.FREE
    a.reserve(POLICE, "op", T0 + 600, T0 + 2)
    a.fail(T0 + 3)
    assert a.state == LockState.RESERVED


def test_the_camera_returns_home_after_idle_once() -> None:
    a = arbiter(idle_release=5.0, return_after=60.0)
    assert a.deadline() is None  # never steered: nothing to undo
    a.claim(COUNCIL, T0, hold=1.0)
    a.tick(T0 + 6.0)  # the lock lapses first
    assert a.state == LockState.FREE and a.deadline() == T0 + 61.0
    assert not kinds(a.tick(T0 + 60.9))
    assert kinds(a.tick(T0 + 61.0)) == [EffectKind.RETURN_HOME]
    assert a.deadline() is None and not kinds(a.tick(T0 + 500))


def test_a_move_postpones_the_return_home() -> None:
    a = arbiter(idle_release=5.0, return_after=60.0)
    a.claim(COUNCIL, T0)
    a.tick(T0 + 5)
    a.claim(PARTNER, T0 + 50)
    a.tick(T0 + 55)
    assert not kinds(a.tick(T0 + 61)) and a.deadline() == T0 + 110


def test_an_idle_camera_can_walk_a_preset_tour_instead() -> None:
    a = arbiter(
        idle_release=5.0,
        return_after=30.0,
        idle_action=IdleAction.TOUR,
        tour=("gate", "bridge"),
        tour_dwell=10.0,
    )
    a.claim(COUNCIL, T0)
    a.tick(T0 + 5)
    steps = []
    now = T0 + 5
    while len(steps) < 3:
        due = a.deadline()
        assert due is not None
        now = due
        steps += [e.preset for e in a.tick(now).effects]
    assert steps == ["gate", "bridge", "gate"] and now == T0 + 50


def test_a_lapsed_lock_never_refuses_even_before_the_ticker_runs() -> None:
    a = arbiter(idle_release=5.0, return_after=0)
    a.claim(POLICE, T0)
    v = a.claim(PARTNER, T0 + 5.0)
    assert v.allowed and kinds(v) == [EffectKind.RELEASED, EffectKind.TAKEN]
    a.reserve(COUNCIL, "op", T0 + 60, T0 + 6)
    v = a.claim(PARTNER, T0 + 60)
    assert v.allowed and kinds(v) == [EffectKind.RESERVATION_ENDED, EffectKind.TAKEN]


def test_moves_are_rate_limited_per_principal() -> None:
    a = arbiter(move_rate=2.0, move_burst=3)
    assert all(a.claim(COUNCIL, T0).allowed for _ in range(3))
    v = a.claim(COUNCIL, T0)
    assert not v.allowed and v.code == "rate_limited" and v.until == pytest.approx(T0 + 0.5)
    assert a.claim(COUNCIL, T0 + 0.5).allowed  # refilled at 2 per second
    # A new holder starts with a full bucket.
    assert a.claim(POLICE, T0 + 0.6).allowed and a.claim(POLICE, T0 + 0.6).allowed


async def test_the_local_store_ticks_only_due_cameras() -> None:
    store = LocalLockStore(lambda cam: ArbiterSettings(idle_release=5.0, return_after=0))
    await store.claim("a", COUNCIL, T0)
    await store.claim("b", COUNCIL, T0 + 3)
    assert store.deadline() == T0 + 5
    effects = await store.tick(T0 + 5)
    assert [(e.camera, e.kind) for e in effects] == [("a", EffectKind.RELEASED)]
    assert (await store.view("b")).state == LockState.HELD
    assert store.deadline() == T0 + 8


_claimants = st.sampled_from([POLICE, POLICE_2, COUNCIL, PARTNER])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["claim", "release", "reserve", "fail", "tick"]),
            _claimants,
            st.floats(0, 30),
        ),
        max_size=40,
    )
)
def test_invariants_hold_under_any_sequence(ops: list[tuple[str, Claimant, float]]) -> None:
    """At most one holder; a held lock always has an end; only the reserving tenant moves a
    reserved camera; a refusal changes nothing."""
    a = arbiter(idle_release=5.0, return_after=20.0, move_burst=5)
    now = T0
    for op, who, dt in ops:
        now += dt
        a.tick(now)
        before = (a.state, a.holder, a.reservation, a.expires_at)
        if op == "claim":
            r = a.reservation if a.state == LockState.RESERVED else None
            v = a.claim(who, now)
            if r is not None and v.allowed:
                assert who.tenant == r.claimant.tenant
        elif op == "release":
            v = a.release(who, now)
        elif op == "reserve":
            v = a.reserve(who, "r", now + 60, now)
        elif op == "fail":
            v = a.fail(now)
        else:
            v = a.tick(now)
        if not v.allowed:
            assert (a.state, a.holder, a.reservation, a.expires_at) == before
        if a.state == LockState.HELD:
            assert a.holder is not None and math.isfinite(a.expires_at)
        if a.state == LockState.FREE:
            assert a.holder is None and a.reservation is None


@pytest.mark.parametrize(
    ("kind", "args", "field"),
    [
        ("continuous", (float("nan"), 0, 0), "pan"),
        ("continuous", (0, float("inf"), 0), "tilt"),
        ("continuous", (1.5, 0, 0), "pan"),
        ("absolute", (0, 0, -0.1), "zoom"),
        ("absolute", (0, 0, True), "zoom"),
        ("relative", (0, 2.5, 0), "tilt"),
        ("relative", ("0.1", 0, 0), "pan"),
        ("sideways", (0, 0, 0), "kind"),
    ],
)
def test_bad_moves_are_refused_naming_the_field(
    kind: str, args: tuple[object, object, object], field: str
) -> None:
    with pytest.raises(PtzError) as err:
        check_move(kind, *args)
    assert err.value.code == ErrorCode.BAD_REQUEST and err.value.message.startswith(field)


def test_a_continuous_move_always_has_a_bounded_timeout() -> None:
    assert check_move("continuous", 0.5, 0, 0).timeout == 1.0
    assert check_move("continuous", 0.5, 0, 0, timeout=2.5).timeout == 2.5
    for t in (0, -1, 6.0, float("nan")):
        with pytest.raises(PtzError):
            check_move("continuous", 0.5, 0, 0, timeout=t)
    with pytest.raises(PtzError):
        check_move(MoveKind.ABSOLUTE, 0, 0, 0, timeout=1.0)


def test_preset_tokens_are_tokens() -> None:
    assert check_token("preset", "gate-1") == "gate-1"
    for bad in ("", "x" * 65, "../etc", "a b", 7, None):
        with pytest.raises(PtzError):
            check_token("preset", bad)


def test_the_motion_watch_stops_only_the_latest_continuous_move() -> None:
    w = MotionWatch(grace=0.25)
    first = w.sent("cam1", 100.0, timeout=1.0)
    assert w.deadline() == 101.25 and w.due(101.2) == []
    second = w.sent("cam1", 100.5, timeout=1.0)  # refreshed before the first ran out
    assert not w.current("cam1", first) and w.current("cam1", second)
    assert w.due(101.3) == [] and w.due(101.75) == [("cam1", second)]
    assert w.due(200.0) == [] and w.deadline() is None  # each stop is due once
    w.sent("cam2", 100.0, timeout=2.0)
    w.sent("cam2", 100.5)  # an absolute move, a preset or a Stop ends the watch
    assert w.moving() == [] and w.deadline() is None
