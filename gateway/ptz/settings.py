"""From the config to PTZ settings: per-camera arbitration settings, ONVIF endpoints and the
priority table, with the config's checks (each names the key and the reason)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gateway.config import CameraConfig, Config, PtzConfig
from gateway.ptz.arbiter import ArbiterSettings, IdleAction
from gateway.ptz.client import OnvifEndpoint
from gateway.ptz.model import DEFAULT_PRIORITY, MAX_PRIORITY


def priority_for(
    table: Mapping[str, int], kind: str, roles: Iterable[str], grant_priority: int = 0
) -> int:
    """A grant's own priority wins; then the best of kind.role; then kind; then ``*``."""
    if grant_priority > 0:
        return min(grant_priority, MAX_PRIORITY)
    by_role = [table[f"{kind}.{r}"] for r in roles if f"{kind}.{r}" in table]
    if by_role:
        return max(by_role)
    return table.get(kind, table.get("*", DEFAULT_PRIORITY))


@dataclass(frozen=True)
class PtzCamera:
    id: str
    endpoint: OnvifEndpoint
    arbiter: ArbiterSettings


def arbiter_settings(ptz: PtzConfig, cam: CameraConfig | None) -> ArbiterSettings:
    idle = IdleAction(cam.ptz_idle) if cam is not None else IdleAction.HOME
    tour = tuple(t.strip() for t in cam.ptz_tour.split(",") if t.strip()) if cam else ()
    return ArbiterSettings(
        idle_release=ptz.idle_release,
        return_after=ptz.return_after,
        idle_action=idle,
        tour=tour,
        tour_dwell=ptz.tour_dwell,
        move_rate=ptz.move_rate,
        move_burst=ptz.move_burst,
        max_reservation=ptz.max_reservation,
    )


def ptz_cameras(config: Config) -> dict[str, PtzCamera]:
    """The configured cameras with an ONVIF endpoint (checked by :func:`check_ptz_config`)."""
    out = {}
    for cam in config.cameras:
        if cam.onvif:
            ep = OnvifEndpoint.parse(
                cam.onvif, cam.onvif_username, cam.onvif_password, cam.onvif_profile
            )
            out[cam.id] = PtzCamera(cam.id, ep, arbiter_settings(config.ptz, cam))
    return out


__all__ = [
    "PtzCamera",
    "arbiter_settings",
    "priority_for",
    "ptz_cameras",
]
