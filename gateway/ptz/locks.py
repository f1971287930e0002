"""Where each camera's lock state lives: one owner per camera, behind :class:`LockStore`.

:class:`LocalLockStore` keeps the per-camera :class:`~gateway.ptz.arbiter.CameraArbiter` s in
this process (embedded default: one node). With several nodes (issue #15) a Redis store takes
its place: the same arbiter state per camera in one key, changed by a check-and-set script so
two nodes cannot both grant control of one camera. Callers only ever see this interface, and
every method is async so that implementation can do I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from gateway.ptz.arbiter import ArbiterSettings, CameraArbiter, Claimant, Effect, LockView, Verdict


class LockStore(Protocol):
    async def claim(
        self, camera: str, claimant: Claimant, now: float, hold: float = 0.0
    ) -> Verdict:
        """Ask for control to move (``hold``: how long the move itself lasts)."""
        ...

    async def release(self, camera: str, claimant: Claimant, now: float) -> Verdict: ...

    async def reserve(
        self, camera: str, claimant: Claimant, reason: str, until: float, now: float
    ) -> Verdict: ...

    async def fail(self, camera: str, now: float) -> Verdict:
        """The camera did not answer: release its lock."""
        ...

    async def tick(self, now: float) -> list[Effect]:
        """Carry out every timed transition due by ``now``."""
        ...

    async def view(self, camera: str) -> LockView: ...

    def deadline(self) -> float | None:
        """The earliest time :meth:`tick` has something to do (None: nothing pending)."""
        ...


class LocalLockStore:
    """The in-process lock store: one arbiter per camera, created on first use."""

    def __init__(self, settings: Callable[[str], ArbiterSettings]) -> None:
        self._settings = settings
        self._arbiters: dict[str, CameraArbiter] = {}

    def arbiter(self, camera: str) -> CameraArbiter:
        a = self._arbiters.get(camera)
        if a is None:
            a = self._arbiters[camera] = CameraArbiter(camera, self._settings(camera))
        return a

    async def claim(
        self, camera: str, claimant: Claimant, now: float, hold: float = 0.0
    ) -> Verdict:
        return self.arbiter(camera).claim(claimant, now, hold)

    async def release(self, camera: str, claimant: Claimant, now: float) -> Verdict:
        return self.arbiter(camera).release(claimant, now)

    async def reserve(
        self, camera: str, claimant: Claimant, reason: str, until: float, now: float
    ) -> Verdict:
        return self.arbiter(camera).reserve(claimant, reason, until, now)

    async def fail(self, camera: str, now: float) -> Verdict:
        return self.arbiter(camera).fail(now)

    async def tick(self, now: float) -> list[Effect]:
        out: list[Effect] = []
        for a in self._arbiters.values():
            due = a.deadline()
            if due is not None and due <= now:
                out.extend(a.tick(now).effects)
        return out

    async def view(self, camera: str) -> LockView:
        return self.arbiter(camera).view()

    def deadline(self) -> float | None:
        dues = [d for a in self._arbiters.values() if (d := a.deadline()) is not None]
        return min(dues) if dues else None


__all__ = ["LocalLockStore", "LockStore"]
