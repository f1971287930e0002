"""TLS on RTSP (RTSPS), the HTTP server and the gRPC control API, with certificates from a
test CA, reached by real TLS clients (ffmpeg, httpx, the `feedgate` CLI over grpc) and refused
to clients that do not speak TLS or cannot show a certificate from the right CA."""

from __future__ import annotations

import asyncio
import re
import ssl
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

import httpx
import pytest
from conftest import (
    frames_of,
    free_port,
    free_udp_pair,
    make_config,
    publish_argv,
    publishing,
    read_argv,
    running_gateway,
    wait_for,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from test_billing_crash import SEED
from test_grpc import _cli_env, cli

from gateway.config import CameraConfig, ConfigError, load_config
from tenants.tokens import SigningKey, TokenIssuer

NOW = datetime.now(UTC)


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
    names: tuple[str, ...] = (),  # DNS names only, instead of localhost and 127.0.0.1
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(minutes=5))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in names]
                or [x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _issue(
    directory: Path, name: str, **kw: object
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = kw.pop("issuer", None)
    cert = _cert(name, key, issuer, **kw)  # type: ignore[arg-type]
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, directory / f"{name}.key")
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca.pem (the council's CA), server.pem/.key, vms.pem/.key (a police VMS's client
    certificate from that CA) and rogue.pem/.key (a client certificate from another CA)."""
    d = tmp_path_factory.mktemp("pki")
    ca = _issue(d, "ca", ca=True)
    _issue(d, "server", issuer=ca, server=True)
    _issue(d, "vms", issuer=ca)
    other = _issue(d, "other-ca", ca=True)
    _issue(d, "rogue", issuer=other)
    return d


def _config(tmp_path: Path, body: str) -> Path:
    cfg = tmp_path / "feedgate.toml"
    cfg.write_text(body)
    return cfg


def test_tls_config_errors_name_the_key_and_reason(tmp_path: Path, pki: Path) -> None:
    cases = [
        (f'[http]\ntls_cert = "{pki}/server.pem"\n', "http.tls_key", "required"),
        (f'[http]\ntls_cert = "nope.pem"\ntls_key = "{pki}/server.key"\n', "http.tls_cert",
         "no such file"),
        (f'[http]\ntls_cert = "{pki}/server.pem"\ntls_key = "{pki}/vms.key"\n', "http.tls_cert",
         "mismatch"),
        (f'[rtsp]\ntls_cert = "{pki}/server.pem"\ntls_key = "gone.key"\n', "rtsp.tls_key",
         "no such file"),
        (f'[grpc]\ntls_client_ca = "{pki}/ca.pem"\n', "grpc.tls_client_ca", "needs tls_cert"),
        (f'[grpc]\ntls_cert = "{pki}/server.pem"\ntls_key = "{pki}/server.key"\n'
         f'tls_client_ca = "{pki}/server.key"\n', "grpc.tls_client_ca", "client CA"),
    ]  # fmt: skip
    for body, key, reason in cases:
        cfg = _config(tmp_path, body)
        with pytest.raises(ConfigError) as info:
            load_config(cfg, env={})
        assert f"{cfg}: {key}:" in str(info.value), (body, str(info.value))
        assert reason in str(info.value), (body, str(info.value))


def test_relative_tls_files_are_found_next_to_the_config(tmp_path: Path, pki: Path) -> None:
    for name in ("server.pem", "server.key"):
        (tmp_path / name).write_bytes((pki / name).read_bytes())
    cfg = load_config(
        _config(tmp_path, '[http]\ntls_cert = "server.pem"\ntls_key = "server.key"\n'), env={}
    )
    assert cfg.http.tls_cert == str(tmp_path / "server.pem")


async def test_https_and_mutual_tls_grpc(tmp_path: Path, pki: Path, procs) -> None:
    http, grpc_port = free_port(), free_port()
    admin = '[[principals]]\nid = "council-admin"\ntenant = "council"\nname = "Admin"\n'
    (tmp_path / "seed.toml").write_text(SEED + admin + 'kind = "user"\nroles = ["admin"]\n')
    cfg = _config(
        tmp_path,
        f'data_dir = "{tmp_path / "var"}"\n'
        f'[rtsp]\nhost = "127.0.0.1"\nport = {free_port()}\nrtp_port = {free_udp_pair()}\n'
        f'[http]\nhost = "127.0.0.1"\nport = {http}\n'
        f'tls_cert = "{pki}/server.pem"\ntls_key = "{pki}/server.key"\n'
        f'[grpc]\nhost = "127.0.0.1"\nport = {grpc_port}\n'
        f'tls_cert = "{pki}/server.pem"\ntls_key = "{pki}/server.key"\n'
        f'tls_client_ca = "{pki}/ca.pem"\n'
        '[tenancy]\nenabled = true\nseed = "seed.toml"\n',
    )
    server = await procs([sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg)])
    await wait_for(lambda: "feedgate listening" in server.text, 30, what="the gateway")
    assert f"https://127.0.0.1:{http}" in server.text

    # HTTPS, verified against the council's CA; plain HTTP on the same port gets nowhere.
    trust = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    async with httpx.AsyncClient(verify=trust, timeout=10) as client:
        r = await client.get(f"https://127.0.0.1:{http}/healthz")
        assert r.status_code == 200
    async with httpx.AsyncClient(timeout=10) as client:
        with pytest.raises(httpx.HTTPError):
            await client.get(f"http://127.0.0.1:{http}/healthz")
        with pytest.raises(httpx.HTTPError):  # the system's CAs do not vouch for it
            await client.get(f"https://127.0.0.1:{http}/healthz")

    # gRPC: the VMS with its client certificate gets in; nobody else does.
    key = SigningKey.load_or_create(tmp_path / "var" / "keys" / "token-signing.pem")
    token = TokenIssuer([key]).issue(
        tenant="council", subject="council-admin", roles=["admin"], ttl=timedelta(minutes=5)
    )
    env = _cli_env(FEEDGATE_SERVER=f"localhost:{grpc_port}", FEEDGATE_TOKEN=token)
    ca = ["--tls-ca", str(pki / "ca.pem")]
    vms = ["--tls-cert", str(pki / "vms.pem"), "--tls-key", str(pki / "vms.key")]
    rogue = ["--tls-cert", str(pki / "rogue.pem"), "--tls-key", str(pki / "rogue.key")]
    rc, out, err = await cli("tenants", "list", *ca, *vms, env=env)
    assert rc == 0 and "council" in out and "police" in out, err
    for refused in ([], ca, [*ca, *rogue]):  # plaintext, no client cert, the wrong CA's cert
        rc, out, err = await cli("tenants", "list", *refused, env=env)
        assert rc == 1 and "UNAVAILABLE" in err, (refused, rc, err)
    rc, out, err = await cli("tenants", "list", *ca, "--tls-cert", str(pki / "vms.pem"), env=env)
    assert rc == 2 and "needs its key" in err


async def _setup_over_tls(pki: Path, port: int, transport: str) -> int:
    """DESCRIBE then SETUP of the first track over RTSPS; the SETUP reply's status code."""
    trust = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    reader, writer = await asyncio.open_connection("localhost", port, ssl=trust)
    try:
        url = f"rtsps://localhost:{port}/cam1"

        async def ask(request: str) -> tuple[int, str]:
            writer.write(request.encode())
            head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode()
            length = re.search(r"(?im)^content-length:\s*(\d+)", head)
            body = await reader.readexactly(int(length.group(1))) if length else b""
            return int(head.split()[1]), body.decode()

        status, sdp = await ask(f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n")
        assert status == 200
        control = re.search(r"a=control:(\S+)", sdp.split("m=", 1)[1])
        assert control is not None
        track = control.group(1)
        track_url = track if "://" in track else f"{url}/{track}"
        status, _ = await ask(
            f"SETUP {track_url} RTSP/1.0\r\nCSeq: 2\r\nTransport: {transport}\r\n\r\n"
        )
        return status
    finally:
        writer.close()


def _over(argv: list[str], *options: str) -> list[str]:
    """ffmpeg viewer argv with input options (TLS trust) placed before its -i."""
    i = argv.index("-i")
    return [*argv[:i], *options, *argv[i:]]


async def test_rtsps_viewers_verify_the_gateway_and_get_media_only_inside_tls(
    pki: Path, procs
) -> None:
    config = make_config((CameraConfig(id="cam1"),))
    config = replace(
        config,
        rtsp=replace(
            config.rtsp,
            tls_port=0,
            tls_cert=str(pki / "server.pem"),
            tls_key=str(pki / "server.key"),
        ),
    )
    async with running_gateway(config) as gw:
        await procs(publish_argv(gw.url("cam1")))  # the camera side stays plain RTSP
        await publishing(gw, "cam1")
        tls_port = gw.gateway.rtsp.tls_port
        assert tls_port is not None and tls_port != gw.port
        rtsps = f"rtsps://localhost:{tls_port}/cam1"
        trust = ("-ca_file", str(pki / "ca.pem"))

        # Plain RTSP on the TLS port is a failed handshake, and harms nothing else.
        plain = await procs(read_argv(f"rtsp://127.0.0.1:{tls_port}/cam1", seconds=1))
        assert await plain.wait(30) != 0
        # A viewer that does not trust the council's CA refuses the gateway.
        untrusting = await procs(read_argv(rtsps, seconds=1))
        assert await untrusting.wait(30) != 0
        assert "certificate verify failed" in untrusting.text
        # Media over UDP would leave the TLS stream: refused (ffmpeg never asks over rtsps,
        # so ask by hand).
        assert await _setup_over_tls(pki, tls_port, "RTP/AVP;unicast;client_port=5000-5001") == 461
        assert await _setup_over_tls(pki, tls_port, "RTP/AVP/TCP;unicast;interleaved=0-1") == 200

        viewers = [await procs(_over(read_argv(rtsps, seconds=2), *trust)) for _ in range(2)]
        for v in viewers:
            assert await v.wait(30) == 0, v.text
            assert frames_of(v.text) >= 30, v.text


async def test_rtsps_with_two_workers_is_served_by_the_primary(
    tmp_path: Path, pki: Path, procs
) -> None:
    rtsp, tls_port, http = free_port(), free_port(), free_port()
    cfg = _config(
        tmp_path,
        f'[rtsp]\nhost = "127.0.0.1"\nport = {rtsp}\nrtp_port = {free_udp_pair()}\nworkers = 2\n'
        f'tls_port = {tls_port}\ntls_cert = "{pki}/server.pem"\ntls_key = "{pki}/server.key"\n'
        f'[http]\nhost = "127.0.0.1"\nport = {http}\n'
        '[[cameras]]\nid = "cam1"\nsource = "push"\n',
    )
    server = await procs([sys.executable, "-m", "gateway.cli", "serve", "--config", str(cfg)])
    await wait_for(lambda: "worker 1 ready" in server.text, 30, what="both workers")
    await procs(publish_argv(f"rtsp://127.0.0.1:{rtsp}/cam1"))
    await wait_for(lambda: "publishing cam1" in server.text, 30, what="the camera")
    url = f"rtsps://localhost:{tls_port}/cam1"
    viewer = await procs(_over(read_argv(url, seconds=2), "-ca_file", str(pki / "ca.pem")))
    assert await viewer.wait(30) == 0, (viewer.text, server.text[-2000:])
    assert frames_of(viewer.text) >= 30
