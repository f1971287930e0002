"""Masked HLS VOD (gateway.playback.hls_masked): a masked tenant's playlist lists the same
recorded time as anyone's, in segments burnt in on demand by the cutter /get uses, each its own
fMP4 (its EXT-X-MAP init and its moof + mdat). ffmpeg plays the playlist end to end; every
frame is dark inside the tenant's zone and faithful outside it; what was served is metered and
the playlist audited; liftable zones lift only with the unmask right and a purpose; the
transcodes are bounded (a request waits for a slot up to hls_masked_wait, then 503 with
Retry-After) and a burnt segment is served again from the cache."""

from __future__ import annotations

import asyncio
import io
import itertools
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import av
import numpy as np
from conftest import FFMPEG, wait_for
from export_fixtures import _boxes, _decode_time, ffprobe, luma_frames, psnr
from playback_world import SEED, ZONE, World, playback_world

from billing.model import Metric
from gateway.config import RecordingConfig
from gateway.masking.zones import Zone, rasterize
from gateway.playback.hls import MASKED_HLS
from gateway.playback.hls_masked import Burnt, Busy, Key, MaskedSegments, groups, split_init
from gateway.recording.index import Fragment
from tenants.audit import AuditAction
from tenants.months import month_of

PURPOSE = "incident 4411"
# A liftable zone on cam2, right of the permanent one (ZONE).
DOOR = ((0.6, 0.5), (0.9, 0.5), (0.9, 0.9), (0.6, 0.9))
LIFT_SEED = (
    SEED.replace('rights = ["live", "playback"]', 'rights = ["live", "playback", "unmask"]')
    + f"""
[[masks]]
id = "door"
camera = "cam2"
points = {[list(p) for p in DOOR]}
kind = "liftable"
"""
)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


async def fetch(world: World, route: str, **params: str) -> tuple[int, bytes, dict[str, str]]:
    assert world.http is not None
    async with world.http.get(f"{world.base}{route}", params=params) as r:
        return r.status, await r.read(), dict(r.headers)


async def masked_lines(world: World, token: str, **extra: str) -> list[str]:
    status, body, headers = await fetch(
        world,
        "/hls/cam2/index.m3u8",
        start=iso(world.recent),
        duration="10",
        purpose=PURPOSE,
        token=token,
        **extra,
    )
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
    return body.decode().splitlines()


def inner(mask: np.ndarray) -> np.ndarray:
    """The zone shrunk by 4 px (its edge is where the encoder blurs dark into picture)."""
    ys, xs = np.nonzero(mask)
    out = np.zeros_like(mask)
    out[ys.min() + 4 : ys.max() - 4, xs.min() + 4 : xs.max() - 4] = True
    return out


