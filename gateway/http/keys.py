"""Keys the HTTP handlers share on the aiohttp application and request."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.core import Gateway

GATEWAY_KEY = web.AppKey("gateway", Gateway)
# The policy decision that let an HTTP request in (who is asking, for which tenant).
DECISION_KEY: web.RequestKey[Any] = web.RequestKey("decision", object)
