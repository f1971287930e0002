"""The media plane end to end, with real ffmpeg as camera and viewer."""

from __future__ import annotations

import asyncio
import itertools
import time

from conftest import (
    frames_of,
    make_config,
    publish_argv,
    publishing,
    read_argv,
    running_gateway,
    wait_for,
)

from gateway.config import CameraConfig


async def test_pushed_camera_is_decoded_frame_by_frame_over_tcp(gateway, procs):
    await procs(publish_argv(gateway.url("cam1")))
    await publishing(gateway, "cam1")
    viewer = await procs(read_argv(gateway.url("cam1"), seconds=3))
    assert await viewer.wait() == 0, viewer.text
    # 3 s at 25 fps, started at a keyframe from the GOP cache: every frame decodes.
    assert frames_of(viewer.text) >= 70, viewer.text
    assert "error" not in viewer.text.lower(), viewer.text


async def test_reader_over_udp_decodes(gateway, procs):
    await procs(publish_argv(gateway.url("cam1")))
    await publishing(gateway, "cam1")
    viewer = await procs(read_argv(gateway.url("cam1"), transport="udp", seconds=3))
    assert await viewer.wait() == 0, viewer.text
    assert frames_of(viewer.text) >= 70, viewer.text


async def test_publisher_over_udp_is_relayed(gateway, procs):
    await procs(publish_argv(gateway.url("cam1"), transport="udp"))
    await publishing(gateway, "cam1")
    viewer = await procs(read_argv(gateway.url("cam1"), seconds=3))
    assert await viewer.wait() == 0, viewer.text
    assert frames_of(viewer.text) >= 70, viewer.text


async def test_pull_camera_is_ingested_from_another_gateway(procs):
    # The "camera" is a second gateway with a pushed test pattern, as an IP camera would serve.
    async with running_gateway(make_config()) as camera:
        await procs(publish_argv(camera.url("cam1")))
        await publishing(camera, "cam1")
        pulled = (CameraConfig(id="street", name="Street", source=camera.url("cam1")),)
        async with running_gateway(make_config(pulled)) as gw:
            await publishing(gw, "street")
            viewer = await procs(read_argv(gw.url("street"), seconds=3))
            assert await viewer.wait() == 0, viewer.text
            assert frames_of(viewer.text) >= 70, viewer.text
            # The camera served one reader (the gateway), however many watch the gateway.
            assert len(camera.hub.get("cam1").readers) == 1


async def test_pull_over_udp(procs):
    async with running_gateway(make_config()) as camera:
        await procs(publish_argv(camera.url("cam1")))
        await publishing(camera, "cam1")
        pulled = (CameraConfig(id="street", source=camera.url("cam1"), transport="udp"),)
        async with running_gateway(make_config(pulled)) as gw:
            await publishing(gw, "street")
            viewer = await procs(read_argv(gw.url("street"), seconds=2))
            assert await viewer.wait() == 0, viewer.text
            assert frames_of(viewer.text) >= 45, viewer.text


async def test_fifty_concurrent_readers_all_receive_the_stream(gateway, procs):
    await procs(publish_argv(gateway.url("cam1")))
    await publishing(gateway, "cam1")
    viewers = [
        await procs(read_argv(gateway.url("cam1"), seconds=4, decode=False)) for _ in range(50)
    ]
    await wait_for(
        lambda: len(gateway.hub.get("cam1").readers) == 50, 30, what="50 readers playing"
    )
    codes = await asyncio.gather(*(v.wait(60) for v in viewers))
    assert codes == [0] * 50
    counts = [frames_of(v.text) for v in viewers]
    assert min(counts) >= 90, counts
    assert gateway.hub.get("cam1").counters.packets_dropped == 0


async def test_camera_restart_resumes_every_attached_reader(gateway, procs):
    publisher = await procs(publish_argv(gateway.url("cam1")))
    await publishing(gateway, "cam1")
    stream = gateway.hub.get("cam1")
    viewers = [await procs(read_argv(gateway.url("cam1"), seconds=9)) for _ in range(3)]
    await wait_for(lambda: len(stream.readers) == 3, 15, what="3 readers")
    readers = set(stream.readers)
    await wait_for(lambda: all(r.packets_sent > 20 for r in readers), 10, what="frames flowing")
    publisher.kill()
    await publisher.wait()
    await wait_for(lambda: not stream.has_source, 5, what="source to drop")
    sent_at_drop = {r: r.packets_sent for r in readers}
    await procs(publish_argv(gateway.url("cam1")))
    await wait_for(lambda: stream.has_source, 15, what="camera back")
    # The same reader sessions carry on: more packets after the restart, nobody reconnected.
    await wait_for(
        lambda: all(r.packets_sent > sent_at_drop[r] + 50 for r in readers),
        15,
        what="readers to resume",
    )
    assert set(stream.readers) == readers
    assert stream.counters.source_restarts == 1
    for v in viewers:
        assert await v.wait(30) == 0, v.text


