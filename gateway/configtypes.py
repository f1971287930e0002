"""Field types the config sections share: :mod:`gateway.config` and the sections declared
next to the code that reads them (``gateway.cluster.settings``, ``gateway.webrtc.settings``,
``gateway.recording.settings``) use the same ports, durations, ids and strictness."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import ConfigDict, Field

# Every section refuses keys it does not know (a typo is an error, not a silent default).
STRICT = ConfigDict(extra="forbid")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

Port = Annotated[int, Field(ge=0, le=65535)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


def comma_list(value: Any) -> Any:
    """A TOML array, or (from the environment) a comma-separated string."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value
