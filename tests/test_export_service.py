"""The export service (issue #13.5): the policy's export decision, the requester's masks burnt
in, a signed manifest that verifies, one audit entry and one billed export per export, cancel,
retention, and evidence locks."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import wait_for
from export_fixtures import NOW, T0, World, ffprobe, luma_frames

from billing.invoices import InvoiceStore, run_invoices
from billing.model import Metric
from billing.rating.planfile import load_plans
from gateway.recording.export_manifest import keys_from_jwks, verify_export
from gateway.recording.export_store import ExportState
from gateway.recording.exports import ExportError
from tenants.audit import AuditAction
from tenants.months import month_of

DEMO_PLANS = Path(__file__).resolve().parents[1] / "ops" / "config" / "demo-plans.toml"


def jwks_file(world: World, tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(world.tenancy.jwks()))
    return path


async def test_an_investigators_export_is_signed_audited_and_billed(
    world: World, tmp_path: Path
) -> None:
    start, end = T0 + timedelta(seconds=2), T0 + timedelta(seconds=8)
    job = await world.service.create(
        world.token("officer"), "street", start, end, purpose="investigation",
        incident_ref="CAD 4411", peer="10.0.0.7",
    )  # fmt: skip
    assert job.state == ExportState.QUEUED
    done = await world.done(job.id)
    assert done.state == ExportState.DONE, done.error
    media, manifest = await world.service.files(world.token("officer"), job.id)
    probe = ffprobe(media)
    assert probe.errors == "" and abs(probe.duration - 6.0) <= 1.0
    keys = keys_from_jwks(json.loads(jwks_file(world, tmp_path).read_text()))
    verified = verify_export(media, manifest, keys)
    m = verified.manifest
    assert (m.camera, m.start, m.end) == ("street", start, end)
    assert (m.requester.person, m.requester.tenant) == ("officer", "police")
    assert (m.purpose, m.incident_ref, m.masks_applied, m.reencoded) == (
        "investigation",
        "CAD 4411",
        (),
        False,
    )
    exports = world.audit(AuditAction.EXPORT)
    assert len(exports) == 1
    entry = exports[0]
    assert (entry.tenant, entry.principal, entry.camera, entry.purpose) == (
        "police",
        "officer",
        "street",
        "investigation",
    )
    assert entry.detail["export"] == job.id and entry.detail["sha256"] == verified.sha256
    usage = world.ledger.usage("police", month_of(NOW))
    assert usage[Metric.EXPORTS] == 1
    # ... and on the police's invoice, priced by the demo plan (GBP 15 an export).
    plans = load_plans(DEMO_PLANS)
    store = InvoiceStore(world.tenancy.db, ledger=world.ledger)
    invoices = run_invoices(world.ledger, store, plans, {"police": "police"}, month_of(NOW),
                            now=datetime.now(UTC))  # fmt: skip
    lines = [x for x in invoices[0].lines if x.metric == Metric.EXPORTS]
    assert [(x.quantity.split(".")[0], x.amount_pence) for x in lines] == [("1", 1500)]


async def test_a_masked_tenants_export_has_its_masks_burnt_in(world: World, tmp_path: Path) -> None:
    job = await world.service.create(
        world.token("guard"), "street", T0 + timedelta(seconds=1), T0 + timedelta(seconds=3),
        purpose="shoplifting report",
    )  # fmt: skip
    done = await world.done(job.id, "guard")
    assert done.state == ExportState.DONE, done.error
    media, manifest = await world.service.files(world.token("guard"), job.id)
    m = verify_export(media, manifest, keys_from_jwks(world.tenancy.jwks())).manifest
    assert m.reencoded and [z.id for z in m.masks_applied] == ["homes"]
    frames = luma_frames(media)
    assert len(frames) == 50
    assert all(f[:120, :160].max() <= 20 for f in frames[::7])


async def test_refusals_are_audited_and_name_nothing(world: World) -> None:
    start, end = T0, T0 + timedelta(seconds=4)
    cases = [
        ("pviewer", "street", 403),  # a viewer's role does not export
        ("tfl-inv", "street", 403),  # a grant without the export right
        ("officer", "elsewhere", 404),  # no such camera
        ("nhs-inv", "street", 403),  # footage older than the grant's maximum playback age
    ]
    for who, camera, status in cases:
        with pytest.raises(ExportError) as exc:
            await world.service.create(world.token(who), camera, start, end, purpose="x")
        assert exc.value.status == status
    with pytest.raises(ExportError) as exc:
        await world.service.create("not-a-token", "street", start, end, purpose="x")
    assert exc.value.status == 401
    denied = world.audit(AuditAction.DENIED)
    assert [e.principal for e in denied if e.detail.get("action") == "export"][:4] == [
        "pviewer",
        "tfl-inv",
        "officer",
        "nhs-inv",
    ]
    assert world.audit(AuditAction.EXPORT) == []


async def test_bad_requests_are_refused_before_any_work(world: World) -> None:
    token = world.token("officer")
    for start, end, purpose, code in [
        (T0, T0 + timedelta(seconds=4), None, "purpose_required"),
        (T0 + timedelta(seconds=4), T0, "x", "invalid_argument"),
        (T0, T0 + timedelta(days=2), "x", "invalid_argument"),
        (T0 - timedelta(hours=5), T0 - timedelta(hours=4), "x", "no_recording"),
        (NOW + timedelta(hours=1), NOW + timedelta(hours=2), "x", "invalid_argument"),
    ]:
        with pytest.raises(ExportError) as exc:
            await world.service.create(token, "street", start, end, purpose=purpose)
        assert exc.value.code == code
    with pytest.raises(ExportError) as exc:
        await world.service.create(token, "street", T0, T0 + timedelta(seconds=1),
                                   purpose="a\nforged line")  # fmt: skip
    assert exc.value.code == "invalid_argument"
    assert await world.service.list_exports(token) == []


async def test_another_tenant_sees_no_export_of_others(world: World) -> None:
    job = await world.service.create(
        world.token("officer"), "street", T0, T0 + timedelta(seconds=2), purpose="case"
    )
    await world.done(job.id)
    with pytest.raises(ExportError) as exc:
        await world.service.get(world.token("guard"), job.id)
    assert exc.value.status == 404
    with pytest.raises(ExportError):
        await world.service.files(world.token("guard"), job.id)
    assert await world.service.list_exports(world.token("guard")) == []
    # Oversight (the platform's auditors) sees every export.
    assert [j.id for j in await world.service.list_exports(world.token("root"))] == [job.id]


async def test_a_cancelled_export_leaves_nothing_and_is_not_billed(world: World) -> None:
    # Hold both slots so the export waits in the queue, then cancel it there.
    service = world.service
    for _ in range(service.config.max_running):
        await service._slots.acquire()
    try:
        job = await service.create(
            world.token("officer"), "street", T0, T0 + timedelta(seconds=9), purpose="case"
        )
        cancelling = asyncio.create_task(service.cancel(world.token("officer"), job.id))
        await wait_for(
            lambda: job.id not in service._running or service._running[job.id].cancel.is_set(),
            5,
            what="cancel",
        )
    finally:
        for _ in range(service.config.max_running):
            service._slots.release()
    cancelled = await cancelling
    assert cancelled.state == ExportState.CANCELLED
    assert list(service.dir.iterdir()) == []
    assert world.audit(AuditAction.EXPORT) == []
    assert world.ledger.usage("police", month_of(NOW))[Metric.EXPORTS] == 0
    with pytest.raises(ExportError) as exc:
        await service.cancel(world.token("officer"), job.id)
    assert exc.value.code == "not_running"


async def test_an_export_waiting_for_a_slot_is_cancelled_at_once(world: World) -> None:
    """Cancel answers while every slot is still busy (the console's Cancel button on a queued
    export): before, it waited 30 s for a slot to free and answered "queued"."""
    service = world.service
    for _ in range(service.config.max_running):
        await service._slots.acquire()
    try:
        job = await service.create(
            world.token("officer"), "street", T0, T0 + timedelta(seconds=9), purpose="case"
        )
        cancelled = await asyncio.wait_for(service.cancel(world.token("officer"), job.id), 10)
        assert cancelled.state == ExportState.CANCELLED
        assert cancelled.error == "cancelled"
        assert job.id not in service._running
    finally:
        for _ in range(service.config.max_running):
            service._slots.release()
    assert list(service.dir.iterdir()) == []
    assert world.audit(AuditAction.EXPORT) == []


async def test_the_sweeper_deletes_exactly_the_expired_exports_and_audits_each(
    world: World,
) -> None:
    token = world.token("officer")
    jobs = []
    for i in range(3):
        job = await world.service.create(
            token, "street", T0 + timedelta(seconds=i), T0 + timedelta(seconds=i + 2),
            purpose="case",
        )  # fmt: skip
        jobs.append(await world.done(job.id))
    assert await world.service.sweep(NOW + timedelta(days=6)) == 0
    # Push the first export's expiry back: it alone has expired a day later.
    first = jobs[0]
    world.service.store.update(first.with_(expires=NOW + timedelta(days=1)))
    assert await world.service.sweep(NOW + timedelta(days=2)) == 1
    assert not (world.service.dir / f"{first.id}.mp4").exists()
    assert not (world.service.dir / f"{first.id}.manifest.json").exists()
    for j in jobs[1:]:
        assert (world.service.dir / f"{j.id}.mp4").exists()
    assert (await world.service.get(token, first.id)).state == ExportState.DELETED
    deletions = world.audit(AuditAction.EXPORT_DELETED)
    assert [e.detail["export"] for e in deletions] == [first.id]
    assert await world.service.sweep(NOW + timedelta(days=2)) == 0  # once only
    assert await world.service.sweep(NOW + timedelta(days=8)) == 2
    assert len(world.audit(AuditAction.EXPORT_DELETED)) == 3


async def test_evidence_locks_are_taken_released_and_audited(world: World) -> None:
    token = world.token("officer")
    lock = await world.service.lock(
        token, "street", T0, T0 + timedelta(seconds=5), reason="CAD 4411 hold",
        expires=NOW + timedelta(days=90),
    )  # fmt: skip
    seg0 = world.index.segment("s0")
    assert seg0 is not None and world.index.is_locked(seg0, NOW)
    assert [x.id for x in await world.service.locks(token, "street")] == [lock.id]
    assert await world.service.locks(world.token("guard"), "street") == []
    with pytest.raises(ExportError) as exc:
        await world.service.release(world.token("guard"), lock.id)
    assert exc.value.status in (403, 404)
    with pytest.raises(ExportError) as exc:
        await world.service.lock(world.token("tfl-inv"), "street", T0, T0 + timedelta(seconds=1),
                                 reason="x", expires=NOW + timedelta(days=1))  # fmt: skip
    assert exc.value.status == 403
    released = await world.service.release(token, lock.id)
    assert released.released_by == "officer" and not world.index.is_locked(seg0, NOW)
    with pytest.raises(ExportError) as exc:
        await world.service.release(token, lock.id)
    assert exc.value.code == "already_released"
    taken = world.audit(AuditAction.EVIDENCE_LOCK)
    dropped = world.audit(AuditAction.EVIDENCE_RELEASE)
    assert [e.detail["lock"] for e in taken] == [e.detail["lock"] for e in dropped] == [lock.id]
    assert taken[0].purpose == "CAD 4411 hold"


async def test_an_export_unfinished_at_a_restart_is_failed_not_offered(
    world: World, tmp_path: Path
) -> None:
    job = await world.service.create(
        world.token("officer"), "street", T0, T0 + timedelta(seconds=9), purpose="case"
    )
    await world.done(job.id)
    stored = world.service.store.get(job.id)
    assert stored is not None
    # As if the process died mid-cut: the row says running, the cut's files are on disk.
    await world.service.stop()
    world.service.store.update(stored.with_(state=ExportState.RUNNING, error=None))
    (world.service.dir / f"{job.id}.mp4.part").write_bytes(b"half")
    assert (world.service.dir / f"{job.id}.mp4").exists()
    await world.service.start()
    again = await world.service.get(world.token("officer"), job.id)
    assert again.state == ExportState.FAILED and "stopped" in (again.error or "")
    assert list(world.service.dir.iterdir()) == []


async def test_stopping_the_gateway_fails_a_running_export(world: World) -> None:
    job = await world.service.create(
        world.token("officer"), "street", T0, T0 + timedelta(seconds=9), purpose="case"
    )
    await world.service.stop()
    again = await world.service.get(world.token("officer"), job.id)
    assert again.state in (ExportState.FAILED, ExportState.DONE)
    if again.state == ExportState.FAILED:
        assert "stopped" in (again.error or "")
        assert list(world.service.dir.iterdir()) == []
    await world.service.start()
