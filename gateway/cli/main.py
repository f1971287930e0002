"""The ``feedgate`` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from gateway.config import Config, ConfigError, load_config
from gateway.tasks import arm_shutdown_watchdog

log = logging.getLogger("feedgate")

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO_ROOT / "ops" / "config" / "demo-borough.toml"


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _load(path: str | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"feedgate: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _check_keys(config: Config) -> None:
    """The shared keys load before anything starts: a missing one is one line naming it."""
    from gateway.identity import load_audit_keys, load_key, load_token_keys

    try:
        load_token_keys(config)
        load_audit_keys(config)
        load_key(config, "evidence_key")
        if config.cluster.enabled:
            from gateway.cluster.tls import relay_tls

            relay_tls(config)  # the relay's TLS files load (gateway/cluster/tls.py)
    except ConfigError as exc:
        print(f"feedgate: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


async def _until_signal(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args.config)
    _setup_logging(config.log_level)
    if config.tenancy.enabled:
        _check_keys(config)
    if config.rtsp.workers > 1:
        from gateway.workers import run_supervisor

        return run_supervisor(config, args.config)

    from gateway.serve import run_gateway

    async def main() -> None:
        stop = asyncio.Event()
        await _until_signal(stop)
        waiter = asyncio.ensure_future(stop.wait())
        waiter.add_done_callback(lambda _: arm_shutdown_watchdog())
        await run_gateway(config, stop=stop, freeze_heap=True)

    asyncio.run(main())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    config = _load(args.config or str(DEMO_CONFIG))
    _setup_logging(config.log_level)
    from gateway.cli.demo import run_demo

    asyncio.run(run_demo(config, duration=args.duration))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="feedgate",
        description="CCTV network-sharing and billing gateway",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway (RTSP 8554, HTTP 8080)")
    serve.add_argument("--config", help="TOML config file (FEEDGATE_* env vars override it)")
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser(
        "demo", help="run the gateway with the demo borough and simulated cameras"
    )
    demo.add_argument("--config", help=f"demo config (default {DEMO_CONFIG})")
    demo.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    demo.set_defaults(func=cmd_demo)

    from gateway.cli import admin as cli_admin
    from gateway.cli import billing as cli_billing
    from gateway.cli import export as cli_export
    from gateway.cli import keys as cli_keys
    from gateway.cli import nodes as cli_nodes
    from gateway.cli import ptz as cli_ptz
    from gateway.cli import sar as cli_sar
    from gateway.cli import verbs as cli_verbs

    cli_admin.register(sub)
    cli_verbs.register(sub, cli_ptz.NOUNS, cli_ptz.VERBS)
    cli_billing.register(sub)
    cli_export.register(sub)
    cli_sar.register(sub)
    cli_nodes.register(sub)
    cli_keys.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
