"""The tamper-evident audit log: hashing, proofs, checkpoints, tamper detection, durability,
concurrency and the ICO disclosure export. Runs on SQLite and PostgreSQL (``db_url``)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tenants.audit import (
    EMPTY_ROOT,
    AuditAction,
    AuditEntry,
    AuditLog,
    Checkpoint,
    export_disclosures,
    verify_log,
)
from tenants.db import Database

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database.open(db_url)
    try:
        yield database
    finally:
        database.close()


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_leaf(entry: AuditEntry) -> bytes:
    return sha(b"\x00" + entry.canonical())


def ref_mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1, written out independently of the module."""
    n = len(leaves)
    if n == 0:
        return sha(b"")
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return sha(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:]))


def fill(log: AuditLog, n: int) -> list[AuditEntry]:
    actions = list(AuditAction)
    return [
        log.append(
            actions[i % len(actions)],
            tenant=f"t{i % 3}",
            principal=f"p{i % 5}",
            camera=f"cam{i % 7}",
            purpose=f"INC-{i}" if i % 2 else None,
            outcome="ok" if i % 4 else "denied",
            detail={"i": i, "note": "ünïcode ✓", "nested": {"b": [1, 2], "a": None}},
        )
        for i in range(n)
    ]


def tampered_log(db: Database, key: Ed25519PrivateKey, n: int = 100) -> AuditLog:
    """n entries, a checkpoint every 16 and one at close (so: 16, 32, ..., 96, n)."""
    log = AuditLog(db, key, checkpoint_every=16, checkpoint_interval=math.inf)
    fill(log, n)
    log.close()
    assert verify_log(db, key.public_key()).ok
    return log


def _reader(db: Database) -> AuditLog:
    """An AuditLog shell for .entries() (which needs only the database), without opening."""
    reader = AuditLog.__new__(AuditLog)
    reader._db = db
    return reader


def rewrite_chain(db: Database, start: int) -> None:
    """What a careful attacker does after an edit: recompute every stored chain hash."""
    rows = db.query("SELECT seq, chain FROM audit_entries ORDER BY seq")
    prev = bytes.fromhex(rows[start - 1][1]) if start else bytes(32)
    for entry in _reader(db).entries(start):
        prev = sha(prev + ref_leaf(entry))
        db.execute("UPDATE audit_entries SET chain = ? WHERE seq = ?", (prev.hex(), entry.seq))


def set_seq(db: Database, old: int, new: int) -> None:
    db.execute("UPDATE audit_entries SET seq = ? WHERE seq = ?", (new, old))


def shift_up(db: Database, start: int) -> None:
    """Make room at `start` by moving every later row up one (in two steps: unique seq)."""
    db.execute("UPDATE audit_entries SET seq = seq + 1000000 WHERE seq >= ?", (start,))
    db.execute("UPDATE audit_entries SET seq = seq - 999999 WHERE seq >= 1000000", ())


def insert_row(db: Database, seq: int, chain: str, time_s: str) -> None:
    db.execute(
        "INSERT INTO audit_entries (seq, time, action, tenant, principal, camera, purpose,"
        " outcome, detail, chain) VALUES (?, ?, 'export', 'met', 'pc99', 'cam1', 'INC-X',"
        " 'ok', '{}', ?)",
        (seq, time_s, chain),
    )


# ----------------------------------------------------------------------------- values


def test_canonical_is_sorted_compact_utf8_with_z_times() -> None:
    entry = AuditEntry(
        seq=7,
        time=datetime(2024, 5, 1, 13, 2, 3, 4, tzinfo=UTC) + timedelta(hours=0),
        action=AuditAction.MASK_LIFT,
        tenant="met",
        principal="pc1",
        camera="cam1",
        purpose="CAD 123/01",
        outcome="ok",
        detail={"z": 1, "a": "é"},
    )
    assert (
        entry.canonical()
        == (
            '{"action":"mask_lift","camera":"cam1","detail":{"a":"é","z":1},"outcome":"ok",'
            '"principal":"pc1","purpose":"CAD 123/01","seq":7,"tenant":"met",'
            '"time":"2024-05-01T13:02:03.000004Z"}'
        ).encode()
    )
    # The same instant in another zone serializes identically.
    other = AuditEntry(**{**entry.__dict__, "time": entry.time.astimezone()})
    assert other.canonical() == entry.canonical()
    assert entry.leaf_hash() == sha(b"\x00" + entry.canonical())
    assert [a.value for a in AuditAction][:3] == ["session_start", "session_end", "denied"]


