"""A request the HTTP server cannot parse gets its 400 without its own bytes coming back
(issue #10, finding 11) or reaching the log, and the server carries on.

aiohttp's own answer quotes the offending line (``Invalid method encountered: b'<script>…'``)
and logs it with a traceback: markup back to a browser, a ``?token=`` into the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator

import pytest
from conftest import free_port, make_config

from gateway.config import Config, HttpConfig
from gateway.serve import run_gateway

TOKEN = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJzZWNyZXQtdmlld2VyIn0.c2lnbmF0dXJlLWJ5dGVz"

UNPARSABLE = {
    "markup as the method": b"<script>alert(1)</script> /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "a token in a request line with a bad method": (
        f"G{{T /whep/cam1?token={TOKEN} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    ),
    "a control byte in a header": (
        f"GET /healthz?token={TOKEN} HTTP/1.1\r\nHost: x\r\nX-Note: \x01<b>{TOKEN}</b>\r\n\r\n"
    ).encode(),
    "markup as a Content-Length": (
        b"POST /whep/cam1 HTTP/1.1\r\nHost: x\r\nContent-Length: 12<i>oops</i>\r\n\r\n"
    ),
}


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[Config]:
    config = dataclasses.replace(make_config(), http=HttpConfig(host="127.0.0.1", port=free_port()))
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_gateway(config, ready=ready, stop=stop))
    try:
        await asyncio.wait_for(ready.wait(), 20)
        yield config
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def exchange(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()


@pytest.mark.parametrize("raw", UNPARSABLE.values(), ids=UNPARSABLE.keys())
async def test_an_unparsable_request_gets_400_and_its_bytes_go_nowhere(
    raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serving() as config:
        answer = await exchange(config.http.port, raw)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 400") or head.startswith(b"HTTP/1.1 400"), answer
        assert b"x-content-type-options: nosniff" in head.lower()
        assert body == b"400 Bad Request\n"
        for fragment in (b"<", b"script", TOKEN.encode(), b"oops", b"\x01"):
            assert fragment not in body
        # The gateway still answers a well-formed request on a new connection.
        healthy = await exchange(
            config.http.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert healthy.startswith(b"HTTP/1.1 200"), healthy
    logged = "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records)
    assert "unparsable HTTP request from 127.0.0.1" in logged
    for fragment in (TOKEN, "<script>", "oops", "Traceback"):
        assert fragment not in logged
