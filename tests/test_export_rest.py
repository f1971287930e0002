"""``feedgate export`` and REST /v1/exports, /v1/locks on a real gateway (issue #13.5): the CLI
cuts, follows with a progress bar, downloads, and the download verifies offline against the
gateway's published JWKS."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestServer
from conftest import make_config
from export_fixtures import SEED, WHO, ffprobe, index_segment, luma_frames, write_segment

from gateway.cli.main import main
from gateway.config import CameraConfig, TenancyConfig, WebRtcConfig
from gateway.core import Gateway
from gateway.http.app import make_http_app
from tenants.audit import AuditAction

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(minutes=5)


def z(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Site:
    gateway: Gateway
    url: str

    def token(self, who: str) -> str:
        assert self.gateway.tenancy is not None
        return self.gateway.tenancy.issuer.issue(tenant=WHO[who], subject=who)

    def cli(self, *argv: str, who: str = "officer") -> int:
        return main(["export", *argv, "--url", self.url, "--token", self.token(who)])


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    seed = tmp_path / "seed.toml"
    seed.write_text(SEED)
    config = replace(
        make_config((CameraConfig(id="street"),)),
        data_dir=str(tmp_path / "var"),
        tenancy=TenancyConfig(enabled=True, seed=str(seed)),
        webrtc=WebRtcConfig(enabled=False),
    )
    gateway = Gateway(config)
    assert gateway.exports is not None
    index = gateway.exports.index
    index.root.mkdir(parents=True)
    for i in range(2):
        path = index.root / f"seg{i}.mp4"
        write_segment(path, 5)
        index_segment(index, "street", f"s{i}", path, T0 + timedelta(seconds=5 * i))
    server = TestServer(make_http_app(gateway), host="127.0.0.1")
    await server.start_server()
    try:
        yield Site(gateway, str(server.make_url("")).rstrip("/"))
    finally:
        await server.close()


async def test_the_cli_exports_follows_downloads_and_the_file_verifies(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "evidence"
    code = await asyncio.to_thread(
        site.cli, "create", "--camera", "street", "--start", z(T0 + timedelta(seconds=1)),
        "--end", z(T0 + timedelta(seconds=8)), "--incident-ref", "CAD 4411/02DEC",
        "--out", str(out), "--poll", "0.05",
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    job = json.loads(captured.out)
    assert job["state"] == "done" and job["progress"] == 1.0
    assert "] done" in captured.err  # the progress bar's last state
    media, manifest = out / f"{job['id']}.mp4", out / f"{job['id']}.manifest.json"
    assert ffprobe(media).errors == ""
    async with httpx.AsyncClient() as client:
        jwks = (await client.get(f"{site.url}/.well-known/jwks.json")).text
    (tmp_path / "jwks.json").write_text(jwks)
    verify = ["export", "verify", str(media), str(manifest), "--jwks", str(tmp_path / "jwks.json")]
    assert main(verify) == 0
    assert "VERIFIED" in capsys.readouterr().out
    # The same file with a byte flipped does not.
    data = bytearray(media.read_bytes())
    data[-100] ^= 0x80
    media.write_bytes(bytes(data))
    assert main(verify) == 1
    assert "hash_mismatch" in capsys.readouterr().err
    # Listed, audited once.
    assert await asyncio.to_thread(site.cli, "list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [j["id"] for j in listed["items"]] == [job["id"]]
    tenancy = site.gateway.tenancy
    assert tenancy is not None
    tenancy.drain()
    exports = [e for e in tenancy.audit.entries() if e.action == AuditAction.EXPORT]
    assert [e.detail["incident_ref"] for e in exports] == ["CAD 4411/02DEC"]


async def test_rest_refusals_are_problem_documents(site: Site) -> None:
    url = f"{site.url}/v1/exports"
    good = {"camera": "street", "start": z(T0), "end": z(T0 + timedelta(seconds=2)),
            "purpose": "case"}  # fmt: skip
    async with httpx.AsyncClient() as client:
        r = await client.post(url, json=good)
        assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
        auth = {"Authorization": f"Bearer {site.token('tfl-inv')}"}
        r = await client.post(url, json=good, headers=auth)
        assert r.status_code == 403 and r.json()["code"] == "forbidden"
        auth = {"Authorization": f"Bearer {site.token('officer')}"}
        for body, field in [
            ({**good, "start": "2026-12-01T10:00:00"}, "start"),  # no offset
            ({**good, "extra": 1}, "extra"),
            ({k: v for k, v in good.items() if k != "camera"}, "camera"),
        ]:
            r = await client.post(url, json=body, headers=auth)
            assert r.status_code == 400, r.text
            assert r.headers["Content-Type"].startswith("application/problem+json")
            assert r.json()["detail"].startswith(field)
        r = await client.post(url, content=b"{" * 20000, headers=auth)
        assert r.status_code == 413
        r = await client.get(f"{url}/exp-0000000000000000", headers=auth)
        assert r.status_code == 404 and r.json()["code"] == "not_found"
        r = await client.post(url, json=good, headers=auth)
        assert r.status_code == 202 and r.headers["Location"] == f"/v1/exports/{r.json()['id']}"
        other = {"Authorization": f"Bearer {site.token('guard')}"}
        r = await client.get(f"{site.url}{r.headers['Location']}/file", headers=other)
        assert r.status_code == 404


async def test_locks_through_the_cli(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    code = await asyncio.to_thread(
        site.cli, "lock", "--camera", "street", "--start", z(T0), "--end",
        z(T0 + timedelta(seconds=5)), "--reason", "CAD 4411 hold",
        "--expires", z(NOW + timedelta(days=30)), "--json",
    )  # fmt: skip
    assert code == 0
    lock = json.loads(capsys.readouterr().out)
    assert lock["reason"] == "CAD 4411 hold" and lock["principal"] == "officer"
    assert await asyncio.to_thread(site.cli, "locks", "--json") == 0
    assert [x["id"] for x in json.loads(capsys.readouterr().out)["items"]] == [lock["id"]]
    assert await asyncio.to_thread(site.cli, "release", lock["id"], "--json") == 0
    assert json.loads(capsys.readouterr().out)["released_by"] == "officer"
    assert await asyncio.to_thread(site.cli, "release", lock["id"]) == 1
    assert "already_released" in capsys.readouterr().err


async def test_a_subject_access_request_through_the_cli(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def sar(*argv: str) -> dict[str, Any]:
        code = main(["sar", *argv, "--url", site.url, "--token", site.token("root"), "--json"])
        out = capsys.readouterr()
        assert code == 0, out.err
        return json.loads(out.out)  # type: ignore[no-any-return]

    opened = await asyncio.to_thread(
        sar, "open", "--subject", "Cyclist, yellow jacket", "--contact", "dsar@example.org",
        "--start", z(T0 + timedelta(seconds=1)), "--end", z(T0 + timedelta(seconds=4)),
        "--camera", "street",
    )  # fmt: skip
    assert opened["state"] == "open" and opened["due"]
    found = await asyncio.to_thread(sar, "findings", str(opened["id"]))
    assert found["recordings"] == {
        "street": [{"start": z(T0 + timedelta(seconds=1)), "end": z(T0 + timedelta(seconds=4))}]
    }
    when = f"{z(T0 + timedelta(seconds=2))}/{z(T0 + timedelta(seconds=3))}"
    redact = f"bystander:0,0 0.5,0 0.5,0.5 0,0.5@{when}"
    out = tmp_path / "dsar"
    copy = await asyncio.to_thread(
        sar, "copy", str(opened["id"]), "--camera", "street", "--redact", redact,
        "--out", str(out), "--poll", "0.05",
    )  # fmt: skip
    assert copy["state"] == "done" and copy["kind"] == "sar_copy"
    media = out / f"{copy['id']}.mp4"
    assert ffprobe(media).errors == ""
    frames = luma_frames(media)
    assert frames[37][:120, :160].max() <= 20  # 2.5 s: redacted
    assert frames[10][:120, :160].mean() > 40  # 1.4 s: not yet
    listed = await asyncio.to_thread(sar, "list", "--state", "open")
    assert [r["id"] for r in listed["items"]] == [opened["id"]]
    closed = await asyncio.to_thread(
        sar, "close", str(opened["id"]), "--state", "fulfilled", "--outcome", "sent"
    )
    assert closed["state"] == "fulfilled"
    with pytest.raises(SystemExit):  # a malformed zone is refused before any request
        main(["sar", "copy", "x", "--camera", "c", "--redact", "nonsense"])


async def test_exports_locks_and_sars_are_declared_in_the_openapi_document(site: Site) -> None:
    """The routes come from the API's route table: in /v1/openapi.json with their schemas and
    problem responses, the file as MP4 bytes that answer HTTP ranges (206)."""
    async with httpx.AsyncClient() as client:
        doc = (await client.get(f"{site.url}/v1/openapi.json")).json()
        ops = {(m.upper(), p): op for p, item in doc["paths"].items() for m, op in item.items()}
        for key in [
            ("POST", "/v1/exports"), ("GET", "/v1/exports"), ("GET", "/v1/exports/{id}"),
            ("DELETE", "/v1/exports/{id}"), ("GET", "/v1/exports/{id}/file"),
            ("GET", "/v1/exports/{id}/manifest"), ("POST", "/v1/locks"), ("GET", "/v1/locks"),
            ("DELETE", "/v1/locks/{id}"), ("POST", "/v1/sars"), ("GET", "/v1/sars"),
            ("GET", "/v1/sars/{id}"), ("GET", "/v1/sars/{id}/findings"),
            ("POST", "/v1/sars/{id}/copies"), ("POST", "/v1/sars/{id}/close"),
        ]:  # fmt: skip
            assert key in ops, key
            assert ops[key]["responses"]["403"]["content"]["application/problem+json"], key
        create = ops["POST", "/v1/exports"]
        assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert create["responses"]["202"]["headers"]["Location"]
        schemas = doc["components"]["schemas"]
        assert {"camera", "start", "end"} <= set(schemas["ExportBody"]["required"])
        assert "progress" in schemas["ExportView"]["properties"]
        assert "due" in schemas["SarView"]["properties"]
        file = ops["GET", "/v1/exports/{id}/file"]
        assert set(file["responses"]["200"]["content"]) == {"video/mp4"}
        assert {"206", "416"} <= set(file["responses"])
        assert "Range" in {p["name"] for p in file["parameters"]}
        # The file through the table's route: whole, then a range of it.
        auth = {"Authorization": f"Bearer {site.token('officer')}"}
        good = {"camera": "street", "start": z(T0), "end": z(T0 + timedelta(seconds=2)),
                "incident_ref": "CAD 1"}  # fmt: skip
        job = (await client.post(f"{site.url}/v1/exports", json=good, headers=auth)).json()
        url = f"{site.url}/v1/exports/{job['id']}"
        for _ in range(600):
            job = (await client.get(url, headers=auth)).json()
            if job["state"] != "queued" and job["state"] != "running":
                break
            await asyncio.sleep(0.05)
        assert job["state"] == "done", job
        whole = await client.get(f"{url}/file", headers=auth)
        assert whole.status_code == 200 and len(whole.content) == job["size"]
        head = await client.head(f"{url}/file", headers=auth)
        assert head.status_code == 200 and int(head.headers["Content-Length"]) == job["size"]
        part = await client.get(f"{url}/file", headers={**auth, "Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == whole.content[100:200]
        manifest = await client.get(f"{url}/manifest", headers=auth)
        assert manifest.status_code == 200
        assert manifest.json()["manifest"]["sha256"] == job["sha256"]
        shape = ops["GET", "/v1/exports/{id}/manifest"]["responses"]["200"]["content"]
        assert shape["application/json"]["schema"] == {
            "$ref": "#/components/schemas/SignedManifest"
        }


async def test_times_with_no_utc_instant_are_refused_as_400_not_500(site: Site) -> None:
    """0001-01-01T00:00:00+05:00 and 9999-12-31T23:59:59-05:00 are valid RFC 3339 times with no
    UTC datetime: each is the field's 400, and nothing is taken or opened (they were 500s from
    the export and subject access routes and the audit's disclosures, and a lock stored one)."""
    before, after = "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"
    officer = {"Authorization": f"Bearer {site.token('officer')}"}
    root = {"Authorization": f"Bearer {site.token('root')}"}
    span = {"start": z(T0), "end": z(T0 + timedelta(seconds=3))}
    posts = [
        ("/v1/exports", {"camera": "street", **span, "purpose": "case"}, officer),
        ("/v1/locks", {"camera": "street", **span, "reason": "hold",
                       "expires": z(NOW + timedelta(days=1))}, officer),
        ("/v1/sars", {"subject": "s", "contact": "c", **span, "cameras": ["street"]}, root),
    ]  # fmt: skip
    async with httpx.AsyncClient() as client:
        for path, body, auth in posts:
            for name, value in [("start", before), ("end", after)]:
                r = await client.post(site.url + path, json={**body, name: value}, headers=auth)
                assert r.status_code == 400, (path, name, r.text)
                assert r.json()["field"] == name and r.json()["code"] == "invalid_argument"
        r = await client.post(site.url + "/v1/sars", json=posts[2][1], headers=root)
        assert r.status_code == 201
        copies = f"{site.url}/v1/sars/{r.json()['id']}/copies"
        zone = {"id": "z", "points": [[0, 0], [1, 0], [1, 1]], "start": before, "end": z(T0)}
        r = await client.post(copies, json={"camera": "street", "redactions": [zone]}, headers=root)
        assert r.status_code == 400 and r.json()["field"] == "redactions[0].start", r.text
        r = await client.get(f"{site.url}/v1/audit/disclosures?from={before}&to={after}".replace(
            "+", "%2B"), headers=root)  # fmt: skip
        assert r.status_code == 400 and r.json()["field"] == "from", r.text
        locks = await client.get(site.url + "/v1/locks", headers=officer)
        assert locks.status_code == 200 and locks.json()["items"] == []