def test_append_reads_back_dense_and_durable(db: Database, key: Ed25519PrivateKey) -> None:
    log = AuditLog(db, key, checkpoint_interval=math.inf)
    written = fill(log, 20)
    assert [e.seq for e in written] == list(range(20))
    assert log.size() == 20
    assert list(log.entries()) == written
    assert list(log.entries(5, 8)) == written[5:8]
    assert written[3].detail == {"i": 3, "note": "ünïcode ✓", "nested": {"b": [1, 2], "a": None}}
    # A second connection sees it: committed on return.
    other = Database.open(db.url)
    try:
        assert other.query_one("SELECT COUNT(*) FROM audit_entries") == (20,)
    finally:
        other.close()


def test_append_validates_input(db: Database, key: Ed25519PrivateKey) -> None:
    log = AuditLog(db, key, checkpoint_interval=math.inf)
    with pytest.raises(ValueError):
        log.append("no_such_action")
    with pytest.raises(ValueError):
        log.append(AuditAction.PTZ, time=datetime(2024, 1, 1))  # naive
    with pytest.raises(ValueError):
        log.append(AuditAction.PTZ, detail={"x": object()})
    with pytest.raises(ValueError):
        log.append(AuditAction.PTZ, detail={"x": math.nan})
    with pytest.raises(TypeError):
        log.append(AuditAction.PTZ, detail=[1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        log.append(AuditAction.PTZ, camera="a\x00b")
    with pytest.raises(ValueError):
        log.append(AuditAction.PTZ, detail={"big": "x" * 20000})
    log.append(AuditAction.PTZ, time=T0)
    log.append(AuditAction.PTZ, time=T0 - timedelta(milliseconds=500))  # within skew: fine
    with pytest.raises(ValueError, match="before the last entry"):
        log.append(AuditAction.PTZ, time=T0 - timedelta(seconds=5))
    assert log.size() == 2  # nothing half-written
    log.close()
    with pytest.raises(RuntimeError):
        log.append(AuditAction.PTZ)
    assert verify_log(db, key.public_key()).ok


# ----------------------------------------------------------------------------- tree and proofs


class SmallChunks(AuditLog):
    """Chunk roots every 4 leaves: exercises the chunk cache, the perfect-subtree memo and
    reading leaves back from the database with a small log."""

    _CHUNK = 4


@pytest.mark.parametrize("cls", [AuditLog, SmallChunks], ids=["chunk256", "chunk4"])
def test_roots_and_proofs_for_all_sizes_up_to_64(
    db: Database, key: Ed25519PrivateKey, cls: type[AuditLog]
) -> None:
    log = cls(db, key, checkpoint_interval=math.inf)
    entries = fill(log, 64)
    leaves = [ref_leaf(e) for e in entries]
    roots = {n: ref_mth(leaves[:n]) for n in range(65)}
    assert log.root(0) == EMPTY_ROOT == roots[0]
    bogus = sha(b"not the root")
    for n in range(1, 65):
        assert log.root(n) == roots[n], n
        for m in range(n):
            proof = log.inclusion_proof(m, n)
            assert len(proof) <= math.ceil(math.log2(n))
            assert AuditLog.verify_inclusion(leaves[m], m, n, proof, roots[n]), (m, n)
            assert not AuditLog.verify_inclusion(leaves[m], m, n, proof, bogus)
            assert not AuditLog.verify_inclusion(leaves[(m + 1) % 64], m, n, proof, roots[n])
            if proof:
                bad = [sha(proof[0]), *proof[1:]]
                assert not AuditLog.verify_inclusion(leaves[m], m, n, bad, roots[n])
        for m in range(1, n + 1):
            proof = log.consistency_proof(m, n)
            assert len(proof) <= math.ceil(math.log2(n)) + 1
            assert AuditLog.verify_consistency(m, n, roots[m], roots[n], proof), (m, n)
            assert not AuditLog.verify_consistency(m, n, bogus, roots[n], proof)
            assert not AuditLog.verify_consistency(m, n, roots[m], bogus, proof)
            if m < n:
                assert not AuditLog.verify_consistency(m, n, roots[m], roots[n], proof[:-1])
    assert log.root() == roots[64]
    assert AuditLog.verify_consistency(0, 5, EMPTY_ROOT, roots[5], [])
    with pytest.raises(ValueError):
        log.inclusion_proof(64, 64)
    with pytest.raises(ValueError):
        log.consistency_proof(3, 65)


def test_roots_and_proofs_across_chunks(db: Database, key: Ed25519PrivateKey) -> None:
    log = AuditLog(db, key, checkpoint_interval=math.inf)
    leaves = [ref_leaf(e) for e in fill(log, 1100)]
    for n in (255, 256, 257, 511, 512, 513, 1024, 1025, 1100):
        root = ref_mth(leaves[:n])
        assert log.root(n) == root
        for m in (0, 1, 255, 256, n // 2, n - 1):
            if m < n:
                proof = log.inclusion_proof(m, n)
                assert AuditLog.verify_inclusion(leaves[m], m, n, proof, root), (m, n)
        for old in (1, 100, 256, 300, 512, n):
            if old <= n:
                proof = log.consistency_proof(old, n)
                assert AuditLog.verify_consistency(old, n, log.root(old), root, proof)


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoints_every_n_on_interval_and_on_close(db: Database, key: Ed25519PrivateKey) -> None:
    log = AuditLog(db, key, checkpoint_every=10, checkpoint_interval=math.inf)
    fill(log, 25)
    assert [c.size for c in log.checkpoints()] == [10, 20]
    assert log.maybe_checkpoint() is None  # interval not reached
    cp = log.checkpoint(now=T0)
    assert (cp.size, cp.root, cp.time) == (25, log.root(), T0)
    assert cp.verify(key.public_key())
    assert not cp.verify(Ed25519PrivateKey.generate().public_key())
    assert log.checkpoint() == cp  # nothing new: the same checkpoint
    log.append(AuditAction.LOGIN)
    assert log.close() is not None
    assert [c.size for c in log.checkpoints()] == [10, 20, 25, 26]
    assert log.close() == log.last_checkpoint

    timed = AuditLog(db, key, checkpoint_every=1000, checkpoint_interval=0.2)
    timed.append(AuditAction.LOGIN)
    time.sleep(0.25)
    timed.maybe_checkpoint()  # (or the append already did, if it was slow)
    assert timed.last_checkpoint is not None and timed.last_checkpoint.size == 27
    # The signed message binds size, root and time.
    forged = Checkpoint(cp.size + 1, cp.root, cp.time, cp.signature, cp.key_id)
    assert not forged.verify(key.public_key())
    assert verify_log(db, key.public_key()).ok


# ----------------------------------------------------------------------------- verification


def test_clean_log_of_1000_entries_verifies(db: Database, key: Ed25519PrivateKey) -> None:
    log = AuditLog(db, key)
    fill(log, 1000)
    log.close()
    report = verify_log(db, key.public_key())
    assert report.ok, report
    assert report.entries == 1000
    assert [c.size for c in log.checkpoints()] == [256, 512, 768, 1000]
    assert report.checkpoints == 4
    assert (report.first_bad_seq, report.problem) == (None, None)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("detail", '{"i":41,"note":"nothing to see"}'),
        ("tenant", "someone_else"),
        ("time", "2024-01-01T00:00:00.000000Z"),
        ("purpose", None),
        ("action", "login"),
        ("time", "yesterday"),
    ],
)
def test_edited_entry_is_named(
    db: Database, key: Ed25519PrivateKey, column: str, value: str | None
) -> None:
    tampered_log(db, key)
    db.execute(f"UPDATE audit_entries SET {column} = ? WHERE seq = 41", (value,))
    report = verify_log(db, key.public_key())
    assert not report.ok
    assert (report.first_bad_seq, report.problem) == (41, "entry 41 was edited")
    assert report.entries == 100


def test_edited_last_entry(db: Database, key: Ed25519PrivateKey) -> None:
    tampered_log(db, key)
    db.execute("UPDATE audit_entries SET outcome = 'denied' WHERE seq = 99")
    report = verify_log(db, key.public_key())
    assert (report.first_bad_seq, report.problem) == (99, "entry 99 was edited")


def test_edited_chain_hash_only(db: Database, key: Ed25519PrivateKey) -> None:
    tampered_log(db, key)
    db.execute("UPDATE audit_entries SET chain = ? WHERE seq = 30", ("00" * 32,))
    report = verify_log(db, key.public_key())
    assert report.first_bad_seq == 30
    assert report.problem == "entry 30 was edited (its stored chain hash)"


def test_deleted_entry_is_missing(db: Database, key: Ed25519PrivateKey) -> None:
    tampered_log(db, key)
    db.execute("DELETE FROM audit_entries WHERE seq = 17")
    report = verify_log(db, key.public_key())
    assert (report.ok, report.first_bad_seq, report.problem) == (False, 17, "entry 17 is missing")
    assert report.entries == 99


def test_deleted_first_entry(db: Database, key: Ed25519PrivateKey) -> None:
    tampered_log(db, key)
    db.execute("DELETE FROM audit_entries WHERE seq = 0")
    report = verify_log(db, key.public_key())
    assert (report.first_bad_seq, report.problem) == (0, "entry 0 is missing")


def test_inserted_entry_is_named(db: Database, key: Ed25519PrivateKey) -> None:
    tampered_log(db, key)
    time_s = db.query_one("SELECT time FROM audit_entries WHERE seq = 23")[0]  # type: ignore[index]
    shift_up(db, 23)
    insert_row(db, 23, "ab" * 32, time_s)
    report = verify_log(db, key.public_key())
    assert (report.first_bad_seq, report.problem) == (23, "entry 23 was inserted")
    assert report.entries == 101


def test_inserted_entry_with_all_later_chains_rewritten(
    db: Database, key: Ed25519PrivateKey
) -> None:
    tampered_log(db, key)
    time_s = db.query_one("SELECT time FROM audit_entries WHERE seq = 23")[0]  # type: ignore[index]
    shift_up(db, 23)
    insert_row(db, 23, "ab" * 32, time_s)
    rewrite_chain(db, 23)
    report = verify_log(db, key.public_key())
    assert report.problem is not None
    assert report.problem.startswith("checkpoint at size 32 does not match the entries")
    assert report.first_bad_seq == 16


def test_inserted_entry_with_its_own_valid_chain_hash(db: Database, key: Ed25519PrivateKey) -> None:
    tampered_log(db, key)
    prev, time_s = db.query_one("SELECT chain, time FROM audit_entries WHERE seq = 22") or ()
    shift_up(db, 23)
    insert_row(db, 23, "00" * 32, time_s)
    fake = next(AuditLog.entries(_reader(db), 23, 24))
    good = sha(bytes.fromhex(prev) + ref_leaf(fake)).hex()
    db.execute("UPDATE audit_entries SET chain = ? WHERE seq = 23", (good,))
    report = verify_log(db, key.public_key())
    assert (report.first_bad_seq, report.problem) == (23, "entry 23 was inserted")


@pytest.mark.parametrize(("a", "b"), [(9, 30), (9, 10), (0, 99)])
def test_reordered_entries(db: Database, key: Ed25519PrivateKey, a: int, b: int) -> None:
    tampered_log(db, key)
    set_seq(db, a, -1)
    set_seq(db, b, a)
    set_seq(db, -1, b)
    report = verify_log(db, key.public_key())
    assert (report.first_bad_seq, report.problem) == (a, f"entry {a} is out of order")


def test_times_going_backwards_with_rewritten_chain(db: Database, key: Ed25519PrivateKey) -> None:
    tampered_log(db, key)
    db.execute("UPDATE audit_entries SET time = ? WHERE seq = 50", ("2020-01-01T00:00:00.000000Z",))
    rewrite_chain(db, 50)
    report = verify_log(db, key.public_key())
    assert (report.first_bad_seq, report.problem) == (50, "entry 50 is out of order")


def test_time_jump_ahead_blames_the_jumping_entry(db: Database, key: Ed25519PrivateKey) -> None:
    tampered_log(db, key)
    db.execute("UPDATE audit_entries SET time = ? WHERE seq = 50", ("2099-01-01T00:00:00.000000Z",))
    rewrite_chain(db, 50)
    report = verify_log(db, key.public_key())
    assert (report.first_bad_seq, report.problem) == (50, "entry 50 is out of order")


def test_edit_with_rewritten_chain_is_caught_by_checkpoint(
    db: Database, key: Ed25519PrivateKey
) -> None:
    tampered_log(db, key)
    db.execute("UPDATE audit_entries SET detail = '{\"i\":0}' WHERE seq = 41")
    rewrite_chain(db, 41)
    report = verify_log(db, key.public_key())
    assert not report.ok
    assert report.problem == (
        "checkpoint at size 48 does not match the entries (the first changed entry is in 32..47)"
    )
    assert report.first_bad_seq == 32  # the checkpoints at 16 and 32 vouch for 0..31


def test_forged_checkpoint_signature(db: Database, key: Ed25519PrivateKey) -> None:
    tampered_log(db, key)
    sig = db.query_one("SELECT signature FROM audit_checkpoints WHERE size = 64")[0]  # type: ignore[index]
    forged = ("00" if sig[:2] != "00" else "11") + sig[2:]
    db.execute("UPDATE audit_checkpoints SET signature = ? WHERE size = 64", (forged,))
    report = verify_log(db, key.public_key())
    assert (report.ok, report.problem) == (False, "checkpoint at size 64 has a bad signature")
    assert report.first_bad_seq is None  # the entries themselves still match it


def test_checkpoints_resigned_by_another_key(db: Database, key: Ed25519PrivateKey) -> None:
    """Edit 41, rewrite chains, and replace checkpoints from 48 on with the attacker's own."""
    tampered_log(db, key)
    db.execute("UPDATE audit_entries SET tenant = 'x' WHERE seq = 41")
    rewrite_chain(db, 41)
    db.execute("DELETE FROM audit_checkpoints WHERE size >= 48")
    evil = AuditLog(db, Ed25519PrivateKey.generate(), checkpoint_every=16)
    for size in (48, 64, 80, 96, 100):
        root = evil.root(size)
        sig = Ed25519PrivateKey.generate().sign(Checkpoint.message(size, root, T0))
        db.execute(
            "INSERT INTO audit_checkpoints (size, root, time, signature, key_id)"
            " VALUES (?, ?, ?, ?, ?)",
            (size, root.hex(), "2024-05-01T12:00:00.000000Z", sig.hex(), evil.key_id),
        )
    report = verify_log(db, key.public_key())
    # The checkpoints name the attacker's key, which nobody trusts (issue #15: rotation).
    assert report.problem == f"checkpoint at size 48 is signed by an unknown key ({evil.key_id})"
    assert report.first_bad_seq is None  # roots match the (rewritten) entries
    # A copy of the genuine checkpoints kept elsewhere pins it down.


def test_external_checkpoints_catch_deleted_checkpoint_rows(
    db: Database, key: Ed25519PrivateKey
) -> None:
    log = tampered_log(db, key)
    published = log.checkpoints()
    db.execute("UPDATE audit_entries SET camera = 'elsewhere' WHERE seq = 70")
    rewrite_chain(db, 70)
    db.execute("DELETE FROM audit_checkpoints")
    assert verify_log(db, key.public_key()).ok  # nothing left in the database to compare with
    report = verify_log(db, key.public_key(), checkpoints=published)
    assert report.problem is not None
    assert report.problem.startswith("checkpoint at size 80 does not match the entries")
    assert report.first_bad_seq == 64


def test_truncated_after_checkpoint(db: Database, key: Ed25519PrivateKey) -> None:
    tampered_log(db, key)
    db.execute("DELETE FROM audit_entries WHERE seq >= 90")
    report = verify_log(db, key.public_key())
    assert (report.ok, report.first_bad_seq, report.problem) == (False, 90, "entry 90 is missing")
    assert report.entries == 90


# ----------------------------------------------------------------------------- durability


CRASH = """
import math, os, signal, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tenants.audit import AuditAction, AuditLog
from tenants.db import Database
key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(sys.argv[2]))
log = AuditLog(Database.open(sys.argv[1]), key, checkpoint_every=100, checkpoint_interval=math.inf)
for i in range(300):
    log.append(AuditAction.PTZ, tenant="met", camera="cam1", detail={"i": i})
print(log.root().hex(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no close(), no checkpoint of the tail
"""


def test_crash_reopen_rebuilds_frontier(db_url: str, key: Ed25519PrivateKey) -> None:
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()).hex()
    proc = subprocess.run(
        [sys.executable, "-c", CRASH, db_url, raw],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert proc.returncode == -9, proc.stderr
    root_before = bytes.fromhex(proc.stdout.strip())
    db = Database.open(db_url)
    try:
        log = AuditLog(db, key, checkpoint_every=100, checkpoint_interval=math.inf)
        assert log.integrity_warning is None
        assert log.size() == 300
        assert log.root() == root_before
        assert log.last_checkpoint is not None and log.last_checkpoint.size == 300
        assert [c.size for c in log.checkpoints()] == [100, 200, 300]
        more = fill(log, 5)
        assert [e.seq for e in more] == [300, 301, 302, 303, 304]
        leaves = [ref_leaf(e) for e in log.entries()]
        assert log.root() == ref_mth(leaves)
        proof = log.inclusion_proof(7, 305)  # leaves read back from the database
        assert AuditLog.verify_inclusion(leaves[7], 7, 305, proof, log.root())
        assert verify_log(db, key.public_key()).ok
    finally:
        db.close()


def test_reopen_without_checkpoint(db: Database, key: Ed25519PrivateKey) -> None:
    log = AuditLog(db, key, checkpoint_every=1000, checkpoint_interval=math.inf)
    fill(log, 40)
    root = log.root()
    del log  # crash: no close()
    log = AuditLog(db, key, checkpoint_every=1000, checkpoint_interval=math.inf)
    assert (log.size(), log.root(), log.last_checkpoint) == (40, root, None)
    fill(log, 3)
    assert log.size() == 43
    assert verify_log(db, key.public_key()).ok
    log.close()
    report = verify_log(db, key.public_key())
    assert (report.ok, report.checkpoints) == (True, 1)


def test_open_notices_tampering(db: Database, key: Ed25519PrivateKey) -> None:
    tampered_log(db, key, 20)
    db.execute("UPDATE audit_entries SET principal = 'nobody' WHERE seq = 5")
    log = AuditLog(db, key)
    assert log.integrity_warning == "entry 5 does not match its chain hash"
    log.append(AuditAction.CONFIG)  # it keeps recording
    assert verify_log(db, key.public_key()).first_bad_seq == 5


def test_rolled_back_outer_transaction_leaves_no_gap(db: Database, key: Ed25519PrivateKey) -> None:
    log = AuditLog(db, key, checkpoint_interval=math.inf)
    fill(log, 5)
    with pytest.raises(RuntimeError, match="abort"), db.transaction():
        log.append(AuditAction.GRANT_CREATED, tenant="met")
        raise RuntimeError("abort")
    entry = log.append(AuditAction.GRANT_CREATED, tenant="met")
    assert entry.seq == 5
    assert log.size() == 6
    assert verify_log(db, key.public_key()).ok


def test_two_writers_share_one_table(db_url: str, key: Ed25519PrivateKey) -> None:
    db1, db2 = Database.open(db_url), Database.open(db_url)
    try:
        a = AuditLog(db1, key, checkpoint_every=7, checkpoint_interval=math.inf)
        b = AuditLog(db2, key, checkpoint_every=7, checkpoint_interval=math.inf)
        seqs = []
        for i in range(30):
            seqs.append((a if i % 3 else b).append(AuditAction.LOGIN, detail={"i": i}).seq)
        assert seqs == list(range(30))
        a.close()
        b.close()
        assert a.root(30) == b.root(30)
        assert verify_log(db1, key.public_key()).ok
    finally:
        db1.close()
        db2.close()


def test_threads_append_dense(db: Database, key: Ed25519PrivateKey) -> None:
    log = AuditLog(db, key, checkpoint_every=64)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i in range(200):
                log.append(AuditAction.SESSION_START, principal=f"w{t}", detail={"i": i})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    entries = list(log.entries())
    assert [e.seq for e in entries] == list(range(1600))
    for t in range(8):  # each thread's own entries in its own order
        mine = [e.detail["i"] for e in entries if e.principal == f"w{t}"]
        assert mine == list(range(200))
    assert log.root() == ref_mth([ref_leaf(e) for e in entries])
    log.close()
    report = verify_log(db, key.public_key())
    assert report.ok and report.entries == 1600, report


# ----------------------------------------------------------------------------- disclosures


def test_export_disclosures(db: Database, key: Ed25519PrivateKey) -> None:
    log = AuditLog(db, key, checkpoint_interval=math.inf)
    log.append(AuditAction.PLAYBACK, tenant="met", principal="pc1", time=T0 - timedelta(hours=1))
    log.append(
        AuditAction.SESSION_START,
        tenant="met",
        principal="pc1",
        camera="cam1",
        purpose="CAD 4471/01",
        time=T0,
    )
    log.append(AuditAction.PTZ, tenant="met", principal="pc1", camera="cam1", time=T0)
    log.append(AuditAction.DENIED, tenant="x", outcome="denied", time=T0)
    log.append(
        AuditAction.EXPORT,
        tenant='=HYPERLINK("http://evil")',
        principal="@admin",
        camera="-cam",
        purpose="+1+1",
        outcome="ok",
        time=T0 + timedelta(minutes=5),
    )
    log.append(
        AuditAction.MASK_LIFT, tenant="council", principal="op7", time=T0 + timedelta(hours=1)
    )
    log.append(AuditAction.PLAYBACK, tenant="late", time=T0 + timedelta(hours=2))  # == end

    out = io.StringIO()
    n = export_disclosures(db, T0, T0 + timedelta(hours=2), out)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert n == 3 == len(rows) - 1
    assert rows[0] == [
        "date",
        "recipient_organisation",
        "recipient_person",
        "reason",
        "camera",
        "action",
        "outcome",
        "seq",
    ]
    assert rows[1] == [
        "2024-05-01T12:00:00Z",
        "met",
        "pc1",
        "CAD 4471/01",
        "cam1",
        "session_start",
        "ok",
        "1",
    ]
    assert rows[2] == [
        "2024-05-01T12:05:00Z",
        '\'=HYPERLINK("http://evil")',
        "'@admin",
        "'+1+1",
        "'-cam",
        "export",
        "ok",
        "4",
    ]
    assert rows[3] == ["2024-05-01T13:00:00Z", "council", "op7", "", "", "mask_lift", "ok", "5"]
    # Times in another zone mean the same instants.
    out2 = io.StringIO()
    tz_start = T0.astimezone(datetime.now().astimezone().tzinfo)
    assert export_disclosures(db, tz_start, T0 + timedelta(hours=2), out2) == 3
    with pytest.raises(ValueError):
        export_disclosures(db, datetime(2024, 1, 1), T0, io.StringIO())
    assert export_disclosures(db, T0, T0, io.StringIO()) == 0


def test_detail_roundtrip_is_canonical(db: Database, key: Ed25519PrivateKey) -> None:
    log = AuditLog(db, key, checkpoint_interval=math.inf)
    entry = log.append(AuditAction.CONFIG, detail={"t": (1, 2), "f": 0.1, "k": {"z": 1, "a": 2}})
    assert entry.detail == {"t": [1, 2], "f": 0.1, "k": {"z": 1, "a": 2}}
    stored = db.query_one("SELECT detail FROM audit_entries WHERE seq = 0")
    assert stored == (json.dumps(entry.detail, sort_keys=True, separators=(",", ":")),)
    assert next(log.entries()) == entry
