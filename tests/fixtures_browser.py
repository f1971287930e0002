"""Headless Chromium driven by Playwright: PyPI's ``playwright`` with Debian's ``chromium``
(``executable_path``), so nothing downloads a browser. Registered in conftest's plugins."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium per test module (each test opens its own context: cookies, storage)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("headless Chromium not installed: apt-get install -y chromium (ops/install.sh)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def artefacts(request: pytest.FixtureRequest) -> Path:
    """Where a test keeps what a person should be able to look at afterwards (screenshots):
    ``var/test-artefacts/<module>/<test>/`` at the top of the repository (gitignored), or under
    ``$FEEDGATE_ARTEFACTS``; emptied when the test starts, kept after it."""
    top = Path(__file__).resolve().parent.parent / "var" / "test-artefacts"
    root = Path(os.environ.get("FEEDGATE_ARTEFACTS") or top)
    where = root / request.node.module.__name__ / re.sub(r"[^\w.-]+", "_", request.node.name)
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    return where
