"""``feedgate sar``: subject access requests over the gateway's REST API (``--url``,
``$FEEDGATE_URL``; ``--token``, ``$FEEDGATE_TOKEN``).

::

    feedgate sar open --subject "..." --contact "..." --start T --end T --camera C [--area S,W,N,E]
    feedgate sar list [--state open]
    feedgate sar show ID          # the request, with its due date
    feedgate sar findings ID      # recordings of the window, every use of them, copies made
    feedgate sar copy ID --camera C --redact "bystander:0,0 0.5,0 0.5,0.5@T1/T2" [--out DIR]
    feedgate sar close ID --state fulfilled --outcome "copy sent by post"

``--redact`` (repeatable) is a zone id, its points (x,y in 0..1 of the picture) and the time
range it covers; the copy is followed with a progress bar and downloaded with its manifest.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import httpx

from gateway.cli.export import Refused, answer, download, follow, remote, remote_parser


def parse_redaction(text: str) -> dict[str, Any]:
    """``id:x,y x,y x,y@START/END`` -> a redaction body."""
    try:
        head, _, when = text.partition("@")
        zone_id, _, points = head.partition(":")
        start, _, end = when.partition("/")
        pts = [[float(v) for v in p.split(",")] for p in points.split()]
    except ValueError:
        pts = []
        zone_id = start = end = ""
    if not zone_id or len(pts) < 3 or any(len(p) != 2 for p in pts) or not start or not end:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected id:x,y x,y x,y@START/END (RFC 3339 times)"
        )
    return {"id": zone_id, "points": pts, "start": start, "end": end}


@remote
def cmd_open(args: argparse.Namespace, client: httpx.Client) -> Any:
    body = {
        "subject": args.subject,
        "contact": args.contact,
        "start": args.start,
        "end": args.end,
        "cameras": args.camera,
        "area": args.area,
    }
    return answer(client.post("/v1/sars", json=body))


@remote
def cmd_list(args: argparse.Namespace, client: httpx.Client) -> Any:
    return answer(client.get("/v1/sars", params={"state": args.state} if args.state else {}))


@remote
def cmd_show(args: argparse.Namespace, client: httpx.Client) -> Any:
    return answer(client.get(f"/v1/sars/{args.id}"))


@remote
def cmd_findings(args: argparse.Namespace, client: httpx.Client) -> Any:
    return answer(client.get(f"/v1/sars/{args.id}/findings"))


@remote
def cmd_copy(args: argparse.Namespace, client: httpx.Client) -> Any:
    body = {"camera": args.camera, "redactions": args.redact}
    job = answer(client.post(f"/v1/sars/{args.id}/copies", json=body))
    job = follow(client, job, args.quiet, args.poll)
    if job["state"] != "done":
        raise Refused(f"copy {job['id']} {job['state']}: {job.get('error') or ''}")
    media, manifest = download(client, job, Path(args.out))
    print(f"{media}\n{manifest}", file=sys.stderr)
    return job


@remote
def cmd_close(args: argparse.Namespace, client: httpx.Client) -> Any:
    body = {"state": args.state, "outcome": args.outcome}
    return answer(client.post(f"/v1/sars/{args.id}/close", json=body))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sar = sub.add_parser("sar", help="subject access requests: open, search, copy, close")
    verbs = sar.add_subparsers(dest="sar_command", required=True)
    p = remote_parser(verbs, "open", "open a request (due one month on)")
    p.add_argument("--subject", required=True, help="how to recognise the subject")
    p.add_argument("--contact", required=True, help="how to reach them")
    p.add_argument("--start", required=True, help="RFC 3339")
    p.add_argument("--end", required=True, help="RFC 3339")
    p.add_argument("--camera", action="append", default=[], help="a camera (repeatable)")
    p.add_argument("--area", help="south,west,north,east: the cameras placed inside")
    p.set_defaults(func=cmd_open)
    p = remote_parser(verbs, "list", "requests, newest first, with due dates")
    p.add_argument("--state", choices=["open", "fulfilled", "refused", "withdrawn"])
    p.set_defaults(func=cmd_list)
    for name, fn, what in (
        ("show", cmd_show, "one request"),
        ("findings", cmd_findings, "recordings and every use of the request's footage"),
    ):
        p = remote_parser(verbs, name, what)
        p.add_argument("id")
        p.set_defaults(func=fn)
    p = remote_parser(verbs, "copy", "make the subject's redacted copy of one camera")
    p.add_argument("id")
    p.add_argument("--camera", required=True)
    p.add_argument(
        "--redact", action="append", default=[], type=parse_redaction,
        help="id:x,y x,y x,y@START/END (repeatable)",
    )  # fmt: skip
    p.add_argument("--out", default=".")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--poll", type=float, default=0.5, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_copy)
    p = remote_parser(verbs, "close", "close a request with its outcome")
    p.add_argument("id")
    p.add_argument("--state", required=True, choices=["fulfilled", "refused", "withdrawn"])
    p.add_argument("--outcome", required=True)
    p.set_defaults(func=cmd_close)


__all__ = ["parse_redaction", "register"]
