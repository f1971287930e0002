"""An export runs on one node but is followed and cancelled through any (issue #13.5 on a
cluster): a load balancer sends the investigator's next call wherever it likes. The running
node stores its progress in the export's row about once a second and reads the cancels asked
for elsewhere; a second export service on the same database, as another node, sees the
progress move and cancels the cut. Before, it showed progress 0 and answered 409 other_node."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import make_config
from export_fixtures import NOW, T0, World

from billing.model import Metric
from gateway.config import ExportConfig
from gateway.recording import exports as exports_module
from gateway.recording.export_store import ExportState
from gateway.recording.exports import ExportError, ExportService
from tenants.audit import AuditAction
from tenants.months import month_of


@pytest.fixture
async def node_b(world: World, tmp_path: Path) -> AsyncIterator[ExportService]:
    config = replace(
        make_config(),
        data_dir=str(tmp_path),
        node_id="node-b",
        export=ExportConfig(retention_days=7, dir=str(tmp_path / "exports-b")),
    )
    service = ExportService(config, world.tenancy, world.index)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


@pytest.fixture
def held_cut(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """The cut pauses after its first progress report (in its worker thread) until it is
    cancelled, or ``go`` is set: a long export, held mid-way for as long as the test needs."""
    go = threading.Event()
    real = exports_module.cut

    def cut(*args: Any, progress: Callable[[float], None], cancel: threading.Event, **kw: Any):
        def report(fraction: float) -> None:
            progress(fraction)
            while fraction < 1.0 and not (cancel.is_set() or go.wait(0.05)):
                pass

        return real(*args, progress=report, cancel=cancel, **kw)

    monkeypatch.setattr(exports_module, "cut", cut)
    return go


async def test_another_node_sees_the_progress_and_cancels_the_cut(
    world: World, node_b: ExportService, held_cut: threading.Event
) -> None:
    officer = world.token("officer")
    job = await world.service.create(officer, "street", T0, T0 + timedelta(seconds=9), purpose="x")
    assert job.node == world.service.node != node_b.node

    deadline = asyncio.get_running_loop().time() + 10
    seen = [0.0]
    while not 0.0 < seen[-1] < 1.0:  # the running node reports about once a second
        assert asyncio.get_running_loop().time() < deadline, f"progress on b: {seen[-3:]}"
        await asyncio.sleep(0.05)
        seen.append((await node_b.get(officer, job.id)).progress)
    cancelled = await node_b.cancel(officer, job.id)
    assert cancelled.state == ExportState.CANCELLED, cancelled
    assert job.id not in world.service._running
    assert list(world.service.dir.iterdir()) == []
    assert world.audit(AuditAction.EXPORT) == []
    assert world.ledger.usage("police", month_of(NOW))[Metric.EXPORTS] == 0
    # Ended is ended, whichever node is asked.
    for node in (node_b, world.service):
        with pytest.raises(ExportError) as exc:
            await node.cancel(officer, job.id)
        assert (exc.value.status, exc.value.code) == (409, "not_running")


async def test_a_finished_export_is_the_same_on_every_node_and_cannot_be_cancelled(
    world: World, node_b: ExportService
) -> None:
    officer = world.token("officer")
    job = await world.service.create(officer, "street", T0, T0 + timedelta(seconds=9), purpose="x")
    done = await world.done(job.id)
    assert done.state == ExportState.DONE
    on_b = await node_b.get(officer, job.id)
    assert on_b.state == ExportState.DONE and on_b.sha256 == done.sha256
    with pytest.raises(ExportError) as exc:
        await node_b.cancel(officer, job.id)
    assert exc.value.code == "not_running"
