"""The ``[mediamtx]`` config section: MediaMTX as an alternative media plane."""

from __future__ import annotations

from dataclasses import field
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field
from pydantic.dataclasses import dataclass


def _api_url(value: str) -> str:
    if value and not value.startswith(("http://", "https://")):
        raise ValueError("must be http://host:9997 or https://...")
    return value


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class MediaMtxConfig:
    """Off unless ``api_url`` is set (needs tenancy: sessions are decided by the policy)."""

    # MediaMTX's control API (its ``api: yes``, port 9997), e.g. http://127.0.0.1:9997.
    api_url: Annotated[str, AfterValidator(_api_url)] = ""
    # A MediaMTX user with the ``api`` action (authInternalUsers), if its API needs one.
    username: str = ""
    password: str = field(default="", repr=False)
    # Seconds between looks at MediaMTX's sessions: how late a kick or a usage report may be.
    interval: Annotated[float, Field(gt=0, le=60, allow_inf_nan=False)] = 1.0
    timeout: Annotated[float, Field(gt=0, le=60, allow_inf_nan=False)] = 5.0
