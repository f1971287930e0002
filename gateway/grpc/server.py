"""The control API over gRPC: tenants, principals, cameras, masks, grants, tokens, the audit
log and the cluster's nodes, as thin adapters over the control service (``tenants.control``).

The contract is ``protos/feedgate/v1/*.proto`` (package ``feedgate.v1``). Handlers are built
from the services' descriptors, so a method added to a .proto without an implementation here
fails at start, not at the first call. Every call but ``TokenService/GetJwks`` carries
``authorization: Bearer <jwt>`` (see ``interceptor.py``); who may do what is the control
service's (``tenants/control/rules.py``)."""

from __future__ import annotations

import logging
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor

from gateway.grpc import audit, cameras, grants, nodes, tenants
from gateway.grpc.interceptor import guarded
from tenants.control import ControlService
from tenants.model import check_id

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def servicers(service: ControlService) -> list[tuple[ServiceDescriptor, Any]]:
    """Each .proto service with the object implementing it. Add a service here."""
    return [
        (tenants.DESCRIPTOR, tenants.TenantService(service)),
        (cameras.DESCRIPTOR, cameras.CameraService(service)),
        (cameras.MASK_DESCRIPTOR, cameras.MaskService(service)),
        (grants.DESCRIPTOR, grants.GrantService(service)),
        (grants.TOKEN_DESCRIPTOR, grants.TokenService(service)),
        (audit.DESCRIPTOR, audit.AuditService(service)),
        (nodes.DESCRIPTOR, nodes.NodeService(service)),
    ]


def handlers(
    service: ControlService, extra: list[tuple[ServiceDescriptor, Any]] | None = None
) -> list[grpc.GenericRpcHandler]:
    out: list[grpc.GenericRpcHandler] = []
    for descriptor, impl in [*servicers(service), *(extra or [])]:
        public: frozenset[str] = getattr(impl, "PUBLIC", frozenset())
        methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        for m in descriptor.methods:
            fn = getattr(impl, m.name, None)
            if fn is None:
                raise NotImplementedError(f"{descriptor.full_name}/{m.name}")
            req_cls = message_factory.GetMessageClass(m.input_type)
            resp_cls = message_factory.GetMessageClass(m.output_type)
            methods[m.name] = grpc.unary_unary_rpc_method_handler(
                guarded(service, fn, public=m.name in public),
                request_deserializer=req_cls.FromString,
                response_serializer=resp_cls.SerializeToString,
            )
        out.append(grpc.method_handlers_generic_handler(descriptor.full_name, methods))
    return out


async def start_grpc(
    tenancy: Any,
    host: str,
    port: int,
    *,
    platform_tenant: str,
    credentials: grpc.ServerCredentials | None = None,
    service: ControlService | None = None,
    extra_handlers: list[grpc.GenericRpcHandler] | None = None,
) -> grpc.aio.Server:
    """Start the control API on host:port, over TLS with ``credentials`` (see
    ``gateway.tls``); without, keep it on loopback or a private network. ``service``: the
    process's control service (default: one over ``tenancy`` with no media plane). The caller
    stops it with ``await server.stop(grace)``."""
    check_id("tenant", platform_tenant)
    if service is None:
        from gateway.control import control_service

        service = control_service(tenancy, platform_tenant)
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", 4 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ],
    )
    # extra_handlers: services that authorize each call themselves (PtzService).
    server.add_generic_rpc_handlers([*handlers(service), *(extra_handlers or [])])
    address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    try:
        if credentials is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise OSError(f"control API: cannot listen on {address}: {exc}") from None
    if bound == 0:
        raise OSError(f"control API: cannot listen on {address}")
    await server.start()
    log.info("control API (gRPC%s) on %s", "" if credentials is None else " over TLS", address)
    return server


__all__ = ["handlers", "servicers", "start_grpc"]
