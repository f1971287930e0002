"""What the console needs from the register: principals' sign-in passwords (scrypt hashes, set
through REST, gRPC and the CLI, never shown or logged) and cameras' map positions (register,
control service, REST, gRPC, CLI)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from rest_fixtures import Rest, rest_gateway
from test_grpc import REPO, Api, _cli_env, api  # noqa: F401  (api: the gRPC fixture)

from tenants import passwords
from tenants.db import Database
from tenants.model import Camera, DomainError
from tenants.seed import SeedError, load_seed
from tenants.store import TenantStore

PASSWORD = "correct horse battery staple"


# ----------------------------------------------------------------------------- the hashes


def test_a_password_is_kept_as_a_salted_scrypt_hash() -> None:
    stored = passwords.hash_password(PASSWORD)
    again = passwords.hash_password(PASSWORD)
    assert stored.startswith("scrypt$15$8$1$") and PASSWORD not in stored
    assert stored != again  # salted
    assert passwords.verify(PASSWORD, stored) and passwords.verify(PASSWORD, again)
    assert not passwords.verify(PASSWORD + "!", stored)
    assert not passwords.verify(PASSWORD, None)  # no password set: checked, and refused
    assert not passwords.verify("", passwords.NO_PASSWORD)


@pytest.mark.parametrize(
    "password, why",
    [("short one", "at least 12"), ("x" * 257, "at most 256"), ("tab\tinside password", "control")],
)
def test_passwords_that_cannot_be_set(password: str, why: str) -> None:
    with pytest.raises(passwords.PasswordError, match=why):
        passwords.hash_password(password)


def test_a_longer_guess_never_matches_a_stored_prefix() -> None:
    stored = passwords.hash_password("p" * 256)
    assert passwords.verify("p" * 256, stored)
    assert not passwords.verify("p" * 257, stored)


@pytest.mark.parametrize(
    "stored",
    [
        "scrypt$30$8$1$AAAAAAAAAAAAAAAAAAAAAA$" + "A" * 43,  # 2^30: would take 128 GiB
        "scrypt$15$8$1$!!$" + "A" * 43,
        "bcrypt$whatever",
        "",
    ],
)
def test_a_corrupt_or_hostile_stored_hash_is_refused_cheaply(stored: str) -> None:
    assert not passwords.verify(PASSWORD, stored)


# ----------------------------------------------------------------------------- the register


def test_a_camera_has_both_coordinates_or_neither() -> None:
    assert Camera("c", "t", latitude=51.5, longitude=-0.12).position == (51.5, -0.12)
    assert Camera("c", "t").position is None
    for lat, lon in ((51.5, None), (91.0, 0.0), (0.0, 180.5), (float("nan"), 0.0)):
        with pytest.raises(DomainError):
            Camera("c", "t", latitude=lat, longitude=lon)


SEED = """
[[tenants]]
id = "council"
name = "Council"
kind = "council"
[[principals]]
id = "op"
tenant = "council"
name = "Operator"
roles = ["viewer"]
[[cameras]]
id = "street"
owner = "council"
latitude = 51.5072
longitude = -0.1276
"""


def test_the_seed_places_cameras_and_a_rerun_keeps_passwords(tmp_path: Path) -> None:
    store = TenantStore(Database.open(f"sqlite:///{tmp_path}/t.db"))
    seed = tmp_path / "seed.toml"
    seed.write_text(SEED)
    load_seed(store, seed)
    assert store.get_camera("street").position == (51.5072, -0.1276)
    op = store.get_principal("op")
    hashed = passwords.hash_password(PASSWORD)
    store.put_principal(op.__class__(**{**op.__dict__, "password_hash": hashed}))
    load_seed(store, seed)  # every start re-runs the seed: an admin's password stays
    assert store.get_principal("op").password_hash == hashed
    assert "password_hash" not in repr(store.get_principal("op"))

    seed.write_text(SEED.replace("longitude = -0.1276\n", ""))
    with pytest.raises(SeedError, match=r"cameras\[0\]\.longitude: give both"):
        load_seed(store, seed)
    seed.write_text(SEED.replace("51.5072", "95.0"))
    with pytest.raises(SeedError, match=r"cameras\[0\]\.latitude"):
        load_seed(store, seed)


# ----------------------------------------------------------------------------- REST


@pytest.fixture
async def rest(tmp_path: Path) -> AsyncIterator[Rest]:
    async with rest_gateway(tmp_path) as r:
        yield r


async def test_rest_sets_a_password_that_is_never_shown_or_audited(rest: Rest) -> None:
    body = {"id": "cview", "tenant_id": "council", "name": "Council viewer", "roles": ["viewer"]}
    status, view = await rest.call(
        "root", "PUT", "/v1/principals/cview", {**body, "password": PASSWORD}
    )
    assert status == 200 and view["has_password"] is True, view
    assert PASSWORD not in json.dumps(view) and "scrypt" not in json.dumps(view)
    stored = rest.tenancy.store.get_principal("cview").password_hash
    assert passwords.verify(PASSWORD, stored)
    # An update that does not mention the password keeps it; clear_password removes it.
    status, view = await rest.call("root", "PUT", "/v1/principals/cview", body)
    assert status == 200 and view["has_password"] is True
    status, view = await rest.call("root", "GET", "/v1/principals/cview")
    assert status == 200 and view["has_password"] is True
    status, view = await rest.call(
        "root", "PUT", "/v1/principals/cview", {**body, "clear_password": True}
    )
    assert status == 200 and view["has_password"] is False
    changes = [
        e.detail.get("password")
        for e in rest.tenancy.audit.entries()
        if e.detail.get("api") == "PutPrincipal"
    ]
    assert changes == ["set", "unchanged", "cleared"]
    log = json.dumps([e.detail for e in rest.tenancy.audit.entries()])
    assert PASSWORD not in log and "scrypt$" not in log
    # A password too short is named, and not echoed.
    status, problem = await rest.call(
        "root", "PUT", "/v1/principals/cview", {**body, "password": "short\x07"}
    )
    assert status == 400 and problem["field"] == "password", problem
    assert "short" not in json.dumps(problem)
    # Only the principal's own tenant's admins set it.
    status, _ = await rest.call(
        "padmin", "PUT", "/v1/principals/cview", {**body, "password": PASSWORD}
    )
    assert status in (403, 404)


async def test_rest_places_a_camera_on_the_map(rest: Rest) -> None:
    body = {
        "id": "street",
        "owner_tenant": "council",
        "name": "Street",
        "latitude": 51.501,
        "longitude": -0.142,
    }
    status, view = await rest.call("root", "PUT", "/v1/cameras/street", body)
    assert status == 200 and (view["latitude"], view["longitude"]) == (51.501, -0.142), view
    status, view = await rest.call("pview", "GET", "/v1/cameras/street")  # granted to police
    assert status == 200 and view["latitude"] == 51.501
    assert rest.tenancy.policy.snapshot.cameras["street"].position == (51.501, -0.142)
    status, problem = await rest.call(
        "root", "PUT", "/v1/cameras/street", {**body, "longitude": None}
    )
    assert status == 400 and problem["field"] == "longitude", problem
    status, problem = await rest.call(
        "root", "PUT", "/v1/cameras/street", {**body, "latitude": 123.0}
    )
    assert status == 400 and problem["field"] == "latitude", problem
    status, spec = await rest.call(None, "GET", "/v1/openapi.json")
    camera = spec["components"]["schemas"]["CameraBody"]["properties"]
    assert "latitude" in camera and "longitude" in camera
    principal = spec["components"]["schemas"]["PrincipalBody"]["properties"]
    assert "password" in principal and "clear_password" in principal


# ----------------------------------------------------------------------------- gRPC and CLI


async def _cli(*argv: str, stdin: bytes, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_cli_sets_a_password_from_stdin_and_a_position(api: Api) -> None:  # noqa: F811
    env = _cli_env(FEEDGATE_SERVER=f"127.0.0.1:{api.port}", FEEDGATE_TOKEN=api.token("root"))
    rc, out, err = await _cli(
        "principals",
        "put",
        "--id",
        "pview",
        "--tenant",
        "police",
        "--name",
        "Police viewer",
        "--roles",
        "viewer",
        "--password-stdin",
        stdin=f"{PASSWORD}\n".encode(),
        env=env,
    )
    assert rc == 0, err
    assert PASSWORD not in out + err
    assert passwords.verify(PASSWORD, api.tenancy.store.get_principal("pview").password_hash)
    rc, out, err = await _cli("principals", "list", "--tenant", "police", stdin=b"", env=env)
    assert rc == 0 and "HAS_PASSWORD" in out.splitlines()[0], out
    rc, out, err = await _cli(
        "cameras",
        "put",
        "--id",
        "street",
        "--owner",
        "council",
        "--latitude",
        "51.52",
        "--longitude",
        "-0.08",
        stdin=b"",
        env=env,
    )
    assert rc == 0, err
    assert api.tenancy.store.get_camera("street").position == (51.52, -0.08)
    rc, out, err = await _cli(
        "principals",
        "put",
        "--id",
        "pview",
        "--tenant",
        "police",
        "--name",
        "Police viewer",
        "--password-stdin",
        stdin=b"too short\n",
        env=env,
    )
    assert rc == 1 and "password" in err and "too short" not in err, err
