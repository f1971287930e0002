"""The control plane's tenancy bundle: the database, tenant store, token keys, policy and
audit log, opened from the config. Every entry point (RTSP, HTTP, gRPC, the CLI) shares one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from gateway.config import Config
from tenants.audit import AuditLog
from tenants.db import Database
from tenants.leases import LeaseStore, StreamCaps
from tenants.policy import Policy
from tenants.seed import load_seed
from tenants.store import TenantStore
from tenants.tokens import SigningKey, TokenIssuer, TokenVerifier


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

    @classmethod
    def open(cls, config: Config) -> Tenancy:
        tc = config.tenancy
        db = Database.open(config.database_url)
        store = TenantStore(db)
        if tc.seed:
            load_seed(store, tc.seed)
        keys_dir = Path(config.data_dir) / "keys"
        token_key = SigningKey.load_or_create(keys_dir / "token-signing.pem")
        audit_key = SigningKey.load_or_create(keys_dir / "audit-signing.pem")
        issuer = TokenIssuer([token_key], issuer=tc.issuer, audience=tc.audience)
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
        )
        policy.reload(force=True)
        audit = AuditLog(db, audit_key.private_key)
        caps = StreamCaps(LeaseStore(db))
        return cls(db, store, issuer, verifier, policy, audit, audit_key, caps)

    async def close(self) -> None:
        self.audit.close()
        await self.verifier.aclose()
        self.db.close()
