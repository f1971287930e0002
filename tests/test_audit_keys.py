"""Audit checkpoint keys rotate (issue #15.1): several keys by kid, the newest signs, each
checkpoint names its kid, and every key the log was ever signed with keeps verifying it, even
after its private half is pruned. A checkpoint signed by a key nobody trusts fails, and so does
one a retired key signed long after it was replaced.

Before: one audit key with no rotation. Replacing its file made every earlier checkpoint fail
("bad signature"), and `feedgate keys rotate` had no way to rotate it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_cluster_identity import _cli

from tenants.audit import AuditAction, AuditLog, Checkpoint, key_id, verify_log
from tenants.audit.keys import AuditKeyRing
from tenants.db import Database

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database.open(f"sqlite:///{tmp_path / 'audit.db'}")


def _ring(tmp_path: Path) -> AuditKeyRing:
    ring = AuditKeyRing(tmp_path / "keys" / "audit-signing.pem", overlap=timedelta(hours=25))
    ring.ring.add(T0 - HOUR)  # the first key, signing from an hour before T0
    return ring


def _fill(log: AuditLog, n: int, at: datetime) -> None:
    # Checkpoints are signed only when a test says, at the time it says (the key schedule is
    # by the clock).
    for i in range(n):
        log.append(AuditAction.LOGIN, principal=f"p{i}", time=at)


def _rotated_log(db: Database, ring: AuditKeyRing) -> tuple[str, str]:
    """20 entries under the first key, a rotation, 20 under the second: the two kids."""
    first = ring.load(T0)
    assert first.signer is not None
    log = AuditLog(db, first.signer.private_key, checkpoint_every=1000, checkpoint_interval=1e9)
    _fill(log, 8, T0)
    log.checkpoint(T0)
    _fill(log, 12, T0)
    log.checkpoint(T0)
    ring.ring.add(T0 + HOUR)
    second = ring.load(T0 + HOUR)
    assert second.signer is not None and second.signer_kid != first.signer_kid
    log.set_signer(second.signer.private_key)
    _fill(log, 20, T0 + HOUR)
    log.checkpoint(T0 + HOUR)
    assert first.signer_kid and second.signer_kid
    return first.signer_kid, second.signer_kid


def test_a_log_rotated_mid_way_verifies_with_both_keys_and_names_each(
    db: Database, tmp_path: Path
) -> None:
    ring = _ring(tmp_path)
    old, new = _rotated_log(db, ring)
    kids = [kid for (kid,) in db.query("SELECT key_id FROM audit_checkpoints ORDER BY size")]
    assert kids[0] == old and kids[-1] == new and set(kids) == {old, new}

    report = verify_log(db, ring.load(T0 + 2 * HOUR))
    assert report.ok, report.problem
    # The new key alone does not vouch for what the old one signed.
    alone = ring.load(T0 + 2 * HOUR).find(new)
    assert alone is not None
    report = verify_log(db, alone.public_key)
    assert not report.ok and report.problem == (
        f"checkpoint at size 8 is signed by an unknown key ({old})"
    )


def test_a_checkpoint_signed_by_an_unknown_key_fails(db: Database, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    ring = _ring(tmp_path)
    _rotated_log(db, ring)
    stranger = Ed25519PrivateKey.generate()
    log = AuditLog(db, stranger, checkpoint_every=1000, checkpoint_interval=1e9)
    _fill(log, 3, T0 + HOUR)
    cp = log.checkpoint(T0 + HOUR)
    report = verify_log(db, ring.load(T0 + 2 * HOUR))
    assert not report.ok
    kid = key_id(stranger.public_key())
    assert cp.key_id == kid
    assert report.problem == f"checkpoint at size {cp.size} is signed by an unknown key ({kid})"


def test_pruning_keeps_the_public_half_so_old_checkpoints_verify_forever(
    db: Database, tmp_path: Path
) -> None:
    ring = _ring(tmp_path)
    old, new = _rotated_log(db, ring)
    later = T0 + 30 * 24 * HOUR
    removed = ring.prune(later)
    assert [p.name for p in removed] == ["audit-20261201T110000Z.pem"]
    assert (ring.directory / "audit-20261201T110000Z.pub").exists()
    assert not removed[0].exists()
    keys = ring.load(later)
    assert keys.signer_kid == new and keys.kids == (old, new)
    retired = keys.find(old)
    assert retired is not None and not retired.private and retired.retired == T0 + HOUR
    assert verify_log(db, keys).ok
    # Every key ever used is published, each with the kid checkpoints name it by.
    assert [k["feedgate_audit_kid"] for k in keys.jwks()] == [old, new]
    assert all("d" not in k for k in keys.jwks())


def test_a_retired_key_signing_long_after_it_was_replaced_fails(
    db: Database, tmp_path: Path
) -> None:
    ring = _ring(tmp_path)
    old, _ = _rotated_log(db, ring)
    first = next(k for k in ring.ring.read() if k.starts == T0 - HOUR)
    log = AuditLog(db, first.key.private_key, checkpoint_every=1000, checkpoint_interval=1e9)
    late = T0 + HOUR + timedelta(hours=26)  # past the 25 h grace
    _fill(log, 2, late)
    cp: Checkpoint = log.checkpoint(late)
    report = verify_log(db, ring.load(late))
    assert not report.ok
    assert report.problem is not None
    assert report.problem.startswith(f"checkpoint at size {cp.size} is signed by key {old} at")
    assert "after it was retired" in report.problem


def test_keys_rotate_audit_adds_the_next_checkpoint_key_and_list_shows_both(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text(
        '[tenancy]\nenabled = true\ndatabase = "postgresql://u@127.0.0.1:1/feedgate"\n'
        '[keys]\ntoken_dir = "k/t"\naudit_key = "k/a.pem"\nevidence_key = "k/e.pem"\n'
    )
    assert _cli("keys", "init", "--config", str(cfg)).returncode == 0
    r = _cli("keys", "rotate", "--audit", "--config", str(cfg), "--start-in", "3600")
    assert r.returncode == 0, r.stderr
    kid = r.stdout.split()[0]
    new_files = list((tmp_path / "k").glob("audit-*.pem"))
    assert len(new_files) == 1 and f"({new_files[0]})" in r.stdout
    assert list((tmp_path / "k" / "t").glob("token-*.pem"))  # token keys untouched
    listing = [
        line.split()
        for line in _cli("keys", "list", "--config", str(cfg)).stdout.splitlines()
        if line.startswith("audit ")
    ]
    assert [row[3] for row in listing] == ["signing", "next"]
    assert listing[1][1] == kid
    # Init again does not replace anything.
    assert "exists already" in _cli("keys", "init", "--config", str(cfg)).stdout


def test_audit_verify_local_trusts_every_key_of_a_rotated_log(tmp_path: Path) -> None:
    """`feedgate audit verify --local`, as an oversight body runs it on a copy: a log signed
    under two audit keys verifies with the key directory ([keys] audit_key's), and a
    checkpoint from a key that is not there fails, naming it."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from gateway.config import load_config
    from gateway.identity import audit_ring, key_path

    cfg = tmp_path / "node.toml"
    cfg.write_text('data_dir = "var"\n[tenancy]\nenabled = true\n')
    config = load_config(cfg, env={})
    ring = audit_ring(config)
    ring.ring.add(datetime.now(UTC) - HOUR)
    db = Database.open(config.database_url)
    first = ring.load()
    assert first.signer is not None and key_path(config, "audit_key").parent == ring.directory
    log = AuditLog(db, first.signer.private_key, checkpoint_every=5)
    _fill(log, 10, datetime.now(UTC))
    ring.rotate(start_in=timedelta(0))
    second = ring.load()
    assert second.signer is not None and second.signer_kid != first.signer_kid
    log.set_signer(second.signer.private_key)
    _fill(log, 10, datetime.now(UTC))
    log.close()
    run = ("audit", "verify", "--local", "--config", str(cfg))
    r = _cli(*run)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("ok: 20 entries, 4 checkpoints"), r.stdout

    stranger = AuditLog(db, Ed25519PrivateKey.generate(), checkpoint_every=1000)
    _fill(stranger, 1, datetime.now(UTC))
    stranger.close()
    db.close()
    r = _cli(*run)
    assert r.returncode == 1 and "signed by an unknown key" in r.stdout, r.stdout
