"""One policy decision for every entry point: ``Policy.authorize(request) -> Decision``.

RTSP (DESCRIBE/SETUP/PLAY/ANNOUNCE), HTTP, gRPC and MediaMTX's external auth all build an
``AccessRequest`` and ask here. The decision works from an in-memory snapshot of the tenancy
store (reloaded when the store's version changes), so a decision costs a dict lookup or two plus,
for a token not seen before, one signature check.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum

from tenants.guessing import GuessLimiter
from tenants.model import (
    Camera,
    Grant,
    MaskKind,
    MaskZone,
    Principal,
    Quality,
    Right,
    Role,
    Tenant,
)
from tenants.months import DEFAULT_ZONE
from tenants.store import Snapshot, TenantStore
from tenants.tokens import Claims, PartnerIssuer, TokenError, TokenVerifier

log = logging.getLogger(__name__)

DIGEST_REALM = "feedgate"


class Action(StrEnum):
    LIVE = "live"
    PLAYBACK = "playback"
    PTZ = "ptz"
    EXPORT = "export"
    PUBLISH = "publish"
    API = "api"  # control API and consoles: role checks happen per method
    METRICS = "metrics"
    # The media server itself (MediaMTX's api, metrics and pprof): the platform's staff only.
    MEDIA_SERVER = "media_server"


# Which right a camera action needs under a grant, and which roles may use it.
_RIGHT_FOR = {
    Action.LIVE: Right.LIVE,
    Action.PLAYBACK: Right.PLAYBACK,
    Action.PTZ: Right.PTZ,
    Action.EXPORT: Right.EXPORT,
}
_ROLES_FOR = {
    Action.LIVE: frozenset({Role.VIEWER, Role.OPERATOR, Role.INVESTIGATOR, Role.ADMIN}),
    Action.PLAYBACK: frozenset({Role.INVESTIGATOR, Role.OPERATOR, Role.ADMIN}),
    Action.PTZ: frozenset({Role.OPERATOR, Role.ADMIN}),
    Action.EXPORT: frozenset({Role.INVESTIGATOR, Role.ADMIN}),
    Action.PUBLISH: frozenset({Role.OPERATOR, Role.ADMIN}),
    Action.API: frozenset(Role),
    Action.METRICS: frozenset({Role.ADMIN, Role.AUDITOR, Role.FINANCE, Role.OPERATOR}),
    Action.MEDIA_SERVER: frozenset({Role.ADMIN, Role.OPERATOR}),
}
# Actions only the platform tenant (the one that runs the network) may take.
_PLATFORM_ONLY = frozenset({Action.MEDIA_SERVER})
# The one answer to a wrong password, an unknown user and a throttled guess alike.
BAD_CREDENTIALS = "bad credentials"


@dataclass(frozen=True)
class AccessRequest:
    action: Action
    protocol: str  # rtsp, webrtc, http, grpc, mediamtx
    camera: str | None = None
    token: str | None = None
    username: str | None = None
    password: str | None = None  # Basic: a principal's password, or a token as the password
    # Digest: the entry point verifies the response against a principal's stored HA1.
    digest_username: str | None = None
    digest_check: Callable[[str], bool] | None = None
    purpose: str | None = None
    quality: Quality = Quality.MAIN
    unmasked: bool = False  # the client asks for the unmasked original
    playback_age_s: float | None = None
    peer: str = ""
    now: datetime | None = None


@dataclass(frozen=True)
class Decision:
    allow: bool
    status: int  # 200, or 401 (who are you?) / 403 (not allowed) / 404 (no such camera)
    reason: str
    tenant: str | None = None
    principal: str | None = None
    camera: str | None = None
    masked: bool = True
    quality: Quality = Quality.MAIN
    grant_id: str | None = None  # None: the tenant owns the camera
    ptz_priority: int = 0
    max_concurrent: int | None = None
    expires_at: datetime | None = None  # the credential's end: sessions stop then
    purpose: str | None = None
    roles: frozenset[Role] = frozenset()
    # The black-out zones this viewer must get burnt in; empty: the original stream.
    mask_zones: tuple[MaskZone, ...] = ()
    # Liftable zones were lifted (unmask right + purpose): audited, and only until then.
    lifted: tuple[str, ...] = ()
    lift_expires_at: datetime | None = None
    action: Action = Action.LIVE
    # The principal is one of ours (not vouched for by a partner's IdP): live sessions are
    # re-checked against its record, so deleting, disabling or narrowing it ends them.
    registered: bool = False

    @property
    def variant(self) -> str:
        """'unmasked', or 'masked-<digest of the zones>': viewers with the same zones share
        one transcode."""
        if not self.mask_zones:
            return "unmasked"
        h = hashlib.sha256()
        for z in sorted(self.mask_zones, key=lambda z: z.id):
            h.update(f"{z.id}:{z.points}".encode())
        return f"masked-{h.hexdigest()[:12]}"


_NO_HA1 = "0" * 32


def _deny(status: int, reason: str, **kw: object) -> Decision:
    return Decision(False, status, reason, **kw)  # type: ignore[arg-type]


def digest_ha1(username: str, password: str, realm: str = DIGEST_REALM) -> str:
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).hexdigest()


@dataclass
class _Identity:
    tenant: Tenant
    principal: Principal | None
    subject: str
    roles: frozenset[Role]
    cameras: frozenset[str] | None = None
    purpose: str | None = None
    expires_at: datetime | None = None
    partner: bool = False  # vouched for by a partner's identity provider, not by us


@dataclass
class _Index:
    snapshot: Snapshot
    grants_by_grantee: dict[str, list[Grant]] = field(default_factory=dict)
    grants_by_id: dict[str, Grant] = field(default_factory=dict)


class Policy:
    def __init__(
        self,
        store: TenantStore,
        verifier: TokenVerifier,
        *,
        lift_timeout: timedelta = timedelta(minutes=30),
        platform_tenant: str | None = None,
        zone: tzinfo = DEFAULT_ZONE,
        guesses: GuessLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.store = store
        self.lift_timeout = lift_timeout
        self.platform_tenant = platform_tenant
        self.zone = zone  # grant windows are in the deployment's local time
        # Passwords are checked at most so often per principal and per source (see
        # tenants.guessing); a refused guess is answered after ``sleep``, on ``clock``'s time.
        self.guesses = guesses if guesses is not None else GuessLimiter()
        self.clock = clock
        self.sleep = sleep
        self.verifier = verifier
        self._index = self._build(store.snapshot())
        # Identities of recently seen tokens at the current snapshot: the same token comes on
        # DESCRIBE, SETUP and PLAY, and on every reconnect.
        self._identities: dict[tuple[object, ...], _Identity | Decision] = {}

    # ---- snapshot ------------------------------------------------------------------------------

    @staticmethod
    def _build(snapshot: Snapshot) -> _Index:
        index = _Index(snapshot)
        for g in snapshot.grants:
            if g.active:
                index.grants_by_grantee.setdefault(g.grantee_tenant, []).append(g)
                index.grants_by_id[g.id] = g
        return index

    @property
    def identities_cached(self) -> int:
        return len(self._identities)

    @property
    def snapshot(self) -> Snapshot:
        return self._index.snapshot

    def fetch(self) -> Snapshot | None:
        """The store's snapshot if it changed since ours, else None. Blocking (the database):
        run it off the event loop, then :meth:`apply` the result on it."""
        if self.store.version() == self._index.snapshot.version:
            return None
        return self.store.snapshot()

    def apply(self, snapshot: Snapshot) -> bool:
        """Decide from ``snapshot`` from now on, unless ours is already as new (two fetches
        may finish out of order)."""
        if snapshot.version < self._index.snapshot.version:
            return False
        self._index = self._build(snapshot)
        self._identities = {}
        self.verifier.set_partners(self._partners())
        return True

    def reload(self, force: bool = False) -> bool:
        """Pick up store changes (ours or another node's), blocking. Cheap when nothing
        changed; ``force`` rebuilds from the store whatever its version."""
        snapshot = self.store.snapshot() if force else self.fetch()
        return snapshot is not None and self.apply(snapshot)

    def _partners(self) -> list[PartnerIssuer]:
        out: list[PartnerIssuer] = []
        for t in self._index.snapshot.tenants.values():
            partner = PartnerIssuer.from_tenant(t)
            if partner is not None:
                out.append(partner)
        return out

    # ---- identity ------------------------------------------------------------------------------

    async def _identify(self, req: AccessRequest, now: datetime) -> _Identity | Decision:
        token = req.token
        if token is None and req.password is not None and req.password.count(".") == 2:
            token = req.password  # a token carried as a Basic password (VMS friendly)
        if token is not None:
            try:
                claims = await self.verifier.verify_async(token, now=now)
            except TokenError as exc:
                log.info("token refused from %s: %s", req.peer or "?", exc.reason)
                return _deny(401, f"invalid token: {exc.reason}")
            # Keyed by everything _from_claims reads, so two partner tokens sharing a jti
            # can never share an identity.
            key = (
                claims.issuer,
                claims.token_id,
                claims.tenant,
                claims.subject,
                claims.roles,
                claims.cameras,
                claims.purpose,
                claims.expires_at,
            )
            ident = self._identities.get(key)
            if ident is None:
                if len(self._identities) >= 10_000:
                    self._identities.clear()
                self._drop_expired_identities(now)
                ident = self._identities[key] = self._from_claims(claims)
            return ident
        if req.digest_username is not None and req.digest_check is not None:
            return await self._password(req, req.digest_username, req.digest_check)
        if req.username is not None and req.password is not None:
            given = digest_ha1(req.username, req.password)
            return await self._password(
                req, req.username, lambda ha1: hmac.compare_digest(given, ha1)
            )
        return _deny(401, "credentials required")

    def _drop_expired_identities(self, now: datetime, at_most: int = 8) -> None:
        """Look at the oldest few identities: drop those whose token has expired, send the
        rest to the back. Every reconnect brings a fresh token, so without this the map kept
        one identity per token ever seen until 10,000 (the soak's memory growth)."""
        ids = self._identities
        for _ in range(min(at_most, len(ids))):
            key = next(iter(ids))
            ident = ids.pop(key)
            expires_at = key[-1]
            if isinstance(expires_at, datetime) and expires_at > now:
                ids[key] = ident

    async def _password(
        self, req: AccessRequest, user: str, check: Callable[[str], bool]
    ) -> _Identity | Decision:
        """A principal's password (or Digest response), checked within the guessing limits.
        Unknown user, disabled user and wrong password get the same answer after the same
        delay; a right password is answered at once."""
        source = req.peer or "?"
        verdict = self.guesses.before(user, source, self.clock())
        if not verdict.check:
            await self.sleep(verdict.delay)
            return _deny(401, BAD_CREDENTIALS)
        principal = self._index.snapshot.principals.get(user)
        usable = principal is not None and principal.digest_ha1 is not None
        # An unknown user's check still runs, against nothing, so it costs the same time.
        ok = check(principal.digest_ha1 if principal and principal.digest_ha1 else _NO_HA1)
        if principal is None or not usable or principal.disabled or not ok:
            await self.sleep(self.guesses.failed(user, source, self.clock()))
            return _deny(401, BAD_CREDENTIALS)
        self.guesses.succeeded(user, source, self.clock())
        return self._from_principal(principal)

    def _from_claims(self, claims: Claims) -> _Identity | Decision:
        snap = self._index.snapshot
        tenant = snap.tenants.get(claims.tenant)
        if tenant is None:
            return _deny(403, f"unknown tenant {claims.tenant!r}")
        principal = snap.principals.get(claims.subject)
        token_roles = frozenset(Role(r) for r in claims.roles if r in Role._value2member_map_)
        partner = claims.issuer != self.verifier.own_issuer
        if principal is None and not partner:
            # Our tokens are issued to registered principals only, and name one: a deleted
            # principal's tokens die with it, whatever roles they list.
            return _deny(403, f"unknown principal {claims.subject!r}", tenant=tenant.id)
        if principal is not None:
            if principal.tenant_id != tenant.id:
                return _deny(403, "principal belongs to another tenant")
            if principal.disabled:
                return _deny(403, "principal disabled")
            # A token never grants more than the principal holds.
            roles = token_roles & principal.roles if token_roles else principal.roles
        else:
            # A partner's own users are not in our store: their IdP vouches for the roles.
            roles = token_roles
        return _Identity(
            tenant=tenant,
            principal=principal,
            subject=claims.subject,
            roles=roles,
            cameras=claims.cameras,
            purpose=claims.purpose,
            expires_at=claims.expires_at,
            partner=partner,
        )

    def _from_principal(self, principal: Principal) -> _Identity | Decision:
        tenant = self._index.snapshot.tenants.get(principal.tenant_id)
        if tenant is None:
            return _deny(403, "principal's tenant is gone")
        return _Identity(tenant, principal, principal.id, principal.roles)

    # ---- the decision --------------------------------------------------------------------------

    async def authorize(self, req: AccessRequest) -> Decision:
        now = req.now or datetime.now(UTC)
        ident = await self._identify(req, now)
        if isinstance(ident, Decision):
            return ident
        return self.decide(ident, req, now)

    def decide(self, ident: _Identity, req: AccessRequest, now: datetime) -> Decision:
        tenant = ident.tenant
        base: dict[str, object] = {
            "tenant": tenant.id,
            "principal": ident.subject,
            "camera": req.camera,
            "expires_at": ident.expires_at,
            "roles": ident.roles,
            "action": req.action,
            "registered": ident.principal is not None,
        }
        if not tenant.active:
            return _deny(403, f"tenant {tenant.id} is suspended", **base)
        if not (ident.roles & _ROLES_FOR[req.action]):
            return _deny(403, f"no role allows {req.action.value}", **base)
        if req.action in _PLATFORM_ONLY and (
            self.platform_tenant is None or tenant.id != self.platform_tenant
        ):
            return _deny(403, f"only the platform's staff may use {req.action.value}", **base)
        if req.action in (Action.API, Action.METRICS, Action.MEDIA_SERVER):
            return Decision(True, 200, "ok", **base)  # type: ignore[arg-type]
        if req.camera is None:
            return _deny(400, "no camera named", **base)
        camera = self._index.snapshot.cameras.get(req.camera)
        if camera is None or not self._visible(ident.tenant.id, camera):
            # One answer for no camera and for a camera this tenant neither owns nor has a
            # grant on: its name is not a way to learn what others have (issue #10.9).
            return _deny(404, f"no camera {req.camera!r}", **base)
        if ident.cameras is not None and camera.id not in ident.cameras:
            return _deny(403, "token does not cover this camera", **base)
        purpose = req.purpose or ident.purpose
        if camera.owner_tenant == tenant.id:
            decision = self._owner_decision(ident, req, camera, purpose, base)
        elif req.action == Action.PUBLISH:
            return _deny(403, "only the camera's owner publishes it", **base)
        else:
            decision = self._grant_decision(ident, req, camera, purpose, now, base)
        if not decision.allow or req.action == Action.PUBLISH:
            return decision
        return self._apply_masks(decision, ident, camera, now)

    def _visible(self, tenant: str, camera: Camera) -> bool:
        return camera.owner_tenant == tenant or any(
            g.covers(camera) for g in self._index.grants_by_grantee.get(tenant, ())
        )

    def _apply_masks(
        self, decision: Decision, ident: _Identity, camera: Camera, now: datetime
    ) -> Decision:
        """Which zones this viewer gets burnt in. ``decision.masked`` on entry means 'no lift
        allowed or asked'; a lift removes only liftable zones, never permanent ones."""
        kept, lifted = self._zones(camera.id, ident.tenant, lifting=not decision.masked)
        return replace(
            decision,
            masked=bool(kept),
            mask_zones=kept,
            lifted=lifted,
            lift_expires_at=now + self.lift_timeout if lifted else None,
        )

    def _zones(
        self, camera_id: str, tenant: Tenant, *, lifting: bool
    ) -> tuple[tuple[MaskZone, ...], tuple[str, ...]]:
        """(the zones burnt in for ``tenant`` on this camera now, the ids of those lifted)."""
        zones = tuple(
            z for z in self._index.snapshot.masks.get(camera_id, ()) if z.applies_to(tenant.kind)
        )
        kept = tuple(z for z in zones if not (lifting and z.kind == MaskKind.LIFTABLE))
        return kept, tuple(z.id for z in zones if z not in kept)

    def _owner_decision(
        self,
        ident: _Identity,
        req: AccessRequest,
        camera: Camera,
        purpose: str | None,
        base: dict[str, object],
    ) -> Decision:
        # The owner sees its own cameras; unmasked still needs a stated purpose, so every
        # look behind a mask is accounted for.
        unmasked = req.unmasked and purpose is not None
        return Decision(
            True,
            200,
            "owner",
            masked=not unmasked,
            quality=req.quality,
            ptz_priority=32000,
            purpose=purpose,
            **base,  # type: ignore[arg-type]
        )

    def _grant_decision(
        self,
        ident: _Identity,
        req: AccessRequest,
        camera: Camera,
        purpose: str | None,
        now: datetime,
        base: dict[str, object],
    ) -> Decision:
        right = _RIGHT_FOR[req.action]
        candidates = [
            g
            for g in self._index.grants_by_grantee.get(ident.tenant.id, ())
            if g.active and g.covers(camera) and right in g.rights
        ]
        if not candidates:
            return _deny(
                403, f"no grant gives {ident.tenant.id} {right.value} on {camera.id}", **base
            )
        reasons: list[str] = []
        if len(candidates) > 1:
            candidates.sort(key=_grant_rank, reverse=True)
        for g in candidates:
            c = g.constraints
            if c.time_windows and not any(w.contains(now, self.zone) for w in c.time_windows):
                reasons.append(f"grant {g.id}: outside its time windows")
                continue
            if c.purpose_required and not purpose:
                reasons.append(f"grant {g.id}: a purpose or incident reference is required")
                continue
            if (
                # An export is footage taken away: it reaches back no further than playback.
                req.action in (Action.PLAYBACK, Action.EXPORT)
                and c.max_playback_age_s is not None
                and req.playback_age_s is not None
                and req.playback_age_s > c.max_playback_age_s
            ):
                reasons.append(f"grant {g.id}: footage older than {c.max_playback_age_s}s")
                continue
            unmasked = req.unmasked and Right.UNMASK in g.rights and purpose is not None
            quality = Quality.SUB if Quality.SUB in (req.quality, c.quality_cap) else Quality.MAIN
            return Decision(
                True,
                200,
                f"grant {g.id}",
                masked=not unmasked,
                quality=quality,
                grant_id=g.id,
                ptz_priority=c.ptz_priority,
                max_concurrent=c.max_concurrent_streams,
                purpose=purpose,
                **base,  # type: ignore[arg-type]
            )
        return _deny(403, "; ".join(reasons), **base)

    # ---- live sessions -------------------------------------------------------------------------

    def revalidate(self, decision: Decision, now: datetime | None = None) -> str | None:
        """Why a live session must end now (expired credential, revoked grant, suspended tenant,
        deleted, disabled or narrowed principal, deleted or re-owned camera, changed privacy
        masks, closed time window), or None while it may go on."""
        now = now or datetime.now(UTC)
        if decision.expires_at is not None and now >= decision.expires_at:
            return "credential expired"
        if decision.lift_expires_at is not None and now >= decision.lift_expires_at:
            return "mask lift expired"
        snap = self._index.snapshot
        tenant = snap.tenants.get(decision.tenant or "")
        if tenant is None or not tenant.active:
            return "tenant suspended"
        if decision.registered:
            principal = snap.principals.get(decision.principal or "")
            if principal is None or principal.tenant_id != decision.tenant:
                return "principal deleted"
            if principal.disabled:
                return "principal disabled"
            if not (decision.roles & principal.roles & _ROLES_FOR[decision.action]):
                return f"principal's roles no longer allow {decision.action.value}"
        # The camera's record is what the decision was about: deleted or re-owned, its media
        # plays to nobody under the old decision, in whichever process the session runs.
        camera = snap.cameras.get(decision.camera) if decision.camera is not None else None
        if decision.camera is not None and camera is None:
            return "camera deleted"
        # A mask drawn, moved or removed since: the session's pixels were burnt in with other
        # zones. It ends, and its viewer's next decision gets the zones as they are now.
        if camera is not None and decision.action in _RIGHT_FOR:
            kept, _ = self._zones(camera.id, tenant, lifting=bool(decision.lifted))
            if _zone_key(kept) != _zone_key(decision.mask_zones):
                return "privacy masks changed"
        if decision.grant_id is None:
            if camera is not None and camera.owner_tenant != decision.tenant:
                return "camera changed owner"
            return None
        grant = self._index.grants_by_id.get(decision.grant_id)
        if grant is None or not grant.active:
            return "grant revoked"
        if camera is not None and camera.owner_tenant != grant.owner_tenant:
            return "camera changed owner"
        if camera is not None and not grant.covers(camera):
            return "the grant no longer covers the camera"
        windows = grant.constraints.time_windows
        if windows and not any(w.contains(now, self.zone) for w in windows):
            return "outside the grant's time windows"
        return None


def _zone_key(
    zones: tuple[MaskZone, ...],
) -> frozenset[tuple[str, tuple[tuple[float, float], ...]]]:
    return frozenset((z.id, z.points) for z in zones)


def _grant_rank(g: Grant) -> tuple[int, int]:
    # Prefer the grant that gives the most (unmask, then more rights) for the same request.
    return (1 if Right.UNMASK in g.rights else 0, len(g.rights))


__all__ = [
    "BAD_CREDENTIALS",
    "DIGEST_REALM",
    "AccessRequest",
    "Action",
    "Decision",
    "Policy",
    "digest_ha1",
]
