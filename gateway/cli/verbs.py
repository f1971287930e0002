"""The admin CLI as a table: each ``Verb`` row names its noun, its arguments and what it runs,
usually one ``Rpc`` (a service, a method, the request's fields from the arguments and how to
print the answer). ``register`` turns the rows into argparse subcommands; ``crud`` writes the
list, show and delete rows of a resource from its names, so every resource lists and deletes
the same way.

Exit codes: 0 done, 1 refused or failed (the server's status and message on stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.cli import output
from gateway.cli.client import DEFAULT_SERVER, CliError, connect, request, rpc_error

if TYPE_CHECKING:
    from google.protobuf.message import Message

Run = Callable[[argparse.Namespace], int]
Fields = Callable[[argparse.Namespace], Mapping[str, Any]]
Output = Callable[[argparse.Namespace, "Message"], int]


@dataclass(frozen=True)
class Arg:
    """One ``add_argument`` call."""

    flags: tuple[str, ...]
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def dest(self) -> str:
        return str(self.options.get("dest") or self.flags[0].lstrip("-").replace("-", "_"))


def arg(*flags: str, **options: Any) -> Arg:
    return Arg(flags, options)


ID = arg("id")
LOCAL_HELP = "work on the data dir, not the server"
REASON = arg("--reason", help="recorded in the audit log")


@dataclass(frozen=True)
class Rpc:
    """A verb that is one call: ``fields`` builds the request (proto-JSON; it may refuse the
    arguments with a CliError), ``output`` prints the response and gives the exit code."""

    service: str
    method: str
    fields: Fields
    output: Output

    def __call__(self, args: argparse.Namespace) -> int:
        req = request(self.service, self.method, self.fields(args))
        client = connect(args)
        try:
            resp = client.call(self.service, self.method, req)
        finally:
            client.close()
        return self.output(args, resp)


@dataclass(frozen=True)
class Verb:
    noun: str
    name: str
    help: str
    run: Run
    args: tuple[Arg, ...] = ()
    # With --local: work on the data dir named by --config instead of calling the server.
    local: Run | None = None


# ---- outputs ---------------------------------------------------------------------------------


def shown(*, full: bool = False) -> Output:
    def out(args: argparse.Namespace, resp: Message) -> int:
        output.show(args, resp, full=full)
        return 0

    return out


def listed(
    key: str,
    columns: Sequence[str],
    *,
    full: bool = False,
    summaries: Mapping[str, Callable[[Any], Any]] | None = None,
) -> Output:
    def out(args: argparse.Namespace, resp: Message) -> int:
        output.table(args, getattr(resp, key), columns, key, full=full, summaries=summaries)
        return 0

    return out


def said(template: str) -> Output:
    """Print ``template`` filled from the arguments (``"deleted camera {id}"``)."""

    def out(args: argparse.Namespace, resp: Message) -> int:
        print(template.format(**vars(args)))
        return 0

    return out


def by_id(args: argparse.Namespace) -> Mapping[str, Any]:
    return {"id": args.id}


def crud(
    noun: str,
    kind: str,
    service: str,
    columns: Sequence[str],
    *,
    filters: Mapping[str, Arg] | None = None,
    verbs: Iterable[str] = ("list", "show", "delete"),
    full: bool = False,
    summaries: Mapping[str, Callable[[Any], Any]] | None = None,
) -> list[Verb]:
    """The list, show and delete verbs of one resource (``ListCameras``, ``GetCamera``,
    ``DeleteCamera``). ``filters``: the list request's fields, each from one argument;
    ``full`` and ``summaries``: as :func:`listed`."""
    name = kind.capitalize()
    wanted = tuple(verbs)
    given = dict(filters or {})

    def list_fields(args: argparse.Namespace) -> Mapping[str, Any]:
        return {f: getattr(args, a.dest) for f, a in given.items()}

    rows = {
        "list": Verb(noun, "list", f"list {kind}s", Rpc(service, f"List{name}s", list_fields,
                     listed(noun, columns, full=full, summaries=summaries)), tuple(given.values())),
        "show": Verb(noun, "show", f"show a {kind}",
                     Rpc(service, f"Get{name}", by_id, shown()), (ID,)),
        "delete": Verb(noun, "delete", f"delete a {kind}",
                       Rpc(service, f"Delete{name}", by_id, said(f"deleted {kind} {{id}}")), (ID,)),
    }  # fmt: skip
    return [rows[v] for v in wanted]


def needs_local(message: str) -> Run:
    """The remote side of a verb that only works on the data dir."""

    def run(args: argparse.Namespace) -> int:
        raise CliError(message, 2)

    return run


# ---- registration ----------------------------------------------------------------------------


def _guarded(fn: Run) -> Run:
    """Turn RPC failures and CliErrors into a message on stderr and an exit code."""

    def run(args: argparse.Namespace) -> int:
        import grpc

        try:
            return fn(args)
        except CliError as exc:
            print(f"feedgate: {exc}", file=sys.stderr)
            return exc.code
        except grpc.RpcError as exc:
            print(f"feedgate: {rpc_error(exc)}", file=sys.stderr)
            return 1

    return run


def _dispatch(verb: Verb) -> Run:
    local = verb.local
    if local is None:
        return verb.run
    return lambda args: local(args) if args.local else verb.run(args)


def common_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    env = os.environ.get
    p.add_argument(
        "--server",
        default=env("FEEDGATE_SERVER") or DEFAULT_SERVER,
        help=f"control API host:port (default $FEEDGATE_SERVER or {DEFAULT_SERVER})",
    )
    p.add_argument("--token", default=env("FEEDGATE_TOKEN"), help="bearer token ($FEEDGATE_TOKEN)")
    p.add_argument("--json", action="store_true", help="JSON output")
    tls = p.add_argument_group("TLS (a control API with grpc.tls_cert set)")
    tls.add_argument("--tls", action="store_true", help="use TLS, trusting the system's CAs")
    tls.add_argument("--tls-ca", default=env("FEEDGATE_TLS_CA"), help="trust this CA (PEM)")
    tls.add_argument("--tls-cert", default=env("FEEDGATE_TLS_CERT"), help="client certificate")
    tls.add_argument("--tls-key", default=env("FEEDGATE_TLS_KEY"), help="client certificate's key")
    return p


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    nouns: Mapping[str, str],
    verbs: Iterable[Verb],
) -> None:
    """Add ``feedgate <noun> <verb>`` for every row (nouns in ``nouns``' order, with its help)."""
    common = common_options()
    groups: dict[str, argparse._SubParsersAction[argparse.ArgumentParser]] = {}
    for noun, help in nouns.items():
        p = sub.add_parser(noun, help=help)
        groups[noun] = p.add_subparsers(dest=f"{noun}_command", required=True, metavar="VERB")
    for verb in verbs:
        p = groups[verb.noun].add_parser(verb.name, help=verb.help, parents=[common])
        for a in verb.args:
            p.add_argument(*a.flags, **a.options)
        if verb.local is not None:
            p.add_argument("--local", action="store_true", help=LOCAL_HELP)
            p.add_argument("--config", help="the gateway's TOML config (with --local)")
        p.set_defaults(func=_guarded(_dispatch(verb)))


__all__ = [
    "ID",
    "REASON",
    "Arg",
    "Fields",
    "Output",
    "Rpc",
    "Verb",
    "arg",
    "by_id",
    "common_options",
    "crud",
    "listed",
    "needs_local",
    "register",
    "said",
    "shown",
]
