"""Every refusal at every entry point goes to the audit log through here, rate-limited per
source so a flood of refused requests cannot fill the log.

RTSP, WHEP, the MediaMTX hook, the HTTP middleware, gRPC and REST all call
:meth:`RefusalLog.record` (those holding a policy ``Decision``, :meth:`RefusalLog.decision`).
Each source (the peer's address) may write ``per_source`` entries per ``window`` seconds, and
the log as a whole ``total`` per window; beyond that refusals are only counted, and the next
entry written for that source carries how many were left out (``suppressed``), so the log
still says a flood happened and how big it was. The table of sources is bounded
(``max_sources``).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tenants.audit import AuditAction, AuditLog
from tenants.policy import Decision


def source_of(peer: str) -> str:
    """The address part of a peer ('ipv4:10.0.0.1:5000', '10.0.0.1:5000', '[::1]:80')."""
    text = peer.strip()
    for prefix in ("ipv4:", "ipv6:"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and host.count(":") == 0:
        return host
    return text or "?"


@dataclass
class _Bucket:
    start: float
    written: int = 0
    suppressed: int = 0


class RefusalLog:
    """Audits refusals (DENIED entries), at most ``per_source`` per source per window."""

    def __init__(
        self,
        audit: AuditLog,
        *,
        per_source: int = 60,
        total: int = 1200,
        window: float = 60.0,
        max_sources: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.audit = audit
        self.per_source = per_source
        self.total = total
        self.window = window
        self.max_sources = max_sources
        self.clock = clock
        self.suppressed_total = 0
        self._sources: OrderedDict[str, _Bucket] = OrderedDict()
        self._all = _Bucket(clock())
        self._lock = threading.Lock()

    def _admit(self, source: str, now: float) -> int | None:
        """None: leave this one out; else how many were left out before it."""
        with self._lock:
            if now - self._all.start >= self.window:
                self._all = _Bucket(now)
            bucket = self._sources.get(source)
            if bucket is None or now - bucket.start >= self.window:
                carried = bucket.suppressed if bucket is not None else 0
                bucket = _Bucket(now, suppressed=carried)
                self._sources[source] = bucket
            self._sources.move_to_end(source)
            while len(self._sources) > self.max_sources:
                self._sources.popitem(last=False)
            if bucket.written >= self.per_source or self._all.written >= self.total:
                bucket.suppressed += 1
                self.suppressed_total += 1
                return None
            bucket.written += 1
            self._all.written += 1
            left_out, bucket.suppressed = bucket.suppressed, 0
            return left_out

    def record(
        self,
        *,
        protocol: str,
        action: str,
        status: int,
        reason: str,
        peer: str = "",
        tenant: str | None = None,
        principal: str | None = None,
        camera: str | None = None,
        purpose: str | None = None,
        detail: Mapping[str, Any] | None = None,
        outcome: str = "denied",
    ) -> bool:
        """Append one DENIED entry (blocking: the audit log writes to the database). False
        when the source is over its rate and the refusal was only counted."""
        left_out = self._admit(source_of(peer), self.clock())
        if left_out is None:
            return False
        body: dict[str, Any] = {
            "reason": reason,
            "status": status,
            "protocol": protocol,
            "action": action,
            "peer": peer,
            **(detail or {}),
        }
        if left_out:
            body["suppressed"] = left_out
        # A refusal has happened: with the database down it waits in the audit spool.
        self.audit.append_or_spool(
            AuditAction.DENIED,
            tenant=tenant,
            principal=principal,
            camera=camera,
            purpose=purpose,
            outcome=outcome,
            detail=body,
        )
        return True

    def decision(
        self,
        decision: Decision,
        *,
        protocol: str,
        action: str,
        peer: str,
        camera: str | None = None,
        purpose: str | None = None,
        status: int | None = None,
        reason: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> bool:
        """:meth:`record` a policy decision's refusal (``status``/``reason``: the entry
        point's own answer, if it refuses an allowed decision). A failed sign-in (401) is
        marked ``unauthenticated``: the published figures count refusals of identified callers
        only."""
        status = decision.status if status is None else status
        return self.record(
            protocol=protocol,
            action=action,
            status=status,
            reason=decision.reason if reason is None else reason,
            peer=peer,
            tenant=decision.tenant,
            principal=decision.principal,
            camera=camera if camera is not None else decision.camera,
            purpose=purpose if purpose is not None else decision.purpose,
            detail=detail,
            outcome="unauthenticated" if status == 401 else "denied",
        )


__all__ = ["RefusalLog", "source_of"]
