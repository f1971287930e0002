"""The control service of one gateway process, wired to its tenancy bundle, its media plane
(live sessions, configured cameras) and its billing. gRPC, REST and the admin CLI all use
the one built here.

Nothing here imports the RTSP server, masking or PyAV: the media plane is reached through the
objects the process hands in, so a control-only process loads none of the media stack."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from gateway.config import Config
from gateway.tenancy import Tenancy
from tenants.control import ControlService, Core
from tenants.control.ports import Billing, LiveSession, MediaPlane, Nodes, UsageLine


def control_service(
    tenancy: Tenancy,
    platform_tenant: str,
    *,
    media: MediaPlane | None = None,
    billing: Billing | None = None,
    nodes: Nodes | None = None,
) -> ControlService:
    core = Core(
        db=tenancy.db,
        store=tenancy.store,
        policy=tenancy.policy,
        audit=tenancy.audit,
        issuer=tenancy.issuer,
        verifier=tenancy.verifier,
        audit_keys=tenancy.audit_trust,
        platform_tenant=platform_tenant,
        billing=billing,
        refusals=tenancy.refusals,
        onvif=tenancy.onvif,
        nodes=nodes,
    )
    if media is not None:
        core.media = media
    return ControlService(core)


class GatewayMedia:
    """This process's live sessions (``gateway.live.LiveSessions``, every protocol) and the
    config's cameras, as the control service's media plane. ``live`` and ``rtsp`` are the
    process's session registry and RTSP server (duck-typed, not imported); the RTSP server
    adds each session's counters."""

    def __init__(self, config: Config, live: Any, rtsp: Any = None) -> None:
        self._configured = frozenset(c.id for c in config.cameras)
        self.live = live
        self.rtsp = rtsp

    def configured_cameras(self) -> frozenset[str]:
        return self._configured

    def sessions(self) -> Sequence[LiveSession]:
        out = []
        rtsp_sessions = self.rtsp.sessions if self.rtsp is not None else {}
        for sid, live in list(self.live.live.items()):
            d = live.decision
            rs = rtsp_sessions.get(sid)
            r = rs.reader if rs is not None else None
            created = rs.created if rs is not None else time.time()
            out.append(
                LiveSession(
                    id=sid,
                    protocol=live.protocol,
                    mode=live.mode,
                    state=rs.state if rs is not None else "admitted",
                    tenant=d.tenant,
                    principal=d.principal,
                    camera=d.camera or live.path.partition("/")[0],
                    variant=d.variant,
                    peer=live.peer,
                    created=datetime.fromtimestamp(created, UTC),
                    bytes_sent=r.bytes_sent if r else 0,
                    packets_sent=r.packets_sent if r else 0,
                    packets_dropped=r.packets_dropped if r else 0,
                    frames_dropped=r.frames_dropped if r else 0,
                )
            )
        return out

    def kick(self, session_id: str, reason: str) -> bool:
        """End the session as the re-check does: its protocol's stop, then the registry's end
        (which frees its cap and audits, even if the stop could not reach it)."""
        live = self.live.live.get(session_id)
        if live is None:
            return False
        try:
            live.stop(reason)
        finally:
            self.live.end(session_id, reason)
        return True


class LedgerBilling:
    """The ledger and invoices of this process's metering (blocking: called in threads)."""

    def __init__(self, metering: Any) -> None:
        self.metering = metering

    def usage(self, tenant: str, period: str) -> Sequence[UsageLine]:
        per_camera = self.metering.ledger.usage_by_camera(tenant, period)
        return [
            UsageLine(tenant, period, camera, str(metric), int(quantity))
            for camera, metrics in per_camera.items()
            for metric, quantity in sorted(metrics.items())
        ]

    def tenants(self, period: str) -> Sequence[str]:
        return list(self.metering.ledger.tenants(period))

    def invoices(self, tenant: str | None, period: str | None) -> Sequence[dict[str, Any]]:
        out = []
        for inv in self.metering.invoices.list(tenant=tenant, period=period):
            d = asdict(inv)
            d.pop("stripe_invoice_id", None)
            d["status"] = str(inv.status)
            d["lines"] = [
                {**asdict(line), "kind": str(line.kind), "metric": line.metric and str(line.metric)}
                for line in inv.lines
            ]
            out.append(d)
        return out

    def emitted(self) -> dict[str, Any]:
        meter = self.metering.meter
        return {
            "since": meter.since,
            "events": meter.events_emitted,
            "cameras": {k: list(v) for k, v in meter.emitted.items()},
            "sink": {"spooled": dict(self.metering.spool.stats.__dict__)},
        }


__all__ = ["GatewayMedia", "LedgerBilling", "control_service"]
