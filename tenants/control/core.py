"""The control service's plumbing: what every operation shares.

* :meth:`Core.write` is the one write path: run the checks and the store change in one
  transaction in a thread, then (after the commit) append the audit entry with the caller as
  principal, then reload the policy so live decisions see the change at once. A write and its
  audit entry are not one transaction: the audit log takes its own lock before the
  database's, so nesting them could deadlock.
* :meth:`Core.read` runs blocking reads in a thread.
* :func:`operation` names an operation and sends every refusal it raises to the audit log
  (through :class:`tenants.refusals.RefusalLog`, the path RTSP's refusals take too).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar

from tenants.audit import AuditAction, AuditLog
from tenants.audit.keys import AuditKeys
from tenants.control.errors import (
    Code,
    ControlError,
    denied,
    from_exception,
    hidden,
    precondition,
)
from tenants.control.ports import Billing, MediaPlane, Nodes, NoMedia
from tenants.control.rules import Caller
from tenants.db import Database
from tenants.model import Role
from tenants.onvif import OnvifRegister
from tenants.policy import Policy
from tenants.refusals import RefusalLog
from tenants.store import NotFound, Snapshot, TenantStore
from tenants.tokens import TokenIssuer, TokenVerifier

_T = TypeVar("_T")
_P = ParamSpec("_P")


@dataclass(frozen=True)
class Change(Generic[_T]):
    """What a write did: its result and the audit entry it owes. ``changed`` False: nothing
    changed (e.g. revoking a revoked grant), so nothing is audited or reloaded."""

    result: _T
    action: AuditAction
    tenants: Iterable[str]
    detail: Mapping[str, Any] = field(default_factory=dict)
    camera: str | None = None
    changed: bool = True


@dataclass
class Core:
    """Everything the operations use. Built by the gateway from its tenancy bundle
    (``gateway/control.py``) or by a test from parts."""

    db: Database
    store: TenantStore
    policy: Policy
    audit: AuditLog
    issuer: TokenIssuer
    verifier: TokenVerifier
    # Every audit checkpoint key verification trusts (blocking: may read the key files).
    audit_keys: Callable[[], AuditKeys]
    platform_tenant: str
    media: MediaPlane = field(default_factory=NoMedia)
    billing: Billing | None = None
    refusals: RefusalLog | None = None
    onvif: OnvifRegister | None = None  # cameras' ONVIF settings (PTZ)
    nodes: Nodes | None = None  # the cluster's nodes; None: this gateway is one node

    def __post_init__(self) -> None:
        if self.refusals is None:
            self.refusals = RefusalLog(self.audit)

    @property
    def snapshot(self) -> Snapshot:
        return self.policy.snapshot

    # ---- the one write path and reads -----------------------------------------------------

    async def write(self, caller: Caller, method: str, fn: Callable[[], Change[_T]]) -> _T:
        """Check and change in one transaction, then audit, then reload (all in one thread)."""

        def run() -> _T:
            with self.db.transaction():
                change = fn()
            if change.changed:
                self.audit.append(
                    change.action,
                    tenant=caller.tenant,
                    principal=caller.subject,
                    camera=change.camera,
                    outcome="ok",
                    detail={
                        "api": method,
                        "via": caller.via,
                        "tenants": sorted(set(change.tenants)),
                        **change.detail,
                    },
                )
                self.policy.reload()
            return change.result

        return await self.read(run)

    async def read(self, fn: Callable[[], _T]) -> _T:
        """Run blocking work in a thread; store and domain errors become ControlErrors."""
        try:
            return await asyncio.to_thread(fn)
        except Exception as exc:
            error = from_exception(exc)
            if error is None:
                raise
            raise error from None

    # ---- refusals ---------------------------------------------------------------------------

    def managed(
        self,
        caller: Caller,
        kind: str,
        id: str,
        get: Callable[[str], _T],
        owner: Callable[[_T], str],
    ) -> _T:
        """``get(id)`` if the caller manages its tenant's objects (``owner``: its tenant); else
        the one answer for an object the caller may not manage and for no object at all."""
        found = existing(get, id)
        if found is None or not caller.admin_of(owner(found)):
            raise self.missing(caller, kind, id, "manage")
        return found

    def keeps_owner(
        self, caller: Caller, kind: str, id: str, was: str | None, now: str, why: str
    ) -> None:
        """An object stays with the tenant it belongs to: a write moving it from ``was`` to
        ``now`` is refused with ``why``, or, when the caller may not manage ``was``'s objects,
        answered as for no object at all."""
        if was is None or was == now:
            return
        if not caller.admin_of(was):
            raise self.missing(caller, kind, id, "manage")
        raise precondition(why)

    def missing(self, caller: Caller, kind: str, id: str, verb: str = "see") -> ControlError:
        """What a caller hears of an object it may not see, or that does not exist: only those
        who see every tenant's objects (the platform's admins) learn that it is missing."""
        if caller.platform_admin:
            return ControlError(Code.NOT_FOUND, f"{kind} {id!r} not found")
        return hidden(kind, id, verb)

    async def refused(
        self, caller: Caller, method: str, error: ControlError, *, camera: str | None = None
    ) -> None:
        assert self.refusals is not None
        status = 401 if error.code == Code.UNAUTHENTICATED else 403
        await asyncio.to_thread(
            self.refusals.record,
            protocol=caller.via,
            action="api",
            status=status,
            reason=str(error),
            peer=caller.peer,
            tenant=caller.tenant or None,
            principal=caller.subject or None,
            camera=camera,
            detail={"method": method},
        )


def require_admin(caller: Caller) -> None:
    if Role.ADMIN not in caller.roles:
        raise denied("needs the admin role")


def existing(get: Callable[[str], _T], key: str) -> _T | None:
    """``get(key)``, or None when the store has no such object."""
    try:
        return get(key)
    except NotFound:
        return None


class HasCore(Protocol):
    core: Core


_S = TypeVar("_S", bound=HasCore)


def operation(
    name: str,
) -> Callable[
    [Callable[Concatenate[_S, Caller, _P], Awaitable[_T]]],
    Callable[Concatenate[_S, Caller, _P], Awaitable[_T]],
]:
    """Name an operation (the audit log's ``api``/``method``) and audit its refusals."""

    def wrap(
        fn: Callable[Concatenate[_S, Caller, _P], Awaitable[_T]],
    ) -> Callable[Concatenate[_S, Caller, _P], Awaitable[_T]]:
        @functools.wraps(fn)
        async def run(self: _S, caller: Caller, /, *args: _P.args, **kw: _P.kwargs) -> _T:
            try:
                return await fn(self, caller, *args, **kw)
            except ControlError as exc:
                if exc.refusal:
                    await self.core.refused(caller, name, exc)
                raise

        run.operation = name  # type: ignore[attr-defined]
        return run

    return wrap


__all__ = ["Change", "Core", "existing", "operation", "require_admin"]