async def test_a_masked_tenants_playlist_is_burnt_in_and_ffmpeg_plays_it(
    tmp_path: Path,
    procs,  # type: ignore[no-untyped-def]
) -> None:
    async with playback_world(tmp_path) as world:
        police = world.token("police", "investigator")
        lines = await masked_lines(world, police)
        assert lines[0] == "#EXTM3U" and lines[-1] == "#EXT-X-ENDLIST"
        # The same ten recorded seconds, as three burnt segments (4 + 4 + 2 s, each from a
        # key frame), each with its own init; none of the recording's own bytes.
        maps = [x for x in lines if x.startswith("#EXT-X-MAP:")]
        media = [x for x in lines if x and not x.startswith("#")]
        assert len(maps) == len(media) == 3
        assert [x for x in lines if x.startswith("#EXTINF:")] == [
            "#EXTINF:4.000,",
            "#EXTINF:4.000,",
            "#EXTINF:2.000,",
        ]
        assert all("/init.mp4?" in m and f"token={police}" in m for m in maps)
        assert all(u.startswith("masked/") and "/media.mp4?" in u for u in media)
        assert not any(x.startswith("#EXT-X-BYTERANGE") or "file/" in x for x in lines)
        # One recorded file with no gap: no discontinuity (the segments share its timeline).
        assert "#EXT-X-DISCONTINUITY" not in lines
        dates = [x.split(":", 1)[1] for x in lines if x.startswith("#EXT-X-PROGRAM-DATE-TIME:")]
        assert dates[0] == world.recent.isoformat(timespec="milliseconds").replace("+00:00", "Z")

        # ffmpeg reads the playlist over HTTP end to end and copies it into one MP4 (which
        # needs timestamps rising across the segments): every one of the 250 frames.
        url = (
            f"{world.base}/hls/cam2/index.m3u8?start={iso(world.recent)}&duration=10"
            f"&purpose={PURPOSE.replace(' ', '%20')}&token={police}"
        )
        out = tmp_path / "masked-hls.mp4"
        p = await procs([FFMPEG, "-v", "error", "-i", url, "-c", "copy", "-y", str(out)])
        assert await p.wait(120) == 0, p.text
        got = ffprobe(out)
        assert got.errors == "" and got.codec == "h264" and got.frames == 250, got
        assert abs(got.duration - 10.0) <= 0.1, got

        # The pixel check against the recording itself, frame by frame.
        a = luma_frames(world.index.root / "cam2-recent.mp4", 250)
        b = luma_frames(out, 250)
        assert len(a) == len(b) == 250
        h, w = a[0].shape
        zone = rasterize((Zone("home", ZONE),), w, h)
        dark = inner(zone)
        worst_inside = max(float(fb[dark].max()) for fb in b)
        worst_psnr = min(psnr(fa[~zone], fb[~zone]) for fa, fb in zip(a, b, strict=True))
        print(f"masked HLS: brightest luma inside the zone {worst_inside:.0f}, "
              f"lowest PSNR outside {worst_psnr:.1f} dB")  # fmt: skip
        assert worst_inside <= 20.0  # dark inside the zone in every frame
        assert min(float(fa[dark].mean()) for fa in a) > 40.0  # where the original is not
        assert worst_psnr >= 30.0

        # Metered as the ten seconds served (each media segment once); each playlist fetch
        # (this test's and ffmpeg's) audited as one playback.
        metering = world.gw.gateway.metering
        assert metering is not None
        period = month_of(world.recent, world.gw.gateway.config.zone)

        def played() -> int:
            return metering.ledger.usage("police", period)[Metric.PLAYBACK_SECONDS]

        await wait_for(lambda: played() >= 10000, 10, what="masked HLS usage on the ledger")
        assert played() == 10000
        entries = world.audit(AuditAction.PLAYBACK)
        assert len(entries) == 2
        for entry in entries:
            assert (entry.tenant, entry.camera, entry.purpose) == ("police", "cam2", PURPOSE)
            assert entry.detail["protocol"] == "hls"
            assert entry.detail["variant"].startswith("masked-")

        # ffprobe reads it too, from the cache: nothing is burnt twice.
        assert world.app is not None
        masked = world.app[MASKED_HLS]
        assert masked.burns == 3
        probe = await asyncio.to_thread(ffprobe, url)  # type: ignore[arg-type]
        assert probe.errors == "" and probe.frames == 250, probe
        assert masked.burns == 3 and masked.cached_bytes > 0

        # Each segment carries on the file's timeline where the last one ended (its first
        # decode time, tfdt, 4 s after the last one's), which is why no discontinuity is needed.
        starts = []
        for url in media:
            status, body, _ = await fetch(world, "/hls/cam2/" + url)
            assert status == 200
            moof = next(b for b in _boxes(body) if b[0] == "moof")
            starts.append(_decode_time(body, moof) / 90_000)
        assert [round(b - a, 3) for a, b in itertools.pairwise(starts)] == [4.0, 4.0]

        # The recording's own bytes stay refused to this tenant.
        status, body, _ = await fetch(
            world, "/hls/cam2/file/cam2-recent/media.mp4", purpose=PURPOSE, token=police
        )
        assert status == 403 and b"own bytes" in body


