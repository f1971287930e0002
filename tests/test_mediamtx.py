"""MediaMTX's external authentication, answered from the policy: every action against every
role, masks MediaMTX cannot burn in, MediaMTX's own API, who may ask at all, and guessing."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.config import Config, TenancyConfig
from gateway.http.mediamtx import mediamtx_handler
from gateway.tenancy import Tenancy
from tenants.audit import AuditAction

ROLES = ("admin", "operator", "viewer", "investigator", "finance", "auditor")
ACTIONS = ("read", "publish", "playback", "api", "metrics", "pprof")


def _seed() -> str:
    out = []
    for tid, kind in (("council", "council"), ("police", "police")):
        out.append(f'[[tenants]]\nid = "{tid}"\nname = "{tid}"\nkind = "{kind}"\n')
        for role in ROLES:
            out.append(
                f'[[principals]]\nid = "{tid}-{role}"\ntenant = "{tid}"\n'
                f'name = "{role}"\nroles = ["{role}"]\n'
            )
    out.append(
        '[[principals]]\nid = "gone"\ntenant = "council"\nname = "Leaver"\n'
        'roles = ["admin", "operator", "viewer", "investigator"]\n'
        '[[principals]]\nid = "vms"\ntenant = "police"\nname = "VMS"\nkind = "service"\n'
        'roles = ["viewer"]\ndigest_password = "right-password"\n'
        '[[cameras]]\nid = "street"\nowner = "council"\n'
        '[[cameras]]\nid = "market"\nowner = "council"\n'
        '[[masks]]\nid = "flats"\ncamera = "market"\n'
        'points = [[0.1, 0.1], [0.4, 0.1], [0.4, 0.4]]\nkind = "liftable"\n'
        '[[grants]]\nid = "police-cams"\nowner = "council"\ngrantee = "police"\n'
        'cameras = ["street", "market"]\nrights = ["live", "playback"]\n'
    )
    return "\n".join(out)


# Who may do what on camera "street" (unmasked), through MediaMTX. Everything else is refused.
_LIVE = {"admin", "operator", "viewer", "investigator"}
_PLAYBACK = {"admin", "operator", "investigator"}
ALLOWED: dict[tuple[str, str], set[str]] = {
    ("council", "read"): _LIVE,  # the owner
    ("council", "playback"): _PLAYBACK,
    ("council", "publish"): {"admin", "operator"},
    ("council", "api"): {"admin", "operator"},  # the platform's staff run MediaMTX
    ("council", "metrics"): {"admin", "operator"},
    ("council", "pprof"): {"admin", "operator"},
    ("police", "read"): _LIVE,  # under its grant
    ("police", "playback"): _PLAYBACK,
}


@dataclass
class Hook:
    tenancy: Tenancy
    client: TestClient

    def token(self, subject: str, roles: list[str]) -> str:
        tenant = "council" if subject.startswith("council") or subject == "gone" else "police"
        return self.tenancy.issuer.issue(
            tenant=tenant, subject=subject, roles=roles, ttl=timedelta(minutes=5)
        )

    async def ask(self, **fields: str) -> tuple[int, dict[str, Any]]:
        body = {"ip": "10.1.2.3", "action": "read", "path": "street", "protocol": "rtsp"}
        resp = await self.client.post("/mediamtx/auth", json={**body, **fields})
        return resp.status, await resp.json()

    def denied(self) -> int:
        return sum(1 for e in self.tenancy.audit.entries() if e.action == AuditAction.DENIED)


async def _hook(
    tmp_path: Path, *, secret: str = "", remote: str | None = None
) -> AsyncIterator[Hook]:
    (tmp_path / "seed.toml").write_text(_seed())
    config = Config(
        data_dir=str(tmp_path / "var"),
        tenancy=TenancyConfig(enabled=True, seed=str(tmp_path / "seed.toml")),
    )
    tenancy = Tenancy.open(config)
    tenancy.policy.sleep = _no_wait  # guessing delays are asserted, not waited out here

    @web.middleware
    async def seen_from(request: web.Request, handler: Callable[..., Awaitable[Any]]) -> Any:
        # As a reverse proxy in front of the hook would make it look.
        return await handler(request.clone(remote=remote) if remote else request)

    app = web.Application(middlewares=[seen_from])
    app.router.add_post("/mediamtx/auth", mediamtx_handler(tenancy, secret=secret))
    async with TestClient(TestServer(app)) as client:
        yield Hook(tenancy, client)
    await tenancy.close()


delays: list[float] = []


async def _no_wait(seconds: float) -> None:
    delays.append(seconds)


@pytest.fixture
async def hook(tmp_path: Path) -> AsyncIterator[Hook]:
    async for h in _hook(tmp_path):
        yield h


async def test_every_action_against_every_role(hook: Hook) -> None:
    hook.tenancy.store.delete_principal("gone")
    hook.tenancy.policy.reload()
    gone = hook.token("gone", ["admin", "operator", "viewer", "investigator"])
    cases = [(f"{t}-{r}", t, r) for t in ("council", "police") for r in ROLES]
    wrong = []
    for a, action in enumerate(ACTIONS):
        for i, (subject, tenant, role) in enumerate(cases):
            before = hook.denied()
            token = hook.token(subject, [role])
            # One address per caller: refusals are audited at a bounded rate per source.
            status, body = await hook.ask(action=action, token=token, ip=f"10.2.{a}.{i}")
            allowed = role in ALLOWED.get((tenant, action), set())
            audited = hook.denied() == before + 1
            if (status == 200) != allowed or (not allowed and not audited):
                wrong.append((action, subject, status, body.get("reason"), audited))
        before = hook.denied()
        status, body = await hook.ask(action=action, token=gone)
        if status != 403 or "unknown principal" not in body["reason"]:
            wrong.append((action, "gone", status, body.get("reason"), None))
        if hook.denied() != before + 1:
            wrong.append((action, "gone", status, "not audited", None))
    assert not wrong, wrong


async def test_a_masked_viewer_is_refused_the_original_and_given_only_its_variant(hook: Hook):
    officer = hook.token("police-viewer", ["viewer"])
    status, body = await hook.ask(path="market", token=officer)
    assert status == 403 and "masked" in body["reason"] and "MediaMTX" in body["reason"]
    variant = body["reason"].split("(")[1].split(")")[0]
    assert variant.startswith("masked-")
    # The same camera's sub-stream and playback are the original too.
    assert (await hook.ask(path="market/sub", token=officer))[0] == 403
    assert (await hook.ask(path="market", action="playback", token=hook.token(
        "police-investigator", ["investigator"])))[0] == 403  # fmt: skip
    # Only a path naming this viewer's own variant is allowed.
    status, body = await hook.ask(path=f"market~{variant}", token=officer)
    assert status == 200 and body["variant"] == variant
    assert (await hook.ask(path="market~masked-000000000000", token=officer))[0] == 403
    assert (await hook.ask(path="street~unmasked", token=officer))[0] == 200
    assert (await hook.ask(path=f"street~{variant}", token=officer))[0] == 403


async def test_a_mask_lift_is_feedgates_to_audit_and_end(hook: Hook) -> None:
    owner = hook.token("council-operator", ["operator"])
    # With a purpose the owner may lift the liftable zone: not through MediaMTX, which could
    # neither audit the lift's end nor bring the mask back.
    status, body = await hook.ask(path="market", token=owner, query="unmasked=1&purpose=CAD-1")
    assert status == 403 and "lift" in body["reason"]


async def test_unknown_user_and_wrong_password_get_one_answer(hook: Hook) -> None:
    delays.clear()
    good = await hook.ask(user="vms", password="right-password")
    assert good[0] == 200 and not delays  # a right password: no delay
    wrong = await hook.ask(user="vms", password="guess")
    nobody = await hook.ask(user="nobody", password="guess")
    assert wrong == nobody == (401, {"allow": False, "reason": "bad credentials"})
    assert len(delays) == 2 and all(d > 0 for d in delays)
    # Failed sign-ins are audited, marked apart from refusals of identified callers.
    outcomes = [e.outcome for e in hook.tenancy.audit.entries() if e.action == AuditAction.DENIED]
    assert outcomes == ["unauthenticated", "unauthenticated"]


async def test_guesses_are_throttled_without_locking_out_the_right_source(hook: Hook) -> None:
    # The VMS signs in from its own address first, as it does every day.
    assert (await hook.ask(user="vms", password="right-password", ip="10.0.0.5"))[0] == 200
    statuses = [
        (await hook.ask(user="vms", password=f"guess-{i}", ip=f"203.0.113.{i % 3}"))[0]
        for i in range(30)
    ]
    assert set(statuses) == {401}
    assert hook.tenancy.policy.guesses.checked_failures == 10  # only 10 were ever checked
    # Even the right password is refused unchecked from the attacker's addresses now...
    assert (await hook.ask(user="vms", password="right-password", ip="203.0.113.9"))[0] == 401
    # ... but the VMS's own address still signs in.
    assert (await hook.ask(user="vms", password="right-password", ip="10.0.0.5"))[0] == 200


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer not-it"}, 401),
        ({"Authorization": "Bearer s3cret-hook"}, 200),
        ({"Authorization": "Basic " + base64.b64encode(b"mediamtx:s3cret-hook").decode()}, 200),
    ],
)
async def test_with_a_secret_only_mediamtx_may_ask(tmp_path: Path, headers, status) -> None:
    async for h in _hook(tmp_path, secret="s3cret-hook", remote="10.0.0.9"):
        body = {"action": "read", "path": "street", "token": h.token("police-viewer", ["viewer"])}
        resp = await h.client.post("/mediamtx/auth", json=body, headers=headers)
        assert resp.status == status
        if status != 200:
            assert "user" not in await resp.text()  # nothing about users or cameras


async def test_without_a_secret_only_loopback_may_ask(tmp_path: Path) -> None:
    async for h in _hook(tmp_path, remote="10.0.0.9"):
        status, body = await h.ask(user="vms", password="right-password")
        assert status == 403 and "loopback" in body["reason"]
