"""A camera pulled over rtsps:// is pulled over TLS, its certificate verified (the system's CAs
or the camera's tls_ca, against its host name or tls_server_name), and never in plaintext.

The camera is feedgate's own RTSPS listener (a real TLS RTSP server, fed by ffmpeg), with a
certificate from a test CA naming only cam.council.example, reached at 127.0.0.1: the setting of
a council camera addressed by IP."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import (
    RunningGateway,
    make_config,
    publish_argv,
    publishing,
    running_gateway,
    wait_for,
)
from test_tls import _issue

from gateway.config import CameraConfig, ConfigError, load_config
from gateway.http.metrics import health_detail
from gateway.sources.rtsp_client import RtspClient

NAME = "cam.council.example"


@pytest.fixture(scope="module")
def camera_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca.pem (the council's CA) and camera.pem/.key, which it signed for NAME only."""
    d = tmp_path_factory.mktemp("camera-pki")
    ca = _issue(d, "ca", ca=True)
    _issue(d, "camera", issuer=ca, server=True, names=(NAME,))
    return d


@asynccontextmanager
async def tls_camera(pki: Path, procs) -> AsyncIterator[RunningGateway]:
    """An RTSPS camera: a gateway serving cam1 on its TLS port, ffmpeg publishing into it."""
    config = make_config((CameraConfig(id="cam1"),))
    rtsp = replace(
        config.rtsp, tls_port=0, tls_cert=str(pki / "camera.pem"), tls_key=str(pki / "camera.key")
    )
    async with running_gateway(replace(config, rtsp=rtsp)) as cam:
        await procs(publish_argv(cam.url("cam1")))
        await publishing(cam, "cam1")
        yield cam


@asynccontextmanager
async def puller(source: str, **tls: object) -> AsyncIterator[RunningGateway]:
    """A gateway pulling cam1 from ``source`` with the camera TLS options ``tls``."""
    cam = CameraConfig(id="cam1", source=source, **tls)  # type: ignore[arg-type]
    async with running_gateway(make_config((cam,))) as gw:
        yield gw


def rtsps_url(cam: RunningGateway) -> str:
    return f"rtsps://127.0.0.1:{cam.gateway.rtsp.tls_port}/cam1"


async def refused(gw: RunningGateway) -> str:
    """The reason /healthz/detail gives for cam1's pull being down, after its first failure."""
    ingest = gw.gateway.ingests["cam1"]
    await wait_for(lambda: ingest.failures >= 1, 30, what="the pull to fail")
    detail = health_detail(gw.gateway)["paths"]["cam1"]  # type: ignore[index]
    assert not detail["source_up"] and not gw.hub.path("cam1").has_source
    assert gw.hub.path("cam1").counters.packets_in == 0  # not a packet in plaintext
    return str(detail["source_error"])


async def test_rtsps_camera_with_its_ca_and_name_plays_over_verified_tls(
    camera_pki: Path, procs
) -> None:
    async with tls_camera(camera_pki, procs) as cam:
        ca = str(camera_pki / "ca.pem")
        async with puller(rtsps_url(cam), tls_ca=ca, tls_server_name=NAME) as gw:
            await publishing(gw, "cam1", timeout=30)
            detail = health_detail(gw.gateway)["paths"]["cam1"]  # type: ignore[index]
            assert detail["source_tls"] == "verified" and detail["source_error"] is None
        # The right CA but the wrong name (the certificate does not name 127.0.0.1): refused.
        async with puller(rtsps_url(cam), tls_ca=ca) as gw:
            reason = await refused(gw)
            assert "TLS handshake" in reason and "IP address mismatch" in reason, reason


async def test_rtsps_camera_unknown_to_the_system_cas_is_refused_with_the_reason(
    camera_pki: Path, procs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with tls_camera(camera_pki, procs) as cam, puller(rtsps_url(cam)) as gw:
        reason = await refused(gw)
        assert "TLS handshake with 127.0.0.1" in reason, reason
        assert "certificate verify failed: unable to get local issuer certificate" in reason
        assert "certificate verify failed" in caplog.text  # and in the log


async def test_tls_verify_false_plays_encrypted_and_warns_once(
    camera_pki: Path, procs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with tls_camera(camera_pki, procs) as cam:
        async with puller(rtsps_url(cam), tls_verify=False) as gw:
            await publishing(gw, "cam1", timeout=30)
            detail = health_detail(gw.gateway)["paths"]["cam1"]  # type: ignore[index]
            assert detail["source_tls"] == "unverified"
            assert gw.gateway.ingests["cam1"].ssl_context is not None
        warnings = [r for r in caplog.records if "tls_verify = false" in r.getMessage()]
        assert len(warnings) == 1 and "camera cam1" in warnings[0].getMessage()


async def test_plaintext_server_at_an_rtsps_url_fails_the_handshake(
    camera_pki: Path, procs
) -> None:
    async with tls_camera(camera_pki, procs) as cam:
        plain = f"rtsps://127.0.0.1:{cam.port}/cam1"  # the camera's plain RTSP port
        async with puller(plain, tls_verify=False) as gw:  # even when not verifying
            reason = await refused(gw)
            assert "TLS" in reason, reason


def test_rtsps_without_a_port_means_322_and_always_tls() -> None:
    client = RtspClient("rtsps://camera.example/stream", on_packet=lambda c, p: None)
    assert client.port == 322 and client.ssl_context is not None
    assert client.ssl_context.check_hostname  # the system's CAs and the host name
    plain = RtspClient("rtsp://camera.example/stream", on_packet=lambda c, p: None)
    assert plain.port == 554 and plain.ssl_context is None


def test_camera_tls_options_are_checked_at_load(tmp_path: Path, camera_pki: Path) -> None:
    (tmp_path / "ca.pem").write_bytes((camera_pki / "ca.pem").read_bytes())
    cam = '[[cameras]]\nid = "cam1"\nsource = "rtsps://10.0.0.7/live"\n'
    cases = [
        ('tls_ca = "gone.pem"\n', "cameras[0].tls_ca", f"{tmp_path / 'gone.pem'}: no such file"),
        (f'tls_ca = "{camera_pki}/camera.key"\n', "cameras[0].tls_ca", "not a PEM CA bundle"),
        ('tls_ca = "ca.pem"\ntls_verify = false\n', "cameras[0].tls_verify", "ignore tls_ca"),
        ('tls_server_name = "a b"\n', "cameras[0].tls_server_name", "not a host name"),
    ]
    plain = '[[cameras]]\nid = "cam1"\nsource = "rtsp://10.0.0.7/live"\n'
    cases = [(cam + body, key, reason) for body, key, reason in cases]
    cases.append((plain + "tls_verify = false\n", "cameras[0].tls_verify", "only to an rtsps"))
    for body, key, reason in cases:
        path = tmp_path / "feedgate.toml"
        path.write_text(body)
        with pytest.raises(ConfigError) as info:
            load_config(path, env={})
        assert f"{path}: {key}:" in str(info.value) and reason in str(info.value), str(info.value)
    # A relative tls_ca is next to the config file, and loads.
    path.write_text(cam + f'tls_ca = "ca.pem"\ntls_server_name = "{NAME}"\n')
    loaded = load_config(path, env={}).cameras[0]
    assert loaded.tls_ca == str(tmp_path / "ca.pem") and loaded.tls_server_name == NAME
