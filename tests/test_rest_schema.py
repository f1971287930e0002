"""schemathesis against /v1/openapi.json of a real `feedgate serve`, as the police's admin:
bounded in examples and time, it must find no 5xx, no response that breaks the declared
schema, and no object of a tenant the police share nothing with in any response."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from conftest import free_port, free_udp_pair
from hypothesis import HealthCheck, Phase, given, settings
from rest_fixtures import SEED
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = 25  # per operation
BUDGET_S = 150.0  # for the whole run
# The police share cameras with the council (street-police); everything else is others'.
VISIBLE_TENANTS = {"police", "council"}
OTHERS = {"farside", "farside-admin", "farside-cam", "farside-grant", "farside-mask", "shop",
          "sadmin", "mall", "mall-council", "yard", "root", "cop", "cview", "cfin",
          "caud"}  # fmt: skip
TENANT_KEYS = {"tenant", "tenant_id", "owner_tenant", "grantee_tenant", "for_tenant", "owner"}


def _leaks(value: Any, path: str = "") -> list[str]:
    out: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k in TENANT_KEYS and isinstance(v, str) and v and v not in VISIBLE_TENANTS:
                out.append(f"{path}.{k}={v}")
            out += _leaks(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _leaks(v, f"{path}[{i}]")
    elif isinstance(value, str) and value in OTHERS:
        out.append(f"{path}={value}")
    return out


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`feedgate serve` on free ports; yields (base URL, a police admin's token)."""
    (tmp_path / "seed.toml").write_text(SEED)
    http = free_port()
    config = tmp_path / "feedgate.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "var"}"\nlog_level = "WARNING"\n'
        f'[rtsp]\nhost = "127.0.0.1"\nport = {free_port()}\nrtp_port = {free_udp_pair()}\n'
        f'[http]\nhost = "127.0.0.1"\nport = {http}\n[grpc]\nport = 0\n'
        '[tenancy]\nenabled = true\nseed = "seed.toml"\n[billing]\nenabled = true\n'
        '[[cameras]]\nid = "street"\n[[cameras]]\nid = "spare"\n'
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "protos")])}
    cli = [sys.executable, "-m", "gateway.cli"]
    proc = subprocess.Popen([*cli, "serve", "--config", str(config)], env=env, cwd=tmp_path)
    base = f"http://127.0.0.1:{http}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("feedgate serve did not come up") from None
                time.sleep(0.1)
        token = subprocess.run(
            [*cli, "token", "issue", "--local", "--config", str(config), "--tenant", "police",
             "--subject", "padmin", "--ttl", "1h"],
            env=env, check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        yield base, token
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_schemathesis_finds_no_5xx_no_schema_breaks_and_no_leaks(served: tuple[str, str]) -> None:
    base, token = served
    with urllib.request.urlopen(base + "/v1/openapi.json", timeout=5) as r:
        schema = schemathesis.openapi.from_dict(json.load(r))
    headers = {"Authorization": f"Bearer {token}"}
    checks = [
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
        content_type_conformance,
    ]
    started = time.monotonic()
    calls: dict[str, int] = {}
    leaks: list[str] = []
    for result in schema.get_all_operations():
        op = result.ok()
        if time.monotonic() - started > BUDGET_S:
            pytest.fail(f"over the time budget before {op.label}")

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy())
        def run(case: Any) -> None:
            label = case.operation.label
            response = case.call(base_url=base, headers=headers, timeout=10)
            calls[label] = calls.get(label, 0) + 1
            case.validate_response(response, checks=checks)
            if 200 <= response.status_code < 300 and response.content:
                found = _leaks(response.json())
                leaks.extend(f"{label}: {x}" for x in found)
                assert not found, found

        run()
    assert not leaks, leaks
    assert len(calls) >= 20 and sum(calls.values()) >= 100, calls
