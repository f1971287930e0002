"""How RTSP clients may present a password (issue #10 finding 11): Basic only inside TLS
unless the deployment says otherwise, Digest with ``qop=auth`` and a counted ``nc``, nonces
bound to their connection and good for a minute, so a captured Digest header cannot be replayed
(the trial replayed one four times over 20 s). Real peers: ffmpeg (which answers qop) publishes
and plays, GStreamer's rtspsrc (which answers RFC 2069 style) plays."""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import (
    RunningGateway,
    make_config,
    publish_argv,
    publishing,
    running_gateway,
)
from rtsp_probe import Probe
from test_rtspsrc import RTSPSRC_RACE
from test_tls import pki  # noqa: F401  (the council's test CA and the gateway's certificate)

from gateway.config import CameraConfig, TenancyConfig
from gateway.protocols.rtsp import Headers, Request
from gateway.protocols.rtsp_auth import authorization_header, parse_www_authenticate
from gateway.rtsp.access import PolicyAccess
from gateway.rtsp.server import AccessCheck, RtspReply
from tenants.audit import AuditAction
from tenants.policy import DIGEST_REALM

SEED = """
[[tenants]]
id = "council"
name = "Council"
kind = "council"
[[tenants]]
id = "police"
name = "Police"
kind = "police"
[[principals]]
id = "encoder"
tenant = "council"
name = "Encoder"
kind = "service"
roles = ["operator"]
digest_password = "enc-pass"
[[principals]]
id = "vms"
tenant = "police"
name = "Police VMS"
kind = "service"
roles = ["viewer"]
digest_password = "vms-pass"
[[cameras]]
id = "street"
owner = "council"
[[grants]]
id = "police-street"
owner = "council"
grantee = "police"
cameras = ["street"]
rights = ["live"]
"""

BASIC_VMS = "Basic " + base64.b64encode(b"vms:vms-pass").decode()


@pytest.fixture
async def gw(tmp_path: Path, pki: Path, procs) -> AsyncIterator[RunningGateway]:  # noqa: F811
    (tmp_path / "seed.toml").write_text(SEED)
    config = make_config((CameraConfig(id="street"),))
    config = replace(
        config,
        data_dir=str(tmp_path / "var"),
        rtsp=replace(
            config.rtsp,
            tls_port=0,
            tls_cert=str(pki / "server.pem"),
            tls_key=str(pki / "server.key"),
        ),
        tenancy=TenancyConfig(enabled=True, seed=str(tmp_path / "seed.toml")),
    )
    async with running_gateway(config) as gw:
        # ffmpeg answers the qop=auth challenge, counting nc, as the camera encoder.
        await procs(publish_argv(f"rtsp://encoder:enc-pass@127.0.0.1:{gw.port}/street"))
        await publishing(gw, "street")
        yield gw


def _access(gw: RunningGateway) -> PolicyAccess:
    access = gw.gateway.access
    assert access is not None
    return access


def _unauthenticated_refusals(gw: RunningGateway) -> list[str]:
    tenancy = gw.gateway.tenancy
    assert tenancy is not None
    return [
        e.detail.get("reason", "")
        for e in tenancy.audit.entries()
        if e.action == AuditAction.DENIED and e.outcome == "unauthenticated"
    ]


async def _describe(probe: Probe, auth: str | None = None) -> tuple[int, list[str]]:
    url = f"rtsp://{probe.host}:{probe.port}/street"
    headers = (("Authorization", auth),) if auth else ()
    r = await probe.request("DESCRIBE", url, headers)
    return r.status, r.headers.get_all("WWW-Authenticate")


async def _digest_answer(probe: Probe, *, qop: bool = True) -> str:
    """Answer this connection's challenge as ffmpeg does (qop) or as live555 and GStreamer do
    (RFC 2069: qop ignored)."""
    status, offered = await _describe(probe)
    assert status == 401
    challenges = parse_www_authenticate(offered)
    if not qop:
        for c in challenges:
            c.params.pop("qop", None)
    url = f"rtsp://{probe.host}:{probe.port}/street"
    return authorization_header(challenges, "DESCRIBE", url, "vms", "vms-pass")


async def test_plain_rtsp_offers_digest_with_qop_and_refuses_basic_unread(gw):
    probe = await Probe.connect("127.0.0.1", gw.port)
    try:
        status, offered = await _describe(probe)
        assert status == 401
        assert [c.scheme for c in parse_www_authenticate(offered)] == ["digest"]
        assert 'qop="auth"' in offered[0]
        # The right password, in the clear: refused without being checked, and audited.
        assert (await _describe(probe, BASIC_VMS))[0] == 401
    finally:
        await probe.close()
    assert any("takes no Basic" in r for r in _unauthenticated_refusals(gw))


