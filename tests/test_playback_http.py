"""Playback over HTTP as MediaMTX's clients use it (gateway.playback.http): /list gives the
recorded spans, /get cuts a range that ffprobe reads cleanly with the asked duration and a
player can seek in with Range; every playback is audited once and metered as what was served;
a missing right, footage past the grant's age and a missing purpose are 403s, audited; a masked
tenant's copy is dark in its zone and faithful outside it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from conftest import FFMPEG, wait_for
from export_fixtures import ffprobe, luma_frames, psnr
from playback_world import ZONE, World, playback_world

from billing.model import Metric
from gateway.masking.zones import Zone, rasterize
from gateway.playback.hls import playlist
from gateway.recording.index import Fragment, Segment
from tenants.audit import AuditAction
from tenants.months import month_of


def iso(t) -> str:  # type: ignore[no-untyped-def]
    return t.isoformat().replace("+00:00", "Z")


async def fetch(world: World, route: str, bearer: str | None = None, **params: str):  # type: ignore[no-untyped-def]
    assert world.http is not None
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    async with world.http.get(f"{world.base}{route}", params=params, headers=headers) as r:
        return r.status, await r.read(), r.headers


async def test_list_spans_and_get_a_range_that_ffprobe_reads(tmp_path: Path) -> None:
    async with playback_world(tmp_path) as world:
        owner = world.token("council", "operator")
        status, body, _ = await fetch(world, "/list", owner, path="cam1")
        assert status == 200, body
        spans = json.loads(body)
        assert [s["start"] for s in spans] == [iso(world.old), iso(world.recent)]
        assert all(abs(s["duration"] - 10.0) < 0.05 for s in spans)
        assert spans[1]["url"].startswith(f"{world.base}/get?path=cam1&start=")

        start = world.recent + timedelta(seconds=2.5)
        for fmt in ("mp4", "fmp4"):
            status, data, headers = await fetch(
                world, "/get", owner, path="cam1", start=iso(start), duration="5", format=fmt
            )
            assert status == 200, data
            assert headers["Content-Type"] == "video/mp4"
            out = tmp_path / f"got.{fmt}.mp4"
            out.write_bytes(data)
            probe = ffprobe(out)
            assert probe.errors == "" and probe.codec == "h264"
            assert abs(probe.duration - 5.0) <= 1.0, probe
            # The file starts at the key frame at or before the asked instant.
            assert headers["X-Media-Start"] == iso(world.recent + timedelta(seconds=2))


async def test_range_requests_seek_in_one_cut_audited_and_metered_once(tmp_path: Path) -> None:
    async with playback_world(tmp_path) as world:
        owner = world.token("council", "operator")
        q = {"path": "cam1", "start": iso(world.recent + timedelta(seconds=1)), "duration": "4"}
        status, whole, _ = await fetch(world, "/get", owner, **q)
        assert status == 200
        assert world.http is not None
        async with world.http.get(
            f"{world.base}/get",
            params=q,
            headers={"Authorization": f"Bearer {owner}", "Range": "bytes=100-1099"},
        ) as r:
            assert r.status == 206
            assert r.headers["Content-Range"] == f"bytes 100-1099/{len(whole)}"
            assert await r.read() == whole[100:1100]
        entries = world.audit(AuditAction.PLAYBACK)
        assert len(entries) == 1
        e = entries[0]
        assert (e.tenant, e.camera, e.detail["protocol"], e.detail["from"]) == (
            "council",
            "cam1",
            "http",
            q["start"],
        )
        # What was served (4 s from the key frame at 1 s) is on the ledger as playback.
        metering = world.gw.gateway.metering
        assert metering is not None
        period = month_of(world.recent, world.gw.gateway.config.zone)

        def played() -> int:
            return metering.ledger.usage("council", period)[Metric.PLAYBACK_SECONDS]

        await wait_for(lambda: played() > 0, 10, what="playback usage on the ledger")
        assert played() == 4000
        assert metering.ledger.usage("council", period)[Metric.BYTES] == len(whole)


async def test_refusals_are_403_and_audited(tmp_path: Path) -> None:
    async with playback_world(tmp_path) as world:
        police = world.token("police", "investigator")
        shop = world.token("shop", "operator")
        recent = {"path": "cam1", "start": iso(world.recent), "duration": "2"}
        old = {"path": "cam1", "start": iso(world.old), "duration": "2"}
        cases = [
            (shop, recent, 403, "no grant gives shop playback"),
            (police, recent, 403, "purpose or incident reference is required"),
            (police, {**old, "purpose": "incident 4411"}, 403, "footage older than 86400s"),
        ]
        for token, query, status, reason in cases:
            got, body, _ = await fetch(world, "/get", token, **query)
            assert got == status and reason in body.decode(), body
        got, body, _ = await fetch(world, "/get", police, **recent, purpose="incident 4411")
        assert got == 200
        # Who is asking comes first: no credentials, a known camera and an unknown one alike.
        for path in ("cam1", "nope"):
            got, _, headers = await fetch(
                world, "/get", None, path=path, start=iso(world.recent), duration="1"
            )
            assert got == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        denied = [
            e for e in world.audit(AuditAction.DENIED) if e.detail.get("action") == "playback"
        ]
        reasons = [e.detail["reason"] for e in denied]
        assert any("no grant gives shop playback" in r for r in reasons)
        assert any("footage older" in r for r in reasons)
        assert any("purpose" in r for r in reasons)
        played = world.audit(AuditAction.PLAYBACK)
        assert [(e.tenant, e.purpose) for e in played] == [("police", "incident 4411")]
        # The police's list stops at what its grant may play back.
        got, body, _ = await fetch(world, "/list", police, path="cam1", purpose="x")
        assert [s["start"] for s in json.loads(body)] == [iso(world.recent)]


async def test_bad_parameters_are_400_naming_them(tmp_path: Path) -> None:
    async with playback_world(tmp_path) as world:
        owner = world.token("council", "operator")
        for query, name in (
            ({"path": "cam1", "start": "yesterday", "duration": "1"}, "start"),
            ({"path": "cam1", "start": iso(world.recent)}, "duration"),
            ({"path": "cam1", "start": iso(world.recent), "duration": "7200"}, "duration"),
            (
                {"path": "cam1", "start": iso(world.recent), "duration": "1", "format": "avi"},
                "format",
            ),
        ):
            got, body, _ = await fetch(world, "/get", owner, **query)
            assert got == 400 and body.decode().startswith(name), body
        got, body, _ = await fetch(
            world,
            "/get",
            owner,
            path="cam1",
            start=iso(world.recent - timedelta(hours=1)),
            duration="5",
        )
        assert got == 404


async def test_a_masked_tenants_copy_is_burnt_in(tmp_path: Path) -> None:
    async with playback_world(tmp_path) as world:
        police = world.token("police", "investigator")
        q = {
            "path": "cam2",
            "start": iso(world.recent + timedelta(seconds=1)),
            "duration": "2",
            "format": "mp4",
        }
        got, masked, _ = await fetch(world, "/get", police, **q, purpose="incident 4411")
        assert got == 200
        (tmp_path / "masked.mp4").write_bytes(masked)
        # The original: the recording itself, from its key frame at 1 s (frame 25).
        a = luma_frames(world.index.root / "cam2-recent.mp4", 45)[25:45]
        b = luma_frames(tmp_path / "masked.mp4", 20)
        assert len(a) == len(b) == 20
        h, w = a[0].shape
        zone = rasterize((Zone("home", ZONE),), w, h)
        ys, xs = np.nonzero(zone)
        inner = np.zeros_like(zone)
        inner[ys.min() + 4 : ys.max() - 4, xs.min() + 4 : xs.max() - 4] = True
        for fa, fb in zip(a, b, strict=True):
            assert float(fb[inner].max()) <= 24.0  # dark inside the zone
            assert float(fa[inner].mean()) > 40.0  # where the original is not
            assert psnr(fa[~zone], fb[~zone]) >= 30.0


async def test_hls_vod_of_the_recordings_own_bytes(tmp_path: Path, procs) -> None:  # type: ignore[no-untyped-def]
    async with playback_world(tmp_path) as world:
        owner = world.token("council", "operator")
        status, body, headers = await fetch(
            world, "/hls/cam1/index.m3u8", None, start=iso(world.recent), duration="10", token=owner
        )
        assert status == 200, body
        assert headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
        text = body.decode()
        lines = text.splitlines()
        assert lines[0] == "#EXTM3U" and lines[-1] == "#EXT-X-ENDLIST"
        assert "#EXT-X-PLAYLIST-TYPE:VOD" in lines
        (init,) = [x for x in lines if x.startswith("#EXT-X-MAP:")]
        assert 'BYTERANGE="' in init and f"token={owner}" in init
        ranges = [x for x in lines if x.startswith("#EXT-X-BYTERANGE:")]
        dates = [x.split(":", 1)[1] for x in lines if x.startswith("#EXT-X-PROGRAM-DATE-TIME:")]
        assert len(ranges) == len(dates) == 10
        assert dates[0] == world.recent.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        # ffmpeg plays the playlist over HTTP: every frame of the ten seconds, from byte
        # ranges. (-http_seekable 0: told a segment's URL can seek, ffmpeg's MP4 demuxer seeks
        # to the end of the whole file for its mfra index and then reads one fragment only.)
        out = tmp_path / "hls.mp4"
        url = (
            f"{world.base}/hls/cam1/index.m3u8?start={iso(world.recent)}&duration=10&token={owner}"
        )
        p = await procs(
            [FFMPEG, "-v", "error", "-http_seekable", "0", "-i", url, "-c", "copy", "-y", str(out)]
        )
        assert await p.wait(60) == 0, p.text
        got = ffprobe(out)
        assert got.errors == "" and got.frames == 250, got
        # One fragment by its byte range: 206, metered as the second it covers.
        length, offset = (int(v) for v in ranges[3].split(":", 1)[1].split("@"))
        file_url = lines[lines.index(ranges[3]) + 1]
        assert world.http is not None
        async with world.http.get(
            f"{world.base}/hls/cam1/{file_url}",
            headers={"Range": f"bytes={offset}-{offset + length - 1}"},
        ) as r:
            assert r.status == 206 and len(await r.read()) == length
        # A window longer than a playlist should be is refused; the playlist fetches were
        # audited as playbacks.
        status, body, _ = await fetch(
            world,
            "/hls/cam1/index.m3u8",
            owner,
            start=iso(world.old),
            end=iso(world.recent + timedelta(seconds=10)),
        )
        assert status == 400 and body.startswith(b"end: at most 6 hours")
        assert all(e.detail["protocol"] == "hls" for e in world.audit(AuditAction.PLAYBACK))
        # A masked tenant is not given the recording's own bytes: its playlist names burnt-in
        # segments (tests/test_playback_hls_masked.py), and the files stay refused to it.
        police = world.token("police", "investigator")
        status, body, _ = await fetch(
            world,
            "/hls/cam2/index.m3u8",
            police,
            start=iso(world.recent),
            duration="5",
            purpose="x",
        )
        assert status == 200 and b"masked/" in body and b"#EXT-X-BYTERANGE" not in body
        status, body, _ = await fetch(
            world, f"/hls/cam2/{file_url.replace('cam1', 'cam2')}", police, purpose="x"
        )
        assert status == 403 and b"own bytes" in body


def test_a_playlist_breaks_at_each_new_file_and_each_gap() -> None:
    t0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    segs = {s: Segment(s, "cam1", f"{s}.mp4", t0, t0, 700, 0, "H264", True) for s in ("a", "b")}
    at = lambda i: t0 + timedelta(seconds=i)  # noqa: E731
    frags = [
        Fragment("a", 0, "cam1", at(0), at(1), 700, 100, True),
        Fragment("a", 1, "cam1", at(1), at(2), 800, 100, True),
        Fragment("a", 2, "cam1", at(9), at(10), 900, 100, True),  # after a 7 s outage
        Fragment("b", 0, "cam1", at(10), at(11), 700, 100, True),  # a new file
    ]
    text = playlist(frags, segs, {"a": "file/a/media.mp4", "b": "file/b/media.mp4"})
    lines = text.splitlines()
    assert text.count("#EXT-X-DISCONTINUITY") == 2
    assert [x for x in lines if x.startswith("#EXT-X-MAP")] == [
        '#EXT-X-MAP:URI="file/a/media.mp4",BYTERANGE="700@0"',
        '#EXT-X-MAP:URI="file/b/media.mp4",BYTERANGE="700@0"',
    ]
    assert (
        lines.index("#EXT-X-DISCONTINUITY")
        == lines.index("#EXT-X-PROGRAM-DATE-TIME:2026-12-01T10:00:09.000Z") - 1
    )
    assert "#EXT-X-BYTERANGE:100@900" in lines and lines[-1] == "#EXT-X-ENDLIST"
