"""The control plane stands apart from the media plane: loading the control API (gRPC, REST,
the control service) loads neither the RTSP server, the hub, masking, nor numpy or PyAV, and
the control service in ``tenants`` imports no other project package."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONTROL_MODULES = ["gateway.grpc.server", "gateway.control", "tenants.control"]
MEDIA = ("av", "numpy", "aiortc", "gateway.rtsp", "gateway.masking", "gateway.stream")


def test_the_control_api_loads_no_media_stack() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in CONTROL_MODULES)
        + f"media = {MEDIA!r}\n"
        + "print(sorted(m for m in sys.modules if m in media or m.startswith(tuple(x + '.' "
        "for x in media))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_tenants_imports_no_other_project_package() -> None:
    for path in sorted((REPO / "tenants").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in ("gateway", "billing"), (path, name)