async def test_basic_is_accepted_on_plain_rtsp_only_when_configured(gw):
    _access(gw).basic_over_plain = True
    probe = await Probe.connect("127.0.0.1", gw.port)
    try:
        _, offered = await _describe(probe)
        assert [c.scheme for c in parse_www_authenticate(offered)] == ["digest", "basic"]
        assert (await _describe(probe, BASIC_VMS))[0] == 200
    finally:
        await probe.close()


async def test_basic_is_always_accepted_inside_rtsps(gw, pki: Path):  # noqa: F811
    tls_port = gw.gateway.rtsp.tls_port
    trust = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    reader, writer = await asyncio.open_connection("localhost", tls_port, ssl=trust)
    url = f"rtsps://localhost:{tls_port}/street"

    async def describe(cseq: int, auth: str = "") -> tuple[int, str]:
        extra = f"Authorization: {auth}\r\n" if auth else ""
        writer.write(f"DESCRIBE {url} RTSP/1.0\r\nCSeq: {cseq}\r\n{extra}\r\n".encode())
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
        length = re.search(r"(?im)^content-length:\s*(\d+)", head)
        if length:
            await reader.readexactly(int(length.group(1)))
        return int(head.split()[1]), head

    try:
        status, head = await describe(1)
        assert status == 401 and 'WWW-Authenticate: Basic realm="feedgate"' in head
        assert (await describe(2, BASIC_VMS))[0] == 200
    finally:
        writer.close()


async def test_a_replayed_digest_answer_is_refused(gw):
    """The trial's replay: one Digest header, sent again. With qop its nc must rise; on
    another connection its nonce is foreign, qop or not."""
    for qop in (True, False):
        first = await Probe.connect("127.0.0.1", gw.port)
        other = await Probe.connect("127.0.0.1", gw.port)
        try:
            answer = await _digest_answer(first, qop=qop)
            assert (await _describe(first, answer))[0] == 200
            if qop:
                assert (await _describe(first, answer))[0] == 401  # the same nc again
            assert (await _describe(other, answer))[0] == 401  # another connection
        finally:
            await first.close()
            await other.close()
    refusals = _unauthenticated_refusals(gw)
    assert sum("replayed" in r for r in refusals) == 3, refusals


async def test_a_stale_nonce_is_challenged_again_quietly(gw):
    """A nonce of ours for this connection that is over a minute old: 401 with stale=TRUE,
    so the client answers the new nonce without asking its user; not an audited refusal and
    not a password guess."""
    access = _access(gw)
    old = access.challenger.make_nonce(time.time() - 61, bind="conn-1")
    answer = authorization_header(
        parse_www_authenticate([f'Digest realm="{DIGEST_REALM}", nonce="{old}"']),
        "DESCRIBE",
        "rtsp://h/street",
        "vms",
        "vms-pass",
    )
    headers = Headers([("CSeq", "1"), ("Authorization", answer)])
    request = Request("DESCRIBE", "rtsp://h/street", "RTSP/1.0", headers)
    before = len(_unauthenticated_refusals(gw))
    check = AccessCheck("read", "street", request, "10.0.0.9", {}, connection="conn-1")
    reply = await access.check(check)
    assert isinstance(reply, RtspReply) and reply.status == 401
    assert any("stale=TRUE" in v for _, v in reply.headers)
    assert len(_unauthenticated_refusals(gw)) == before
    # The same answer on another connection is no stale nonce but a foreign one: audited.
    reply = await access.check(replace(check, connection="conn-2"))
    assert isinstance(reply, RtspReply) and reply.status == 401
    assert not any("stale=TRUE" in v for _, v in reply.headers)
    assert len(_unauthenticated_refusals(gw)) == before + 1


@pytest.mark.skipif(shutil.which("gst-launch-1.0") is None, reason="needs GStreamer")
async def test_gstreamer_rtspsrc_plays_with_digest_credentials(gw, procs):
    viewer = await procs(
        [
            "gst-launch-1.0",
            "rtspsrc",
            f"location=rtsp://127.0.0.1:{gw.port}/street",
            "user-id=vms",
            "user-pw=vms-pass",
            "protocols=tcp",
            "!",
            "fakesink",
            "num-buffers=50",
        ]
    )
    rc = await viewer.wait(60)
    # Its 50 buffers came: Digest worked and it played to the end of what it asked for.
    assert "Got EOS from element" in viewer.text, viewer.text[-3000:]
    if rc != 0:
        # After that end, only rtspsrc's own teardown race may fail it (issue #9 finding 3,
        # tests/test_rtspsrc.py; seen here once in a fresh-clone run on a quiet machine).
        errors = [line for line in viewer.text.splitlines() if line.startswith("ERROR")]
        assert RTSPSRC_RACE in viewer.text and "gst_rtspsrc_pause" in viewer.text, viewer.text
        assert errors and all("Could not write to resource" in e for e in errors), errors
