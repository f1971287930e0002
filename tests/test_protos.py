"""The checked-in feedgate.v1 stubs are what ops/gen_protos.sh makes from the .proto files."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROTOS = REPO / "protos"
V1 = PROTOS / "feedgate" / "v1"
GENERATED = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")

# Version stamps of the generator: a newer grpcio-tools that makes the same code is not stale.
_VERSIONS = [
    (re.compile(r"^# Protobuf Python Version: .*$", re.M), "# Protobuf Python Version: X"),
    (
        re.compile(r"(_runtime_version\.Domain\.PUBLIC,\n)\s*\d+,\n\s*\d+,\n\s*\d+,\n"),
        r"\1    X,\n",
    ),
    (re.compile(r"^GRPC_GENERATED_VERSION = '[^']*'$", re.M), "GRPC_GENERATED_VERSION = 'X'"),
]


def _normalize(text: str) -> str:
    for pattern, repl in _VERSIONS:
        text = pattern.sub(repl, text)
    return text


def _generated(folder: Path) -> dict[str, str]:
    return {
        p.name: p.read_text(encoding="utf-8")
        for p in sorted(folder.iterdir())
        if p.name.endswith(GENERATED)
    }


def test_checked_in_stubs_match_the_protos(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    protos = sorted(V1.glob("*.proto"))
    assert protos, "no .proto files"
    # The same command as ops/gen_protos.sh, into a temporary directory.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Iprotos",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            *(str(p.relative_to(REPO)) for p in protos),
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=60,
    )
    fresh = _generated(tmp_path / "feedgate" / "v1")
    checked_in = _generated(V1)
    assert sorted(checked_in) == sorted(fresh), (
        "generated files differ from the .proto files: run ops/gen_protos.sh"
    )
    stale = [name for name in fresh if _normalize(fresh[name]) != _normalize(checked_in[name])]
    assert not stale, f"stale generated code {stale}: run ops/gen_protos.sh and commit"


def test_the_generator_script_runs_that_command() -> None:
    script = (REPO / "ops" / "gen_protos.sh").read_text()
    assert (
        "-m grpc_tools.protoc -Iprotos --python_out=protos --grpc_python_out=protos"
        " --pyi_out=protos protos/feedgate/v1/*.proto" in script
    )
    assert (REPO / "ops" / "gen_protos.sh").stat().st_mode & 0o111


def test_stubs_import_as_feedgate_v1() -> None:
    from feedgate.v1 import (
        audit_pb2,
        cameras_pb2,
        grants_pb2,
        masks_pb2,
        tenants_pb2,
        tokens_pb2,
    )

    services = {
        s
        for m in (tenants_pb2, cameras_pb2, masks_pb2, grants_pb2, tokens_pb2, audit_pb2)
        for s in m.DESCRIPTOR.services_by_name
    }
    assert services == {
        "TenantService",
        "CameraService",
        "MaskService",
        "GrantService",
        "TokenService",
        "AuditService",
    }
