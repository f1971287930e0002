"""``feedgate export``: evidence exports from the command line.

``feedgate export create --camera C --start T --end T --purpose P [--incident-ref R]
[--out DIR]`` asks the gateway's REST API (``--url``, ``$FEEDGATE_URL``; ``--token``,
``$FEEDGATE_TOKEN``) for an export, shows its progress as a bar on stderr until it is done (Ctrl-C
cancels it on the gateway), then downloads the MP4 and its signed manifest into ``DIR``.
``status``, ``list``, ``cancel`` and ``download`` follow exports; ``lock``, ``locks`` and
``release`` manage evidence locks. Exit 0 on success, 1 when the gateway refuses or the export
fails (its problem document's detail is printed), 2 on bad arguments.

``feedgate export verify FILE MANIFEST (--jwks JWKS.json | --key KEY.pem)`` checks an export
offline: the file's size and SHA-256 against its manifest, and the manifest's Ed25519 signature
against keys the verifier trusts (the gateway's published JWKS saved to a file, or its evidence
key's PEM). Exit 0 when it verifies, 1 when it does not (saying why), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from gateway.recording.export_manifest import ManifestError, load_trusted_keys, verify_export


def cmd_verify(args: argparse.Namespace) -> int:
    if not args.jwks and not args.key:
        print("feedgate export verify: give --jwks or --key (the keys you trust)", file=sys.stderr)
        return 2
    try:
        keys = load_trusted_keys([Path(p) for p in args.jwks], [Path(p) for p in args.key])
        if not keys:
            raise ManifestError("unknown_key", "no Ed25519 key among the trusted keys given")
        result = verify_export(Path(args.file), Path(args.manifest), keys)
    except ManifestError as exc:
        if args.json:
            print(json.dumps({"verified": False, "reason": exc.reason, "message": str(exc)}))
        else:
            print(f"NOT VERIFIED ({exc.reason}): {exc}", file=sys.stderr)
        return 1
    m = result.manifest
    if args.json:
        print(
            json.dumps(
                {
                    "verified": True,
                    "sha256": result.sha256,
                    "manifest": m.model_dump(mode="json"),
                }
            )
        )
    else:
        masks = ", ".join(z.id for z in m.masks_applied) or "none"
        print(f"VERIFIED {args.file}")
        print(f"  export   {m.export_id} ({m.kind}), signed by key {m.key_id}")
        print(f"  camera   {m.camera}, {m.start:%Y-%m-%dT%H:%M:%SZ} to {m.end:%Y-%m-%dT%H:%M:%SZ}")
        print(f"  for      {m.requester.person} of {m.requester.tenant}")
        print(f"  purpose  {m.purpose or '-'}; incident {m.incident_ref or '-'}")
        print(f"  masks    {masks}; sha256 {result.sha256}")
    return 0


class Refused(Exception):
    pass


def _client(args: argparse.Namespace) -> httpx.Client:
    if not args.token:
        raise Refused("a token is needed: --token or $FEEDGATE_TOKEN")
    return httpx.Client(
        base_url=args.url.rstrip("/"),
        headers={"Authorization": f"Bearer {args.token}"},
        timeout=httpx.Timeout(30.0),
    )


def answer(resp: httpx.Response) -> Any:
    if resp.status_code >= 400:
        try:
            body = resp.json()
            why = f"{body.get('code', resp.status_code)}: {body.get('detail', '')}"
        except ValueError:
            why = f"HTTP {resp.status_code}"
        raise Refused(why)
    return resp.json()


def _bar(job: dict[str, Any], width: int = 30) -> str:
    done = int(float(job.get("progress") or 0) * width)
    return f"\r{job['id']} [{'#' * done}{'.' * (width - done)}] {job['state']:<9}"


def follow(client: httpx.Client, job: dict[str, Any], quiet: bool, poll: float) -> dict[str, Any]:
    """Poll an export until it ends, drawing its progress; Ctrl-C cancels it."""
    try:
        while job["state"] in ("queued", "running"):
            if not quiet:
                print(_bar(job), end="", file=sys.stderr, flush=True)
            time.sleep(poll)
            job = answer(client.get(f"/v1/exports/{job['id']}"))
    except KeyboardInterrupt:
        job = answer(client.delete(f"/v1/exports/{job['id']}"))
        print(f"\ncancelled {job['id']}", file=sys.stderr)
        return job
    if not quiet:
        print(_bar(job), file=sys.stderr)
    return job


def download(client: httpx.Client, job: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    media, manifest = out / f"{job['id']}.mp4", out / f"{job['id']}.manifest.json"
    with client.stream("GET", f"/v1/exports/{job['id']}/file") as resp:
        if resp.status_code >= 400:
            resp.read()
            answer(resp)
        with media.open("wb") as f:
            for chunk in resp.iter_bytes():
                f.write(chunk)
    resp = client.get(f"/v1/exports/{job['id']}/manifest")
    if resp.status_code >= 400:
        answer(resp)
    manifest.write_bytes(resp.content)
    return media, manifest


def remote(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            with _client(args) as client:
                result = fn(args, client)
        except Refused as exc:
            print(f"feedgate export: {exc}", file=sys.stderr)
            return 1
        except httpx.HTTPError as exc:
            print(f"feedgate export: {args.url}: {exc}", file=sys.stderr)
            return 1
        if isinstance(result, int):
            return result
        print(json.dumps(result, indent=None if args.json else 2))
        return 0

    return run


@remote
def cmd_create(args: argparse.Namespace, client: httpx.Client) -> Any:
    body = {
        "camera": args.camera,
        "start": args.start,
        "end": args.end,
        "purpose": args.purpose,
        "incident_ref": args.incident_ref,
        "unmasked": args.unmasked,
    }
    job = answer(client.post("/v1/exports", json=body))
    if args.no_wait:
        return job
    job = follow(client, job, args.quiet, args.poll)
    if job["state"] != "done":
        raise Refused(f"export {job['id']} {job['state']}: {job.get('error') or ''}")
    media, manifest = download(client, job, Path(args.out))
    print(f"{media}\n{manifest}", file=sys.stderr)
    return job


@remote
def cmd_status(args: argparse.Namespace, client: httpx.Client) -> Any:
    return answer(client.get(f"/v1/exports/{args.id}"))


@remote
def cmd_list(args: argparse.Namespace, client: httpx.Client) -> Any:
    return answer(client.get("/v1/exports", params={"limit": args.limit}))


@remote
def cmd_cancel(args: argparse.Namespace, client: httpx.Client) -> Any:
    return answer(client.delete(f"/v1/exports/{args.id}"))


@remote
def cmd_download(args: argparse.Namespace, client: httpx.Client) -> Any:
    job = answer(client.get(f"/v1/exports/{args.id}"))
    media, manifest = download(client, job, Path(args.out))
    return {"file": str(media), "manifest": str(manifest)}


@remote
def cmd_lock(args: argparse.Namespace, client: httpx.Client) -> Any:
    body = {
        "camera": args.camera,
        "start": args.start,
        "end": args.end,
        "reason": args.reason,
        "expires": args.expires,
    }
    return answer(client.post("/v1/locks", json=body))


@remote
def cmd_locks(args: argparse.Namespace, client: httpx.Client) -> Any:
    return answer(client.get("/v1/locks", params={"camera": args.camera} if args.camera else {}))


@remote
def cmd_release(args: argparse.Namespace, client: httpx.Client) -> Any:
    return answer(client.delete(f"/v1/locks/{args.id}"))


def remote_parser(
    verbs: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str
) -> argparse.ArgumentParser:
    env = os.environ.get
    p = verbs.add_parser(name, help=help)
    p.add_argument(
        "--url",
        default=env("FEEDGATE_URL", "http://127.0.0.1:8080"),
        help="the gateway's HTTP address ($FEEDGATE_URL)",
    )
    p.add_argument("--token", default=env("FEEDGATE_TOKEN"), help="bearer token ($FEEDGATE_TOKEN)")
    p.add_argument("--json", action="store_true", help="print one line of JSON")
    return p


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = sub.add_parser("export", help="evidence exports: cut, follow, verify")
    verbs = export.add_subparsers(dest="export_command", required=True)
    verify = verbs.add_parser(
        "verify", help="check an exported file and its signed manifest, offline"
    )
    verify.add_argument("file", help="the exported MP4")
    verify.add_argument("manifest", help="its signed manifest (.manifest.json)")
    verify.add_argument(
        "--jwks", action="append", default=[], help="a JWKS file of trusted keys (repeatable)"
    )
    verify.add_argument(
        "--key", action="append", default=[], help="a trusted Ed25519 PEM key (repeatable)"
    )
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.set_defaults(func=cmd_verify)

    create = remote_parser(verbs, "create", "cut a camera's time range to a signed MP4")
    create.add_argument("--camera", required=True)
    create.add_argument("--start", required=True, help="RFC 3339, e.g. 2026-12-01T10:15:00Z")
    create.add_argument("--end", required=True, help="RFC 3339")
    create.add_argument("--purpose", help="why (a purpose or an incident reference is needed)")
    create.add_argument("--incident-ref", help="the incident's reference, e.g. a CAD number")
    create.add_argument("--unmasked", action="store_true", help="lift liftable masks (unmask)")
    create.add_argument("--out", default=".", help="where the MP4 and manifest go")
    create.add_argument("--no-wait", action="store_true", help="print the queued export only")
    create.add_argument("--quiet", action="store_true", help="no progress bar")
    create.add_argument("--poll", type=float, default=0.5, help=argparse.SUPPRESS)
    create.set_defaults(func=cmd_create)
    for name, fn, what in (
        ("status", cmd_status, "an export's state and progress"),
        ("cancel", cmd_cancel, "cancel a queued or running export"),
    ):
        p = remote_parser(verbs, name, what)
        p.add_argument("id")
        p.set_defaults(func=fn)
    download = remote_parser(verbs, "download", "fetch a finished export and its manifest")
    download.add_argument("id")
    download.add_argument("--out", default=".")
    download.set_defaults(func=cmd_download)
    listing = remote_parser(verbs, "list", "exports of your organisation, newest first")
    listing.add_argument("--limit", type=int, default=100)
    listing.set_defaults(func=cmd_list)
    lock = remote_parser(verbs, "lock", "keep a camera's range past retention")
    lock.add_argument("--camera", required=True)
    lock.add_argument("--start", required=True)
    lock.add_argument("--end", required=True)
    lock.add_argument("--reason", required=True)
    lock.add_argument("--expires", required=True, help="RFC 3339: when the lock lapses")
    lock.set_defaults(func=cmd_lock)
    locks = remote_parser(verbs, "locks", "evidence locks of your organisation")
    locks.add_argument("--camera")
    locks.set_defaults(func=cmd_locks)
    release = remote_parser(verbs, "release", "release an evidence lock")
    release.add_argument("id")
    release.set_defaults(func=cmd_release)


__all__ = ["Refused", "answer", "download", "follow", "register", "remote", "remote_parser"]