async def test_gop_cache_starts_a_new_reader_at_a_keyframe_at_once(gateway, procs):
    from gateway.protocols.h264 import is_keyframe_packet
    from gateway.protocols.rtp import rtp_header
    from gateway.sources.rtsp_client import RtspClient
    from gateway.stream.tracks import tracks_from_sdp

    # A 4 s GOP: without the cache a new reader would wait up to 4 s for a keyframe.
    await procs(publish_argv(gateway.url("cam1"), gop=100))
    await publishing(gateway, "cam1")
    first_key = asyncio.get_running_loop().create_future()

    def on_packet(channel: int, payload: bytes) -> None:
        offset = rtp_header(payload)[5]
        if channel == 0 and not first_key.done() and is_keyframe_packet(payload[offset:]):
            first_key.set_result(time.monotonic())

    client = RtspClient(gateway.url("cam1"), on_packet=on_packet)
    await client.connect()
    described = await client.describe()
    tracks, _ = tracks_from_sdp(described.sdp)
    await client.setup(described.base_url, tracks[0].control, 0)
    t0 = time.monotonic()
    await client.play()
    t_key = await asyncio.wait_for(first_key, 5)
    await client.close()
    assert t_key - t0 < 0.1


async def test_stalled_reader_is_dropped_and_others_keep_their_timing(procs):
    config = make_config(reader_queue_bytes=64 * 1024, write_timeout=1.0)
    async with running_gateway(config) as gw:
        await procs(publish_argv(gw.url("cam1"), bitrate="1500k"))
        await publishing(gw, "cam1")
        stream = gw.hub.get("cam1")

        # A reader that plays and then never reads, with a tiny receive window.
        import socket

        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", gw.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        url = gw.url("cam1")
        writer.write(
            f"SETUP {url}/trackID=0 RTSP/1.0\r\nCSeq: 1\r\n"
            "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        session = next(ln for ln in head.decode().split("\r\n") if ln.startswith("Session:"))
        sid = session.split(":", 1)[1].split(";")[0].strip()
        writer.write(f"PLAY {url} RTSP/1.0\r\nCSeq: 2\r\nSession: {sid}\r\n\r\n".encode())

        # A healthy reader alongside, timing every packet it gets.
        from gateway.sources.rtsp_client import RtspClient

        arrivals: list[float] = []
        good = RtspClient(url, on_packet=lambda ch, p: arrivals.append(time.monotonic()))
        await good.connect()
        d = await good.describe()
        await good.setup(d.base_url, "trackID=0", 0)
        await good.play()

        await wait_for(
            lambda: stream.counters.readers_dropped == 1,
            20,
            what="the stalled reader to be disconnected",
        )
        assert stream.counters.packets_dropped > 0
        await wait_for(lambda: len(arrivals) > 200, 10, what="the good reader's packets")
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        # 25 fps: a frame every 40 ms. The stalled reader never delayed the good one.
        assert max(gaps) < 0.25, max(gaps)
        good_reader = next(iter(stream.readers))
        assert good_reader.packets_dropped == 0
        await good.close()
        writer.close()


def _digest_guard(user: str, password: str):
    """An authorizer that demands Digest credentials, as an IP camera does."""
    from gateway.protocols.rtsp_auth import DigestChallenger, DigestCredentials, parse_authorization
    from gateway.rtsp.server import RtspReply

    challenger = DigestChallenger()
    seen: list[str] = []

    async def authorize(check):
        if check.action != "read":
            return None  # the test's encoder publishes without credentials
        now = time.time()
        value = check.request.headers.get("Authorization")
        if value is not None:
            creds = parse_authorization(value)
            seen.append(type(creds).__name__)
            if (
                isinstance(creds, DigestCredentials)
                and creds.username == user
                and challenger.verify_digest(creds, check.request.method, password, now)
            ):
                return None
        return RtspReply(
            401,
            "credentials needed",
            challenger.www_authenticate_headers("camera", now, basic=False),
        )

    return authorize, seen


async def test_pull_camera_with_digest_credentials(procs):
    from gateway.core import Gateway

    authorize, seen = _digest_guard("viewer", "s3cret")
    camera_gw = Gateway(make_config(), authorizer=authorize)
    await camera_gw.start()
    try:
        camera_url = f"rtsp://127.0.0.1:{camera_gw.rtsp.port}/cam1"
        await procs(publish_argv(camera_url))
        await wait_for(
            lambda: (s := camera_gw.hub.get("cam1")) is not None and s.has_source,
            15,
            what="camera publishing",
        )
        wrong = (CameraConfig(id="bad", source=camera_url, username="viewer", password="nope"),)
        right = (
            CameraConfig(id="street", source=camera_url, username="viewer", password="s3cret"),
        )
        async with running_gateway(make_config(wrong + right)) as gw:
            await publishing(gw, "street")
            assert "DigestCredentials" in seen
            await wait_for(
                lambda: gw.gateway.ingests["bad"].failures >= 1,
                10,
                what="the wrong password to be refused",
            )
            assert not gw.hub.path("bad").has_source
            assert "401" in (gw.gateway.ingests["bad"].last_error or "")
            viewer = await procs(read_argv(gw.url("street"), seconds=2))
            assert await viewer.wait() == 0, viewer.text
            assert frames_of(viewer.text) >= 45
    finally:
        await camera_gw.stop()


async def test_http_reports_health_metrics_and_per_session_counters(gateway, procs):
    from aiohttp.test_utils import TestClient, TestServer

    from gateway.http.app import make_http_app

    await procs(publish_argv(gateway.url("cam1")))
    await publishing(gateway, "cam1")
    viewer = await procs(read_argv(gateway.url("cam1"), seconds=6, decode=False))
    stream = gateway.hub.get("cam1")
    await wait_for(
        lambda: stream.readers and next(iter(stream.readers)).packets_sent > 10,
        10,
        what="a reader receiving",
    )
    app = make_http_app(gateway.gateway)
    app.cleanup_ctx.clear()  # the fixture already runs this gateway
    async with TestClient(TestServer(app)) as client:
        health = await (await client.get("/healthz")).json()
        assert health == {"status": "ok"}
        sessions = (await (await client.get("/v1/sessions")).json())["items"]
        playing = [s for s in sessions if s["state"] == "playing"]
        assert len(playing) == 1 and playing[0]["camera"] == "cam1"
        assert playing[0]["bytes_sent"] > 0 and playing[0]["packets_dropped"] == 0
        text = await (await client.get("/metrics")).text()
        assert 'feedgate_readers{path="cam1"} 1.0' in text
        assert 'feedgate_source_up{path="cam1"} 1.0' in text
    viewer.kill()


async def test_a_cameras_sub_stream_is_served_as_its_own_path(procs):
    # The "camera" serves a main and a lower-resolution sub stream, as IP cameras do.
    async with running_gateway(
        make_config((CameraConfig(id="main"), CameraConfig(id="low")))
    ) as camera:
        await procs(publish_argv(camera.url("main"), size="640x360"))
        await procs(publish_argv(camera.url("low"), size="320x180"))
        await publishing(camera, "main")
        await publishing(camera, "low")
        cams = (CameraConfig(id="gate", source=camera.url("main"), sub_source=camera.url("low")),)
        async with running_gateway(make_config(cams)) as gw:
            await publishing(gw, "gate")
            await publishing(gw, "gate/sub")
            main = await procs(read_argv(gw.url("gate"), seconds=1))
            sub = await procs(read_argv(gw.url("gate/sub"), seconds=1))
            assert await main.wait() == 0 and await sub.wait() == 0, sub.text
            assert frames_of(main.text) > 0 and frames_of(sub.text) > 0

            def resolution(path: str) -> tuple[int, int]:
                import base64
                import re

                from gateway.protocols.h264 import parse_sps_resolution

                fmtp = next(x for x in gw.hub.get(path).tracks[0].sdp_lines if "fmtp" in x)
                sprop = re.search(r"sprop-parameter-sets=([^;,\s]+)", fmtp)
                assert sprop is not None
                return parse_sps_resolution(base64.b64decode(sprop.group(1)))

            assert resolution("gate") == (640, 360)
            assert resolution("gate/sub") == (320, 180)


async def test_a_two_track_publisher_with_a_token_in_its_url_sets_up_both_tracks(gateway, procs):
    """ffmpeg builds each SETUP URL as the ANNOUNCE URL plus '/streamid=N', after its query:
    rtsp://gw/cam1?token=T/streamid=1. The track's control is read from there (and the token
    stays T). Before, the second SETUP got 404 ("no track ''") and ffmpeg gave up."""
    from test_timeline import _publish_av

    publisher = await procs(_publish_av(gateway.url("cam1") + "?token=partner-token"))
    await publishing(gateway, "cam1")
    stream = gateway.hub.get("cam1")
    assert [t.codec for t in stream.tracks] == ["H264", "MPEG4-GENERIC"], stream.tracks
    await wait_for(lambda: stream.counters.packets_in > 100, 10, what="both tracks' media")
    assert publisher.proc.returncode is None, publisher.text
