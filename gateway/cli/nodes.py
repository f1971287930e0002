"""``feedgate nodes``: the cluster's nodes as their heartbeats describe them (issue #15.3).

A thin adapter: it asks the control API (``NodeService/ListNodes``, the same operation as
``GET /v1/nodes``) with ``--server`` and ``--token``, so who may see the cluster is decided in
one place. ``--local --config FILE`` reads the cluster's Redis named by the config's
``[cluster]`` itself, as every node does: for when no node answers (it then also shows which
ones are down)."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from gateway.cli.client import CliError, connect, request
from gateway.cli.verbs import LOCAL_HELP, _guarded, common_options

SERVICE = "NodeService"


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    return f"{seconds / 60:.0f}m ago"


def _remote(args: argparse.Namespace) -> list[dict[str, Any]]:
    from google.protobuf import json_format

    client = connect(args)
    try:
        resp: Any = client.call(SERVICE, "ListNodes", request(SERVICE, "ListNodes", {}))
    finally:
        client.close()
    rows = []
    for n in resp.nodes:
        row = json_format.MessageToDict(
            n, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        row.setdefault("started", None)
        rows.append(row)
    return rows


async def _read_redis(config: Any) -> list[dict[str, Any]]:
    import redis.asyncio as aioredis

    from gateway.cluster.keys import Keys
    from gateway.cluster.nodes import NodeDirectory
    from tenants.control.views import NodeView

    cc = config.cluster
    r = aioredis.Redis.from_url(
        cc.redis_url, socket_timeout=cc.redis_timeout, socket_connect_timeout=cc.redis_timeout
    )
    try:
        found = await NodeDirectory(r, Keys(cc.prefix)).nodes()
    finally:
        await r.aclose()
    return [NodeView.of(n).model_dump(mode="json") for n in found]


def _local(args: argparse.Namespace) -> list[dict[str, Any]]:
    from gateway.cli.parsing import load_config

    config = load_config(args.config)
    if not config.cluster.enabled:
        raise CliError("this config has no [cluster] redis_url: one node", 2)
    try:
        return asyncio.run(_read_redis(config))
    except Exception as exc:
        raise CliError(f"cannot read the cluster's Redis: {exc}") from None


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _print(rows: Sequence[Mapping[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(list(rows), indent=2))
        return
    now = datetime.now(UTC)
    print(f"{'NODE':24} {'STATE':6} {'SEEN':10} {'RELAY':22} {'SESSIONS':>8}  CAMERAS")
    for n in rows:
        alive = bool(n.get("alive"))
        seen = _ago((now - _when(str(n["last_seen"]))).total_seconds())
        relay = str(n.get("relay") or "-")
        sessions = str(n.get("sessions", 0)) if alive else "-"
        cams = " ".join([*n.get("owned", ()), *(f"({p})" for p in n.get("relayed", ()))])
        state = "up" if alive else "down"
        print(f"{n['node']:24} {state:6} {seen:10} {relay:22} {sessions:>8}  {cams}")


def cmd_nodes(args: argparse.Namespace) -> int:
    if args.local and not args.config:
        raise CliError("--local needs --config FILE", 2)
    rows = _local(args) if args.local else _remote(args)
    _print(rows, args.json)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "nodes",
        help="list the cluster's nodes (cameras owned, (relayed), sessions)",
        parents=[common_options()],
    )
    p.add_argument("--local", action="store_true", help=f"{LOCAL_HELP}: the cluster's Redis")
    p.add_argument("--config", help="a node's TOML config (its [cluster] section; with --local)")
    p.set_defaults(func=_guarded(cmd_nodes))
