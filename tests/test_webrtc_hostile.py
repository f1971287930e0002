"""Hostile WHEP input: every bad request gets a 4xx and nothing else stops. A viewer plays
throughout each test and must still be receiving at its end."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
from pathlib import Path

import aiohttp
import pytest
from whep_client import wait_until
from whep_fixtures import playing

OFFER = (Path(__file__).parent / "data" / "chromium-offer.sdp").read_text()


def offer_without_candidates() -> str:
    """Chromium's offer with its candidates taken out: nobody will ever answer our checks."""
    return "".join(line for line in OFFER.splitlines(True) if "candidate" not in line)


async def post(whep, body: bytes | str, token: str | None, *, http=None, **headers):
    hdrs = {"Content-Type": "application/sdp", **headers}
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    data = body.encode() if isinstance(body, str) else body
    async with (http or whep.http).post(f"{whep.base}/whep/street", data=data, headers=hdrs) as r:
        return r.status, await r.text(), r.headers


async def patch(whep, location: str, body: str, token: str | None, **headers):
    hdrs = {"Content-Type": "application/trickle-ice-sdpfrag", **headers}
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    async with whep.http.patch(whep.base + location, data=body.encode(), headers=hdrs) as r:
        return r.status, await r.text()


@pytest.fixture
async def watched(whep):
    """A police viewer that plays for the whole test; returns (viewer, its token)."""
    token = whep.token("police", "officer")
    viewer = whep.client(token=token)
    assert await viewer.connect(whep.http) == 201
    await playing(viewer, frames=5)
    yield viewer, token
    await viewer.close()


async def still_playing(viewer, whep) -> None:
    before = viewer.received.frames
    await wait_until(lambda: viewer.received.frames > before + 10, 5, "the viewer to go on")
    assert viewer.connection_state == "connected"


def _media(kind: str, mid: int) -> str:
    return (
        f"m={kind} 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:{mid}\r\n"
        "a=recvonly\r\na=rtpmap:111 opus/48000/2\r\n"
    )


SESSION = (
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "a=ice-ufrag:abcd\r\na=ice-pwd:aaaaaaaaaaaaaaaaaaaaaaaa\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n"
)
NO_PWD = SESSION.replace("a=ice-pwd:aaaaaaaaaaaaaaaaaaaaaaaa\r\n", "")


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"v=0\r\n" + b"a=x:" + b"y" * (64 * 1024), 413, "larger than 65536"),
        (SESSION + _media("audio", 0), 422, "no video section"),
        (SESSION + "".join(_media("video", i) for i in range(100)), 400, "100 media sections"),
        (b"\x00\xff garbage \x89PNG", 400, "not UTF-8"),
        ("hello, this is not SDP", 400, "not an SDP line"),
        ("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF x y z\r\n", 400, "malformed SDP"),
        (NO_PWD + _media("video", 0), 400, "ICE"),
        (OFFER.replace("H264", "H263"), 422, "accepts no H.264"),
        (OFFER.replace("a=recvonly", "a=sendonly", 1), 422, "no video section that receives"),
    ],
    ids=["oversized", "no-video", "100-m-lines", "binary", "prose", "bad-m-line", "no-pwd",
         "no-h264", "sendonly"],
)  # fmt: skip
async def test_bad_offers_get_4xx_and_the_viewer_carries_on(whep, watched, body, status, says):
    viewer, token = watched
    got, text, _ = await post(whep, body, token)
    assert got == status, text
    assert says in text
    assert len(whep.webrtc.sessions) == 1  # nothing was admitted
    await still_playing(viewer, whep)


async def test_a_wrong_content_type_is_415(whep, watched):
    viewer, token = watched
    got, _, _ = await post(whep, OFFER, token, **{"Content-Type": "text/plain"})
    assert got == 415
    await still_playing(viewer, whep)


