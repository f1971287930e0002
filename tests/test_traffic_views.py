"""Issue #10 finding 6: views of traffic are the caller's own. /healthz says only that the
gateway is up; /metrics is for the platform's admins and operators (or a scrape token);
usage and sessions are scoped to the caller's tenant. (Failed on 6812e40.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from rest_fixtures import Rest, rest_gateway


@pytest.fixture
async def rest(tmp_path: Path) -> AsyncIterator[Rest]:
    async with rest_gateway(tmp_path) as r:
        yield r


async def _get(rest: Rest, path: str, token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with rest.session.get(rest.base + path, headers=headers) as r:
        return r.status, await r.text()


async def test_healthz_is_only_a_status(rest: Rest) -> None:
    status, text = await _get(rest, "/healthz", None)
    assert status == 200 and text.replace(" ", "") == '{"status":"ok"}'


async def test_metrics_are_for_the_platforms_operators(rest: Rest) -> None:
    for who in ("pop", "pfin", "padmin", "cfin", "cview"):
        status, text = await _get(rest, "/metrics", rest.token(who))
        assert status == 403 and "feedgate_readers" not in text, who
    assert (await _get(rest, "/metrics", None))[0] == 401
    for who in ("cop", "root"):
        status, text = await _get(rest, "/metrics", rest.token(who))
        assert status == 200 and "feedgate_" in text, who
    denied = [e for e in rest.denials() if e.detail.get("method") == "Metrics"]
    assert {e.principal for e in denied} == {"pop", "pfin", "padmin", "cfin", "cview"}


async def test_usage_emitted_is_the_platforms(rest: Rest) -> None:
    for who in ("pfin", "pop", "padmin", "sadmin"):
        assert (await _get(rest, "/v1/usage/emitted", rest.token(who)))[0] == 403, who
    assert (await _get(rest, "/v1/usage/emitted", rest.token("cfin")))[0] == 200


async def test_finding_5_a_configured_camera_is_registered_by_the_platform(rest: Rest) -> None:
    """'spare' has a source on this gateway but no record: a partner's admin cannot claim it
    (nor re-claim 'yard' once its owner deleted the record); the platform admin can."""
    for cam in ("spare", "yard"):
        if cam == "yard":
            assert (await rest.call("root", "DELETE", "/v1/cameras/yard"))[0] == 204
        s, p = await rest.call("padmin", "PUT", f"/v1/cameras/{cam}",
                               {"id": cam, "owner_tenant": "police"})  # fmt: skip
        assert s == 403 and p["code"] == "permission_denied", (cam, p)
        assert cam not in rest.tenancy.policy.snapshot.cameras
    s, _ = await rest.call("root", "PUT", "/v1/cameras/spare",
                           {"id": "spare", "owner_tenant": "police"})  # fmt: skip
    assert s == 200 and rest.tenancy.policy.snapshot.cameras["spare"].owner_tenant == "police"
    # An id with no source here is anyone's to register for itself.
    s, _ = await rest.call("padmin", "PUT", "/v1/cameras/van-1",
                           {"id": "van-1", "owner_tenant": "police"})  # fmt: skip
    assert s == 200
