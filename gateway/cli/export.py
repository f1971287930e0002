"""``feedgate export``: evidence exports from the command line.

``feedgate export verify FILE MANIFEST (--jwks JWKS.json | --key KEY.pem)`` checks an export
offline: the file's size and SHA-256 against its manifest, and the manifest's Ed25519 signature
against keys the verifier trusts (the gateway's published JWKS saved to a file, or its evidence
key's PEM). Exit 0 when it verifies, 1 when it does not (saying why), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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


__all__ = ["register"]
