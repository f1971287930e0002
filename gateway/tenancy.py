"""The control plane's tenancy bundle: the database, tenant store, token keys, policy, stream
caps and audit log, opened from the config. Every entry point (RTSP, HTTP, gRPC, the CLI)
shares one.

The event loop never touches the database itself. Blocking tenancy work from the loop (audit
appends, lease transactions, policy reloads) runs on this bundle's one database thread, which
it owns: a transaction a gRPC worker thread holds then stalls that thread, never the loop. The
policy's snapshot is refreshed from the store every ``recheck_interval`` by a task the bundle
owns, so every decision and every live re-check sees changes (ours or another node's) within
that interval.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from gateway.config import Config
from gateway.identity import (
    KeyReloader,
    audit_ring,
    load_audit_keys,
    load_key,
    load_secret_box,
    load_token_keys,
)
from gateway.tasks import cancel_and_wait
from tenants.audit import AuditLog
from tenants.audit.keys import AuditKeys
from tenants.audit.spool import AuditSpool
from tenants.db import Database
from tenants.leases import LeaseStore, StreamCaps
from tenants.onvif import OnvifRegister
from tenants.policy import Policy
from tenants.refusals import RefusalLog
from tenants.seed import load_seed
from tenants.store import TenantStore
from tenants.tokens import SigningKey, TokenIssuer, TokenVerifier

log = logging.getLogger(__name__)

T = TypeVar("T")

# While the store keeps failing, say so again this often (not at every attempt).
RELOAD_FAILURE_REPORT_EVERY = 60.0


@dataclass
class Tenancy:
    """Everything the tenant policy needs, opened from the config."""

    db: Database
    store: TenantStore
    issuer: TokenIssuer
    verifier: TokenVerifier
    policy: Policy
    audit: AuditLog
    audit_key: SigningKey
    caps: StreamCaps
    refusals: RefusalLog
    recheck_interval: float = 0.25
    _db_thread: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="tenancy-db")
    )
    keys: KeyReloader | None = None
    _refresher: asyncio.Task[None] | None = None
    reload_failures: int = 0  # consecutive failed refreshes (0: the snapshot is current)
    # Signs evidence manifests (gateway.recording.export_manifest); published in the JWKS.
    # Kept apart from the token keys so that rotating those never strands old evidence.
    evidence_key: SigningKey | None = None
    # Cameras' ONVIF settings, passwords sealed by keys.secret_key (tenants/onvif.py).
    onvif: OnvifRegister | None = None
    # Every audit checkpoint key, read from the files now (blocking): what verification trusts,
    # so a node verifies a key another node rotated to before its own reload. None: audit_key.
    audit_keys: Callable[[], AuditKeys] | None = None

    def audit_trust(self) -> AuditKeys:
        """The audit keys verification trusts (blocking: reads the key files)."""
        if self.audit_keys is not None:
            return self.audit_keys()
        return AuditKeys.single(self.audit_key)

    @classmethod
    def open(cls, config: Config, *, lease_holder: str | None = None) -> Tenancy:
        """``lease_holder`` names a media process (``node/w0``) that takes stream leases: it
        voids what an earlier incarnation of itself left in the lease table. Control-plane
        tools take none."""
        tc = config.tenancy
        db = Database.open(config.database_url)
        store = TenantStore(db)
        onvif = OnvifRegister(db, load_secret_box(config))
        if tc.seed:
            load_seed(store, tc.seed, onvif)
        # The cluster's shared keys (gateway/identity.py): ConfigError naming the key if absent.
        schedule = load_token_keys(config)
        audit_keys = load_audit_keys(config)
        assert audit_keys.signer is not None
        audit_key = audit_keys.signer
        evidence_key = load_key(config, "evidence_key")
        issuer = TokenIssuer(schedule.signing_keys, issuer=tc.issuer, audience=tc.audience)
        verifier = TokenVerifier(
            issuer,
            audience=tc.audience,
            leeway=timedelta(seconds=tc.token_leeway),
            own_issuer=tc.issuer,
        )
        policy = Policy(
            store,
            verifier,
            lift_timeout=timedelta(seconds=tc.mask_lift_timeout),
            platform_tenant=config.grpc.platform_tenant,
            zone=config.zone,
        )
        policy.reload(force=True)
        # A media process keeps the audit entries of an outage on disk until the database is
        # back (<data_dir>/audit-spool/<worker>); control-plane tools refuse instead.
        spool = None
        if lease_holder is not None:
            worker = lease_holder.rsplit("/", 1)[-1]
            spool = AuditSpool(Path(config.data_dir) / "audit-spool" / worker)
        audit = AuditLog(db, audit_key.private_key, spool=spool)
        leases = LeaseStore(db, holder=lease_holder, ttl=tc.lease_ttl)
        if leases.voided:
            log.info(
                "%s: dropped %d stream lease(s) of its previous run", lease_holder, leases.voided
            )
        caps = StreamCaps(leases)
        return cls(
            db,
            store,
            issuer,
            verifier,
            policy,
            audit,
            audit_key,
            caps,
            RefusalLog(audit),
            recheck_interval=tc.recheck_interval,
            evidence_key=evidence_key,
            keys=KeyReloader(config, issuer, schedule, audit=audit, audit_keys=audit_keys),
            audit_keys=audit_ring(config).load,
            onvif=onvif,
        )

    async def blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking tenancy work on the database thread, in submission order."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db_thread, functools.partial(fn, *args, **kwargs))

    def submit(self, fn: Callable[..., object], *args: Any, what: str) -> None:
        """Queue blocking work on the database thread without waiting for it (after anything
        queued before it); a failure is logged as failing to ``what``."""

        def run() -> None:
            try:
                fn(*args)
            except Exception as exc:
                log.error("could not %s: %s", what, exc)

        try:
            self._db_thread.submit(run)
        except RuntimeError:  # shut down: run it here rather than lose it
            run()

    def drain(self) -> None:
        """Block until everything queued on the database thread so far is done (session ends,
        lease releases): for tests and tools that read the log right after an event."""
        self._db_thread.submit(lambda: None).result()

    def degraded(self) -> str | None:
        """Why this node is degraded (for /healthz), or None. Never names a host or a URL."""
        since = self.db.unavailable_since
        lost = self.audit.spool_lost()
        full = f"; audit spool full, {lost} entries not kept" if lost else ""
        if since is not None:
            return f"tenancy database unreachable for {time.monotonic() - since:.0f} s{full}"
        if lost:
            return full.removeprefix("; ")
        if self.reload_failures:
            return f"policy reload failing ({self.reload_failures} in a row)"
        return None

    def jwks(self) -> dict[str, Any]:
        """The published JWKS: the token keys, the evidence key, then every audit checkpoint key
        ever used (never a private member)."""
        doc = self.issuer.jwks()
        if self.evidence_key is not None:
            doc = {"keys": [*doc["keys"], self.evidence_key.public_jwk("evidence")]}
        audit = self.keys.audit_keys if self.keys is not None else None
        audit = audit or AuditKeys.single(self.audit_key)
        return {"keys": [*doc["keys"], *audit.jwks()]}

    def start(self) -> None:
        """Keep the policy's snapshot and the token keys current (call on the event loop)."""
        if self.keys is not None:
            self.keys.start()
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.get_running_loop().create_task(
                self._refresh(), name="policy-refresh"
            )

    async def refresh(self) -> bool:
        """Fetch the store's changes on the database thread and apply them on the loop."""
        snapshot = await self.blocking(self.policy.fetch)
        return snapshot is not None and self.policy.apply(snapshot)

    async def _refresh(self) -> None:
        reported = 0.0
        while True:
            await asyncio.sleep(self.recheck_interval)
            try:
                await self.refresh()
            except Exception as exc:
                # One warning when it starts and one a minute while it lasts, not a traceback
                # four times a second; decisions go on from the last snapshot meanwhile.
                self.reload_failures += 1
                now = time.monotonic()
                if self.reload_failures == 1 or now - reported >= RELOAD_FAILURE_REPORT_EVERY:
                    reported = now
                    log.warning(
                        "policy reload failed (%d in a row); keeping snapshot %d: %s",
                        self.reload_failures,
                        self.policy.snapshot.version,
                        exc,
                    )
                continue
            if self.reload_failures:
                log.warning("policy reload works again after %d failures", self.reload_failures)
                self.reload_failures = 0
            if self.audit.spool_pending:
                try:
                    await self.blocking(self.audit.flush)
                except Exception as exc:
                    log.warning("audit spool: not appended yet: %s", exc)

    async def close(self) -> None:
        await cancel_and_wait(self._refresher)
        if self.keys is not None:
            await self.keys.stop()
        await self.blocking(self.audit.close)
        await self.verifier.aclose()
        self._db_thread.shutdown(wait=True)
        self.db.close()