async def test_who_is_asking_comes_first_and_unmasked_viewers_get_no_burnt_segments(
    tmp_path: Path,
) -> None:
    async with playback_world(tmp_path) as world:
        police = world.token("police", "investigator")
        segment = (await masked_lines(world, police))[-2]
        route = "/hls/cam2/" + segment.split("?", 1)[0]
        # No credentials: 401 for a real segment of a real camera and for an unknown one.
        for path in (route, route.replace("cam2", "nope")):
            status, _, headers = await fetch(world, path)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        # A tenant that may watch cam1 live but not play it back: 403 (cam2, which it may not
        # see at all, would be 404 whatever the segment).
        shop = world.token("shop", "operator")
        status, body, _ = await fetch(world, route.replace("cam2", "cam1"), token=shop)
        assert status == 403 and b"no grant gives shop playback" in body, body
        # A segment that is not one of the playlist's groups: 404.
        bad = route.replace("/8-9/", "/9-9/")
        status, _, _ = await fetch(world, bad, purpose=PURPOSE, token=police)
        assert status == 404
        # An unmasked viewer (the owner on cam1) gets the recording's own bytes, not these.
        owner = world.token("council", "operator")
        status, body, _ = await fetch(
            world, "/hls/cam1/index.m3u8", start=iso(world.recent), duration="4", token=owner
        )
        assert status == 200 and b"#EXT-X-BYTERANGE" in body and b"masked/" not in body
        status, _, _ = await fetch(world, route.replace("cam2", "cam1"), token=owner)
        assert status == 404


async def test_liftable_zones_lift_only_with_the_unmask_right_and_a_purpose(tmp_path: Path) -> None:
    async with playback_world(tmp_path, seed_text=LIFT_SEED) as world:
        police = world.token("police", "investigator")

        async def first_segment(**extra: str) -> list[np.ndarray]:
            lines = await masked_lines(world, police, **extra)
            init = next(x for x in lines if x.startswith("#EXT-X-MAP:")).split('"')[1]
            media = next(x for x in lines if x and not x.startswith("#"))
            parts = []
            for url in (init, media):
                status, body, _ = await fetch(world, "/hls/cam2/" + url)
                assert status == 200, body
                parts.append(body)
            with av.open(io.BytesIO(b"".join(parts))) as c:
                return [f.to_ndarray(format="gray").astype(np.float64) for f in c.decode(video=0)]

        kept = await first_segment()
        lifted = await first_segment(unmasked="1")
        original = luma_frames(world.index.root / "cam2-recent.mp4", 100)
        assert len(kept) == len(lifted) == 100
        h, w = original[0].shape
        home = inner(rasterize((Zone("home", ZONE),), w, h))
        door = inner(rasterize((Zone("door", DOOR),), w, h))
        for o, k, u in zip(original, kept, lifted, strict=True):
            assert k[home].max() <= 20.0 and k[door].max() <= 20.0  # both burnt in
            assert u[home].max() <= 20.0  # the permanent zone never lifts
            assert psnr(o[door], u[door]) >= 30.0  # the liftable one did
        variants = {e.detail["variant"] for e in world.audit(AuditAction.PLAYBACK)}
        assert len(variants) == 2  # two zone sets, two variants (and cache keys)


async def test_over_the_limit_a_request_waits_then_gets_503_with_retry_after(
    tmp_path: Path,
) -> None:
    limits = RecordingConfig(hls_masked_transcodes=1, hls_masked_wait=1.0)
    async with playback_world(tmp_path, recording=limits) as world:
        police = world.token("police", "investigator")
        segment = (await masked_lines(world, police))[-2]
        assert world.app is not None
        masked = world.app[MASKED_HLS]
        # The one transcode slot is taken (as by a burn in progress): the request waits out
        # hls_masked_wait, then is told when to come back.
        await masked.slots.acquire()
        began = time.monotonic()
        status, body, headers = await fetch(world, "/hls/cam2/" + segment)
        waited = time.monotonic() - began
        assert status == 503 and headers["Retry-After"] == "2", body
        assert waited >= 1.0 and masked.refused == 1
        # A request that finds the slot taken waits for it and is served once it frees.
        asked = asyncio.ensure_future(fetch(world, "/hls/cam2/" + segment))
        await wait_for(lambda: masked.waiting == 1, 10, what="the request to wait for a slot")
        masked.slots.release()
        status, body, _ = await asyncio.wait_for(asked, 120)
        assert status == 200 and body.startswith(b"\x00") and b"moof" in body[:16]
        assert masked.burns == 1
        # /metrics says what the bounds did.
        assert world.http is not None
        bearer = {"Authorization": f"Bearer {world.token('council', 'operator')}"}
        async with world.http.get(f"{world.base}/metrics", headers=bearer) as r:
            assert r.status == 200, await r.text()
            text = await r.text()
        assert 'feedgate_hls_masked_segments_total{outcome="burnt"} 1.0' in text
        assert 'feedgate_hls_masked_segments_total{outcome="refused"} 1.0' in text
        assert "feedgate_hls_masked_waiting 0.0" in text


