"""An append-only, tamper-evident audit log for oversight (RFC 6962 / RFC 9162 style).

- :mod:`~tenants.audit.merkle`: the RFC 6962 Merkle tree, pure (hashing, roots, proofs);
- :mod:`~tenants.audit.entry`: actions, entries and their canonical bytes, checkpoints;
- :mod:`~tenants.audit.rows`: the two tables and how rows become entries and leaves;
- :mod:`~tenants.audit.log`: the writer (:class:`AuditLog`);
- :mod:`~tenants.audit.verify`: checking a stored log (:func:`verify_log`);
- :mod:`~tenants.audit.disclosures`: the ICO disclosure export (:func:`export_disclosures`).
"""

from tenants.audit.disclosures import export_disclosures
from tenants.audit.entry import (
    DISCLOSURE_ACTIONS,
    AuditAction,
    AuditEntry,
    Checkpoint,
    VerifyReport,
    key_id,
)
from tenants.audit.log import AuditLog
from tenants.audit.merkle import EMPTY_ROOT, leaf_hash, node_hash
from tenants.audit.rows import MIGRATIONS
from tenants.audit.verify import verify_log

__all__ = [
    "DISCLOSURE_ACTIONS",
    "EMPTY_ROOT",
    "MIGRATIONS",
    "AuditAction",
    "AuditEntry",
    "AuditLog",
    "Checkpoint",
    "VerifyReport",
    "export_disclosures",
    "key_id",
    "leaf_hash",
    "node_hash",
    "verify_log",
]
