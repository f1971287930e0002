"""Every call's guard: who is calling (``authorization: Bearer <jwt>``, through the control
service's one authentication, which audits refusals), then the handler, then the control
service's errors as gRPC statuses (the message carries the reason, never the token)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc
from google.protobuf.message import Message

from tenants.control import Caller, Code, ControlError, ControlService

log = logging.getLogger(__name__)

STATUS = {
    Code.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    Code.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Code.FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
    Code.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Code.CONFLICT: grpc.StatusCode.ALREADY_EXISTS,
    Code.PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    Code.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Code.INTERNAL: grpc.StatusCode.INTERNAL,
}

Handler = Callable[[Any, Caller], Awaitable[Message]]


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return None


def guarded(
    service: ControlService, impl: Handler, *, public: bool = False
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Message]]:
    """The unary behaviour for one method: authenticate (unless ``public``), run, map errors."""
    name = getattr(impl, "__name__", "call")

    async def behavior(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        try:
            if public:
                caller = Caller("", "", frozenset(), False, "grpc", context.peer())
            else:
                token = bearer_token(context.invocation_metadata())
                caller = await service.authenticate(token, via="grpc", peer=context.peer())
            return await impl(request, caller)
        except ControlError as exc:
            status, message = STATUS[exc.code], str(exc)
        except Exception:
            log.exception("control API: %s failed", name)
            status, message = grpc.StatusCode.INTERNAL, "internal error"
        await context.abort(status, message)

    return behavior


__all__ = ["STATUS", "bearer_token", "guarded"]
