"""An export of what the gateway itself recorded (issue #13.5 acceptance): a real ffmpeg camera
publishes, the recorder writes its segments, and an investigator's export of a range across
them is an MP4 ffprobe reads with the range's duration, whose manifest verifies."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from conftest import make_config, publish_argv, publishing, running_gateway, wait_for
from export_fixtures import SEED, WHO, ffprobe

from gateway.config import CameraConfig, RecordingConfig, TenancyConfig
from gateway.recording.export_manifest import keys_from_jwks, verify_export
from gateway.recording.export_store import ExportState


async def test_an_export_of_the_gateways_own_recording(tmp_path: Path, procs: Any) -> None:
    seed = tmp_path / "seed.toml"
    seed.write_text(SEED)
    cfg = dataclasses.replace(
        make_config((CameraConfig(id="street", record=True, segment_seconds=2.0),)),
        data_dir=str(tmp_path / "var"),
        tenancy=TenancyConfig(enabled=True, seed=str(seed)),
        recording=RecordingConfig(outage_after=1.0),
    )
    async with running_gateway(cfg) as gw:
        tenancy, exports = gw.gateway.tenancy, gw.gateway.exports
        assert tenancy is not None and exports is not None

        def token(who: str) -> str:
            return tenancy.issuer.issue(tenant=WHO[who], subject=who)

        await procs(publish_argv(gw.url(f"street?token={token('root')}"), gop=25))
        await publishing(gw, "street")
        index = exports.index

        def closed() -> int:
            return sum(1 for s in index.segments("street") if s.closed)

        await wait_for(lambda: closed() >= 3, 40, what="three closed segments")
        segments = [s for s in index.segments("street") if s.closed]
        start = segments[0].start + timedelta(seconds=0.5)
        end = segments[2].end - timedelta(seconds=0.5)  # across three segment files
        job = await exports.create(token("officer"), "street", start, end, purpose="case")

        async def state() -> ExportState:
            return (await exports.get(token("officer"), job.id)).state

        deadline = datetime.now(UTC) + timedelta(seconds=30)
        while await state() in (ExportState.QUEUED, ExportState.RUNNING):
            assert datetime.now(UTC) < deadline, "the export did not finish"
            await asyncio.sleep(0.05)  # polled, with a deadline
        done = await exports.get(token("officer"), job.id)
        assert done.state == ExportState.DONE, done.error
        media, manifest = await exports.files(token("officer"), job.id)
        probe = ffprobe(media)
        assert probe.errors == "" and probe.codec == "h264"
        assert abs(probe.duration - (end - start).total_seconds()) <= 1.0
        m = verify_export(media, manifest, keys_from_jwks(tenancy.jwks())).manifest
        assert (m.camera, m.start, m.end, m.gaps) == ("street", start, end, ())
        assert m.media_start <= start < m.media_start + timedelta(seconds=1.05)  # one GOP
