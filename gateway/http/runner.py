"""The HTTP server's runner: aiohttp's, except for requests it cannot parse.

aiohttp answers a request its parser refuses (a bad method, header or Content-Length) before
any middleware runs, with a text body that quotes the offending bytes back, e.g.
``Invalid method encountered: b'<script>… / HTTP/1.1'``, and logs the same bytes with a
traceback. Those bytes are the caller's: markup, or a request line carrying ``?token=``. So such
a request gets its status with a fixed body and ``nosniff`` (issue #10, finding 11: error bodies
do not echo input), and the log gets one line naming the peer and the kind of error, never the
bytes. Errors of our own handlers (5xx) are left to aiohttp, whose 500 body is fixed already.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

log = logging.getLogger("feedgate.http")


class _QuietRequestHandler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        if request.writer.output_size > 0:
            raise ConnectionError("a response was sent already; the connection is broken")
        log.info(
            "unparsable HTTP request from %s: %s (%d)",
            request.remote,
            type(exc).__name__ if exc else "error",
            status,
        )
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        response = web.Response(
            status=status,
            text=f"{status} {phrase}\n",
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"},
        )
        response.force_close()
        return response


class _QuietServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _QuietRequestHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer unparsable requests without echoing them."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _QuietServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )
