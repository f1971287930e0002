"""``feedgate nodes``: the cluster's nodes as their heartbeats describe them (issue #15.3).

Reads the cluster's Redis named by the config's ``[cluster]`` section, as every node does;
it needs no node to be up, so it also shows which ones are down."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    return f"{seconds / 60:.0f}m ago"


async def _list(config: Any) -> list[Any]:
    import redis.asyncio as aioredis

    from gateway.cluster.keys import Keys
    from gateway.cluster.nodes import list_nodes

    cc = config.cluster
    r = aioredis.Redis.from_url(
        cc.redis_url, socket_timeout=cc.redis_timeout, socket_connect_timeout=cc.redis_timeout
    )
    try:
        return await list_nodes(r, Keys(cc.prefix))
    finally:
        await r.aclose()


def cmd_nodes(args: argparse.Namespace) -> int:
    from gateway.cli.main import _load

    config = _load(args.config)
    if not config.cluster.enabled:
        print("feedgate: this config has no [cluster] redis_url: one node", file=sys.stderr)
        return 2
    try:
        nodes = asyncio.run(_list(config))
    except Exception as exc:
        print(f"feedgate: cannot read the cluster's Redis: {exc}", file=sys.stderr)
        return 1
    now = time.time()
    if args.json:
        rows = []
        for n in nodes:
            rec = n.record
            rows.append(
                {
                    "node": n.node,
                    "alive": n.alive,
                    "last_seen": datetime.fromtimestamp(n.last_seen, UTC).isoformat(),
                    "relay": rec.relay if rec else None,
                    "rtsp_port": rec.rtsp_port if rec else None,
                    "sessions": rec.sessions if rec else None,
                    "owned": list(rec.owned) if rec else [],
                    "relayed": list(rec.relayed) if rec else [],
                }
            )
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'NODE':24} {'STATE':6} {'SEEN':10} {'RELAY':22} {'SESSIONS':>8}  CAMERAS")
    for n in nodes:
        rec = n.record
        state = "up" if n.alive else "down"
        relay = rec.relay if rec else "-"
        sessions = str(rec.sessions) if rec else "-"
        cams = ""
        if rec is not None:
            cams = " ".join([*rec.owned, *(f"({p})" for p in rec.relayed)])
        print(
            f"{n.node:24} {state:6} {_ago(now - n.last_seen):10} {relay:22} {sessions:>8}  {cams}"
        )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "nodes", help="list the cluster's nodes (cameras owned, (relayed), sessions)"
    )
    p.add_argument("--config", help="a node's TOML config (its [cluster] section)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_nodes)
