"""The ``[ptz]`` config section: PTZ arbitration's locks, priorities, idle behaviour and rate
limits.

Kept apart from :mod:`gateway.config` (which imports it) so PTZ's knobs live with the code that
reads them."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic.dataclasses import dataclass

from gateway.configtypes import STRICT, Seconds


def _priorities(value: str) -> str:
    from gateway.ptz.model import parse_priorities

    parse_priorities(value)
    return value


@dataclass(frozen=True, config=STRICT)
class PtzConfig:
    """PTZ arbitration (gateway/ptz/): locks, priorities, idle behaviour, rate limits."""

    # A lock lapses this long after its holder's last move (Genetec: 5 s).
    idle_release: Seconds = 5.0
    # Unsteered this long, a camera goes home (or walks its tour); 0: it stays put.
    return_after: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 120.0
    tour_dwell: Seconds = 20.0  # seconds at each preset of a tour
    move_rate: Seconds = 10.0  # moves per second per principal, sustained
    move_burst: Annotated[int, Field(ge=1, le=10_000)] = 20
    # A ContinuousMove always carries a Timeout: this one when the client names none, never
    # more than max_timeout, so a camera stops even if its client vanishes.
    default_timeout: Seconds = 1.0
    max_timeout: Annotated[float, Field(gt=0, le=60, allow_inf_nan=False)] = 5.0
    max_reservation: Seconds = 14400.0  # seconds an incident reservation may last
    camera_timeout: Seconds = 3.0  # seconds a camera has to answer one command
    # Priority by tenant kind, or kind.role (1..32000); a grant's own ptz_priority wins.
    priorities: Annotated[str, AfterValidator(_priorities)] = (
        "police=30000 council=20000 borough=10000 transport=5000 health=5000 *=1000"
    )
