"""Live sessions' re-check rounds, observed: "a revoked grant, a suspended tenant, a changed
principal ends the session at once" said as the round that must end it, not as wall time.

A session ends at the first re-check (gateway/live.py, every ``tenancy.recheck_interval``) that
runs on a policy snapshot with the change in it. How soon that is after the change depends on
the database thread's fetch and the loop's timers, which a loaded machine stretches (a bound
of "within 1 s" is a bet on the machine); which round ends it does not."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Round:
    now: datetime  # the time it decided at
    version: int  # the policy snapshot the round decided on
    left: int  # the watched tenant's live sessions after it


class RecheckRounds:
    """Wraps the gateway's ``live.recheck`` (a plain method, looked up per call) to note each
    round; ``version`` is the policy's snapshot version now (take it before the change)."""

    def __init__(self, gateway: Any, tenant: str) -> None:
        live, policy = gateway.live, gateway.tenancy.policy
        assert live is not None
        self._live, self._tenant = live, tenant
        self.rounds: list[Round] = []
        self._policy = policy
        original = live.recheck

        def recheck(now: datetime) -> int:
            version = policy.snapshot.version
            ended = int(original(now))
            left = sum(1 for s in live.live.values() if s.decision.tenant == tenant)
            self.rounds.append(Round(now, version, left))
            return ended

        live.recheck = recheck

    @property
    def version(self) -> int:
        return int(self._policy.snapshot.version)

    def assert_ended_by_first_round_after(self, version: int) -> None:
        """No session of the tenant was left after the first round on a newer snapshot."""
        after = [r for r in self.rounds if r.version > version]
        assert after, f"no re-check ran on a snapshot after version {version}: {self.rounds}"
        assert after[0].left == 0, f"still live after the first round on it: {self.rounds}"

    def expires_at(self) -> datetime:
        """When the watched tenant's one live session's credential expires."""
        (when,) = [
            s.decision.expires_at
            for s in self._live.live.values()
            if s.decision.tenant == self._tenant and s.decision.expires_at is not None
        ]
        return when

    def assert_ended_by_first_round_at(self, when: datetime) -> None:
        """No session of the tenant was left after the first round deciding at or after
        ``when``, and every round before it left one."""
        at = [r for r in self.rounds if r.now >= when]
        assert at, f"no re-check ran at or after {when}: {self.rounds[-3:]}"
        assert at[0].left == 0, f"still live after the first round at {when}: {at[:3]}"
        before = [r for r in self.rounds if r.now < when]
        assert all(r.left for r in before), f"ended before {when}: {before}"
