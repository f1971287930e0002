"""Headless Chromium driven by Playwright: PyPI's ``playwright`` with Debian's ``chromium``
(``executable_path``), so nothing downloads a browser. Registered in conftest's plugins."""

from __future__ import annotations

import os
from collections.abc import Iterator
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
