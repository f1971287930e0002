"""The admin CLI's connection to the control API: a blocking gRPC client that finds each
method's request and response types in the ``feedgate.v1`` descriptors, so a verb names only
its service, its method and the request's fields."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import grpc
    from google.protobuf.descriptor import MethodDescriptor
    from google.protobuf.message import Message

DEFAULT_SERVER = "127.0.0.1:50051"
TIMEOUT_S = 30.0
# The modules whose services the CLI calls (importing them registers their descriptors).
_MODULES = ("tenants", "cameras", "masks", "grants", "tokens", "audit", "nodes", "ptz")


class CliError(Exception):
    """Print the message and exit with the code (1: refused or failed, 2: usage)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def method(service: str, name: str) -> MethodDescriptor:
    """``feedgate.v1.<service>/<name>``'s descriptor."""
    from google.protobuf import descriptor_pool

    for module in _MODULES:
        importlib.import_module(f"feedgate.v1.{module}_pb2")
    found = descriptor_pool.Default().FindServiceByName(f"feedgate.v1.{service}")
    return found.methods_by_name[name]


def request(service: str, name: str, fields: Mapping[str, Any]) -> Message:
    """The method's request message from proto-JSON ``fields`` (None values left unset, so
    optional fields keep their absence)."""
    from google.protobuf import json_format, message_factory

    cls = message_factory.GetMessageClass(method(service, name).input_type)
    return json_format.ParseDict(_pruned(fields), cls())


def _pruned(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _pruned(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_pruned(v) for v in value]
    return value


class Client:
    """A blocking client for the feedgate.v1 services."""

    def __init__(
        self,
        server: str,
        token: str | None,
        *,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        import grpc

        options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        if credentials is None:
            self._channel = grpc.insecure_channel(server, options=options)
        else:
            self._channel = grpc.secure_channel(server, credentials, options=options)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def call(self, service: str, name: str, req: Message) -> Message:
        from google.protobuf import message_factory

        response = message_factory.GetMessageClass(method(service, name).output_type)
        fn: grpc.UnaryUnaryMultiCallable[Message, Message] = self._channel.unary_unary(
            f"/feedgate.v1.{service}/{name}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response.FromString,
        )
        result: Message = fn(req, metadata=self._metadata, timeout=TIMEOUT_S)
        return result

    def close(self) -> None:
        self._channel.close()


def connect(args: argparse.Namespace) -> Client:
    """A client for ``--server`` with ``--token``, over TLS if any TLS option is given."""
    credentials = None
    if args.tls or args.tls_ca or args.tls_cert:
        from gateway.tls import TlsError, grpc_channel_credentials

        try:
            credentials = grpc_channel_credentials(args.tls_ca, args.tls_cert, args.tls_key)
        except TlsError as exc:
            raise CliError(str(exc), 2) from None
    return Client(args.server, args.token, credentials=credentials)


def rpc_error(exc: grpc.RpcError) -> CliError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    name = code.name if code is not None else "ERROR"
    return CliError(f"{name}: {details}")


__all__ = ["DEFAULT_SERVER", "CliError", "Client", "connect", "method", "request", "rpc_error"]