def test_groups_start_at_key_frames_hold_about_four_seconds_and_break_at_gaps() -> None:
    t0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)

    def frag(seq: int, at: float, key: bool = True, length: float = 1.0) -> Fragment:
        start = t0 + timedelta(seconds=at)
        return Fragment("a", seq, "cam1", start, start + timedelta(seconds=length), 0, 1, key)

    frags = [
        frag(0, 0, key=False),  # before the file's first key frame: nothing decodes it
        *(frag(i, i) for i in range(1, 6)),
        frag(6, 6, key=False),
        frag(7, 7, key=False),
        frag(8, 8),
        frag(9, 9, length=0),  # audio after the last picture
        frag(10, 15),  # after a 6 s outage
        frag(11, 16, key=False),
    ]
    got = [(g.first, g.last, g.seconds) for g in groups(frags)]
    assert got == [(1, 4, 4.0), (5, 8, 4.0), (10, 11, 2.0)]
    # A file still recording only grows its last group: the earlier ones keep their names.
    assert groups(frags[:5]) == groups(frags)[:1]


def test_split_init_keeps_the_moov_apart_and_drops_the_mfra() -> None:
    def box(kind: bytes, body: bytes = b"") -> bytes:
        return (8 + len(body)).to_bytes(4, "big") + kind + body

    data = box(b"ftyp", b"isom") + box(b"moov", b"x") + box(b"moof", b"1") + box(b"mdat", b"22")
    init, media = split_init(data + box(b"mfra", b"idx"))
    assert init == box(b"ftyp", b"isom") + box(b"moov", b"x")
    assert media == box(b"moof", b"1") + box(b"mdat", b"22")


async def test_the_cache_keeps_at_most_its_bytes_and_one_burn_serves_every_asker() -> None:
    masked = MaskedSegments(transcodes=2, wait=0.0, cache_bytes=250)
    made: list[Key] = []
    gate = asyncio.Event()

    def maker(key: Key, size: int) -> Callable[[], Awaitable[Burnt]]:
        async def make() -> Burnt:
            made.append(key)
            await gate.wait()  # the encoder at work
            return Burnt(b"i" * 10, b"m" * (size - 10), 1.0)

        return make

    def key(n: int) -> Key:
        return ("cam2", "masked-x", "seg", n, n)

    # Three players asking for one segment at once: one burn, one slot.
    askers = [asyncio.ensure_future(masked.get(key(0), maker(key(0), 100))) for _ in range(3)]
    await wait_for(lambda: made == [key(0)], 5, what="the first burn to start")
    # A second segment takes the other slot; a third finds both taken and, with no wait
    # allowed, is refused at once.
    second = asyncio.ensure_future(masked.get(key(1), maker(key(1), 100)))
    await wait_for(lambda: len(made) == 2, 5, what="the second burn to start")
    try:
        await masked.get(key(2), maker(key(2), 100))
        raise AssertionError("a third burn should have been refused")
    except Busy:
        pass
    gate.set()
    burnt = await asyncio.gather(*askers, second)
    assert len({id(b) for b in burnt[:3]}) == 1 and made == [key(0), key(1)]
    assert masked.refused == 1 and masked.burns == 2 and masked.cached_bytes == 200
    # Served from the cache, and touched (so key(1) is now the least recently used).
    assert await masked.get(key(0), maker(key(0), 100)) is burnt[0]
    await masked.get(key(2), maker(key(2), 100))
    assert list(masked.cache) == [key(0), key(2)] and masked.cached_bytes == 200
    # A segment bigger than the whole cache is served but not kept.
    await masked.get(key(3), maker(key(3), 300))
    assert key(3) not in masked.cache and masked.cached_bytes == 200
    assert not masked.slots.locked() and masked.burning == {}
