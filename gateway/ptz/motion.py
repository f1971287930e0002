"""When feedgate must stop a camera itself: a sans-I/O watch on continuous moves.

A ContinuousMove always carries a Timeout, and a camera is meant to stop by itself when it
runs out. Not every camera's firmware honours it, and a client that vanishes (a closed
laptop, a VMS that crashed mid-drag) never sends its Stop. So feedgate keeps its own deadline
for every continuous move it sent: ``timeout + grace`` after the camera answered, it sends
Stop, unless a later command on that camera superseded the move (a joystick refreshes its move
before the Timeout runs out; that later move is then the one being watched).

Each command on a camera bumps the camera's generation; a stop that falls due names the
generation it was for, and is only sent if nothing has been sent since (the caller checks
:meth:`MotionWatch.current` under the camera's command lock, so a stop and a new move cannot
cross on the way to the camera).
"""

from __future__ import annotations

from dataclasses import dataclass, field

STOP_GRACE_S = 0.25  # the camera's own timer goes first; ours is the backstop


@dataclass
class MotionWatch:
    grace: float = STOP_GRACE_S
    _generation: dict[str, int] = field(default_factory=dict)
    _due: dict[str, tuple[float, int]] = field(default_factory=dict)

    def sent(self, camera: str, now: float, timeout: float | None = None) -> int:
        """A command reached ``camera`` at ``now``; ``timeout``: it was a continuous move that
        should end by itself after that long. Returns the command's generation."""
        gen = self._generation.get(camera, 0) + 1
        self._generation[camera] = gen
        if timeout is not None and timeout > 0:
            self._due[camera] = (now + timeout + self.grace, gen)
        else:
            self._due.pop(camera, None)
        return gen

    def current(self, camera: str, generation: int) -> bool:
        """Nothing was sent to ``camera`` since the command of ``generation``."""
        return self._generation.get(camera, 0) == generation

    def due(self, now: float) -> list[tuple[str, int]]:
        """The (camera, generation) stops due by ``now``; each is returned once."""
        out = [(cam, gen) for cam, (at, gen) in self._due.items() if at <= now]
        for cam, _ in out:
            del self._due[cam]
        return out

    def moving(self) -> list[str]:
        """Cameras with a continuous move still being watched (to stop at shutdown)."""
        return list(self._due)

    def deadline(self) -> float | None:
        return min((at for at, _ in self._due.values()), default=None)


__all__ = ["STOP_GRACE_S", "MotionWatch"]
