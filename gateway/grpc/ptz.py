"""feedgate.v1.PtzService: PTZ control over gRPC, a thin adapter over
:class:`gateway.ptz.service.PtzService` (the decisions REST and the ONVIF facade get too).

Each call is authorized by the PTZ service itself (the policy's ``ptz`` action on the named
camera, from ``authorization: Bearer <jwt>``), not by the control service's API check: PTZ
rights come from grants, not from a role in the control API."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import grpc
from feedgate.v1 import ptz_pb2
from google.protobuf import message_factory
from google.protobuf.message import Message

from gateway.grpc.interceptor import bearer_token
from gateway.ptz.arbiter import LockView
from gateway.ptz.model import ErrorCode, PtzError, Vector, check_move
from gateway.ptz.service import Caller, PtzService
from tenants.policy import AccessRequest, Action

log = logging.getLogger(__name__)

DESCRIPTOR = ptz_pb2.DESCRIPTOR.services_by_name["PtzService"]
STATUS = {
    ErrorCode.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.FORBIDDEN: grpc.StatusCode.PERMISSION_DENIED,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.NO_PTZ: grpc.StatusCode.NOT_FOUND,
    ErrorCode.BAD_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.LOCKED: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.UNREACHABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.CAMERA_FAULT: grpc.StatusCode.INTERNAL,
}
# PtzError detail -> trailing metadata key
_TRAILERS = {"holder_kind": "ptz-holder-kind", "until": "ptz-until", "retry_after": "retry-after"}


def vector_pb(v: Vector | None) -> ptz_pb2.PtzVector:
    if v is None:
        return ptz_pb2.PtzVector()
    return ptz_pb2.PtzVector(pan=v.pan, tilt=v.tilt, zoom=v.zoom)


def lock_pb(view: LockView) -> ptz_pb2.PtzLock:
    msg = ptz_pb2.PtzLock(
        camera=view.camera,
        state=view.state.value,
        holder_kind=view.holder_kind or "",
        priority=view.priority,
        reason=view.reason,
    )
    if view.until is not None:
        msg.until.FromDatetime(datetime.fromtimestamp(view.until, UTC))
    return msg


class PtzGrpc:
    def __init__(self, service: PtzService) -> None:
        self.ptz = service

    async def _caller(self, context: Any, camera: str, purpose: str, op: str) -> Caller:
        req = AccessRequest(
            Action.PTZ,
            "grpc",
            camera=camera or None,
            token=bearer_token(context.invocation_metadata()),
            purpose=purpose or None,
            peer=context.peer(),
        )
        return await self.ptz.caller(req, op)

    async def Move(self, req: ptz_pb2.MoveRequest, context: Any) -> Message:
        c = await self._caller(context, req.camera, req.purpose, "move")
        v = req.vector
        cfg = self.ptz.config
        move = check_move(
            req.kind,
            v.pan,
            v.tilt,
            v.zoom,
            timeout=req.timeout if req.HasField("timeout") else None,
            default_timeout=cfg.default_timeout,
            max_timeout=cfg.max_timeout,
        )
        return lock_pb(await self.ptz.move(c, move))

    async def Stop(self, req: ptz_pb2.PtzCameraRequest, context: Any) -> Message:
        c = await self._caller(context, req.camera, req.purpose, "stop")
        return lock_pb(await self.ptz.stop_move(c))

    async def Goto(self, req: ptz_pb2.GotoRequest, context: Any) -> Message:
        c = await self._caller(context, req.camera, req.purpose, "goto")
        if req.home == bool(req.preset):
            raise PtzError(ErrorCode.BAD_REQUEST, "preset or home: exactly one")
        view = await (self.ptz.goto_home(c) if req.home else self.ptz.goto_preset(c, req.preset))
        return lock_pb(view)

    async def GetPresets(self, req: ptz_pb2.PtzCameraRequest, context: Any) -> Message:
        c = await self._caller(context, req.camera, req.purpose, "presets")
        return ptz_pb2.PtzPresetList(
            presets=[
                ptz_pb2.PtzPreset(token=p.token, name=p.name, position=vector_pb(p.position))
                for p in await self.ptz.presets(c)
            ]
        )

    async def SetPreset(self, req: ptz_pb2.SetPresetRequest, context: Any) -> Message:
        c = await self._caller(context, req.camera, req.purpose, "set_preset")
        token = await self.ptz.set_preset(c, req.name, req.token or None)
        return ptz_pb2.PtzPreset(token=token, name=req.name)

    async def GetStatus(self, req: ptz_pb2.PtzCameraRequest, context: Any) -> Message:
        c = await self._caller(context, req.camera, req.purpose, "status")
        status, view = await self.ptz.status(c)
        return ptz_pb2.PtzStatus(
            position=vector_pb(status.position), moving=status.moving, lock=lock_pb(view)
        )

    async def Reserve(self, req: ptz_pb2.ReserveRequest, context: Any) -> Message:
        c = await self._caller(context, req.camera, req.reason, "reserve")
        return lock_pb(await self.ptz.reserve(c, req.reason, req.seconds))

    async def Release(self, req: ptz_pb2.PtzCameraRequest, context: Any) -> Message:
        c = await self._caller(context, req.camera, req.purpose, "release")
        return lock_pb(await self.ptz.release(c))


def _guard(
    fn: Callable[[Any, Any], Awaitable[Message]],
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Message]]:
    name = getattr(fn, "__name__", "call")

    async def behavior(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        try:
            return await fn(request, context)
        except PtzError as exc:
            context.set_trailing_metadata(
                tuple((_TRAILERS[k], str(v)) for k, v in exc.detail.items() if k in _TRAILERS)
            )
            status, message = STATUS[exc.code], exc.message
        except Exception:
            log.exception("PtzService/%s failed", name)
            status, message = grpc.StatusCode.INTERNAL, "internal error"
        await context.abort(status, message)

    return behavior


def ptz_handlers(service: PtzService) -> list[grpc.GenericRpcHandler]:
    impl = PtzGrpc(service)
    methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for m in DESCRIPTOR.methods:
        methods[m.name] = grpc.unary_unary_rpc_method_handler(
            _guard(getattr(impl, m.name)),
            request_deserializer=message_factory.GetMessageClass(m.input_type).FromString,
            response_serializer=message_factory.GetMessageClass(m.output_type).SerializeToString,
        )
    return [grpc.method_handlers_generic_handler(DESCRIPTOR.full_name, methods)]


__all__ = ["DESCRIPTOR", "STATUS", "PtzGrpc", "lock_pb", "ptz_handlers"]
