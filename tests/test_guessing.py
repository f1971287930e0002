"""The guessing limits as a specification, on a clock the test drives."""

from __future__ import annotations

from tenants.guessing import GuessLimiter


def _guess(limiter: GuessLimiter, user: str, source: str, now: float) -> float | None:
    """One wrong password: None if it was refused unchecked, else the answer's delay."""
    if not limiter.before(user, source, now).check:
        return None
    return limiter.failed(user, source, now)


def test_ten_wrong_passwords_a_minute_are_checked_per_principal() -> None:
    limiter = GuessLimiter()
    # 100 guesses a second from 100 addresses, for two minutes.
    checked = [
        t
        for t in range(12_000)
        if _guess(limiter, "vms", f"198.51.100.{t % 100}", t / 100) is not None
    ]
    assert len(checked) == 20  # ten in each minute, whatever the number of addresses
    assert checked[9] / 100 < 1 and 60 <= checked[10] / 100 < 61


def test_ten_wrong_passwords_a_minute_are_checked_per_source() -> None:
    limiter = GuessLimiter()
    checked = [t for t in range(600) if _guess(limiter, f"user-{t}", "203.0.113.7", t / 10)]
    assert len(checked) == 10  # one address trying many names gets no further


def test_the_delay_doubles_with_the_failures_and_a_right_password_waits_for_nothing() -> None:
    limiter = GuessLimiter(base_delay=0.5, max_delay=4.0)
    delays = [limiter.failed("vms", "203.0.113.7", float(t)) for t in range(6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    verdict = limiter.before("vms", "203.0.113.7", 6.0)
    assert verdict.check and verdict.delay == 0.0


def test_an_attacker_cannot_lock_the_police_out_of_their_own_address() -> None:
    limiter = GuessLimiter()
    limiter.succeeded("vms", "10.0.0.5", 0.0)  # the VMS signs in as it does every day
    for t in range(100):
        _guess(limiter, "vms", f"203.0.113.{t}", 1 + t / 10)
    assert not limiter.before("vms", "203.0.200.1", 12.0).check  # any other address waits
    assert limiter.before("vms", "10.0.0.5", 12.0).check  # the VMS's own does not
    # Its own address has its own allowance, and guessing from it is throttled too.
    assert sum(_guess(limiter, "vms", "10.0.0.5", 13.0) is not None for _ in range(30)) == 10


def test_the_allowance_comes_back_as_the_window_slides() -> None:
    limiter = GuessLimiter()
    for t in range(10):
        assert _guess(limiter, "vms", "203.0.113.7", float(t)) is not None
    assert _guess(limiter, "vms", "203.0.113.7", 59.0) is None
    assert _guess(limiter, "vms", "203.0.113.7", 60.5) is not None  # the first left the window


def test_unknown_names_are_counted_like_real_ones_and_the_tables_are_bounded() -> None:
    limiter = GuessLimiter(max_keys=100)
    for t in range(1000):
        limiter.failed(f"name-{t}", f"source-{t}", float(t))
    assert len(limiter._principals._keys) <= 100 and len(limiter._sources._keys) <= 100
    assert limiter.checked_failures == 1000