async def test_bad_ice_fragments_get_4xx_and_the_session_carries_on(whep, watched):
    viewer, token = watched
    where = viewer.location
    cand = "a=candidate:1 1 udp 2122260223 192.0.2.1 61764 typ host"
    cases = [
        ("garbage \x01\x02", 400),
        ("a=candidate:1 1 udp 2122260223 192.0.2.1 999999 typ host\r\n", 400),
        ("a=candidate:1 1 udp 2122260223 not-an-ip 61764 typ host\r\n", 400),
        ("a=candidate:1 1 udp\r\n", 400),
        ("a=candidate:1 1 udp 2122260223 192.0.2.1 61764 typ wormhole\r\n", 400),
        ("v=0\r\n" + cand + "\r\n", 400),
        ("\r\n".join([cand] * 40) + "\r\n", 400),
        ("a=ice-ufrag:zzzz\r\na=ice-pwd:" + "z" * 24 + "\r\n" + cand + "\r\n", 422),
        ("x" * (17 * 1024), 413),
    ]
    for body, status in cases:
        got, text = await patch(whep, where, body, token)
        assert got == status, (body[:60], got, text)
    got, _ = await patch(whep, where, cand + "\r\n", token, **{"If-Match": '"stale"'})
    assert got == 412
    got, _ = await patch(whep, where, cand + "\r\n", token, **{"Content-Type": "text/plain"})
    assert got == 415
    # A good late fragment changes nothing on a connected session.
    got, _ = await patch(whep, where, cand + "\r\na=end-of-candidates\r\n", token)
    assert got == 204
    await still_playing(viewer, whep)


async def test_another_tenants_patch_or_delete_is_404_and_the_session_carries_on(whep, watched):
    viewer, police = watched
    shop = whep.token("shop", "guard")
    where = viewer.location
    got, _ = await patch(whep, where, "a=end-of-candidates\r\n", shop)
    assert got == 404
    async with whep.http.delete(
        whep.base + where, headers={"Authorization": f"Bearer {shop}"}
    ) as r:
        assert r.status == 404
    # Without credentials: who are you, before whether it exists.
    async with whep.http.delete(whep.base + where) as r:
        assert r.status == 401
    async with whep.http.delete(whep.base + "/whep/sessions/nope", headers={
        "Authorization": f"Bearer {police}"}) as r:  # fmt: skip
        assert r.status == 404
    await still_playing(viewer, whep)
    assert len(whep.webrtc.sessions) == 1


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 1e6


async def test_a_thousand_offers_that_never_connect_are_bounded_and_time_out(whep, watched):
    viewer, token = watched
    server = whep.webrtc
    offer = offer_without_candidates()
    fds, rss = _fds(), _rss_mb()
    statuses: dict[int, int] = {}
    peak_sessions = 0

    async def one(http: aiohttp.ClientSession) -> None:
        nonlocal peak_sessions
        status, _, _ = await post(whep, offer, token, http=http)
        statuses[status] = statuses.get(status, 0) + 1
        peak_sessions = max(peak_sessions, len(server.sessions))

    started = time.monotonic()
    # Its own HTTP connections, closed after: the file descriptors left are the gateway's.
    async with aiohttp.ClientSession() as http:
        for _ in range(20):
            await asyncio.gather(*(one(http) for _ in range(50)))
    assert sum(statuses.values()) == 1000
    limit = server.limits.max_pending_per_tenant
    # At most a tenant's allowance is ever connecting; the rest are told to come back.
    assert peak_sessions <= limit + 1
    assert set(statuses) <= {201, 429}, statuses
    assert statuses[201] >= limit
    print("flood:", statuses, "peak", peak_sessions, "rss +%.1f MB" % (_rss_mb() - rss))
    assert _rss_mb() - rss < 64
    await still_playing(viewer, whep)
    # Each one ends at its deadline, with its sockets closed.
    timeout = server.limits.handshake_timeout
    await wait_until(
        lambda: len(server.sessions) == 1 and not server._closing,
        timeout + 10,
        "the unconnected sessions to time out",
    )
    assert time.monotonic() - started >= timeout
    assert server.pending == 0
    await wait_until(lambda: _fds() <= fds + 2, 5, "their sockets to be closed")
    await still_playing(viewer, whep)


async def test_an_ice_failure_is_one_clear_log_line_and_the_session_ends(whep, watched, caplog):
    viewer, token = watched
    caplog.set_level(logging.INFO, logger="gateway.webrtc")
    status, _, headers = await post(whep, offer_without_candidates(), token)
    assert status == 201
    sid = headers["Location"].rsplit("/", 1)[1]
    session = whep.webrtc.sessions[sid]
    timeout = whep.webrtc.limits.handshake_timeout
    await wait_until(lambda: sid not in whep.webrtc.sessions, timeout + 5, "the timeout")
    lines = [r.getMessage() for r in caplog.records if sid[:8] in r.getMessage()]
    assert len(lines) == 1, lines
    assert "handshake timed out after" in lines[0]
    assert f"ICE did not complete within {timeout:g}s" in lines[0]
    assert "police on street" in lines[0] and "0 remote candidates" in lines[0]
    # Nothing is left of it: its port is closed, and the viewer that connected plays on.
    await wait_until(
        lambda: session.ice.state == "closed" and not whep.webrtc._closing, 5, "it to close"
    )
    await still_playing(viewer, whep)
