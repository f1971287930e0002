"""``feedgate tenants|principals|cameras|masks|grants|token|audit``: the control API from a
shell, as one table of verbs (``gateway/cli/verbs.py`` says how a row becomes a subcommand).

Every verb calls the gRPC control API (``--server host:port``, default 127.0.0.1:50051 or
``FEEDGATE_SERVER``; ``--token`` or ``FEEDGATE_TOKEN``). Three work offline on a data dir
(``--local --config FILE``), for bootstrapping and for oversight bodies handed a copy of the
database: ``token issue`` signs with the local key and audits it; ``audit verify`` and
``audit export`` (``gateway/cli/audit.py``).

Exit codes: 0 done, 1 refused or failed (the server's status and message on stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Sequence
from typing import Any

from gateway.cli import audit, verbs
from gateway.cli.client import CliError, request
from gateway.cli.parsing import csv_list, load_config, parse_points, parse_ttl, windows
from gateway.cli.verbs import ID, REASON, Fields, Rpc, Verb, arg, crud, said, shown

NOUNS = {
    "tenants": "tenants of the network (platform admins)",
    "principals": "users and services of a tenant",
    "cameras": "cameras and their owners",
    "masks": "privacy masks on cameras (changes are audited)",
    "grants": "who may use whose cameras",
    "token": "bearer tokens",
    "audit": "the tamper-evident audit log",
}

# ---- request bodies of the writing verbs (proto-JSON; None: left unset) --------------------


def tenant_fields(args: argparse.Namespace) -> dict[str, Any]:
    tenant = {"id": args.id, "name": args.name, "kind": args.kind, "jwks_url": args.jwks_url,
              "issuer": args.issuer, "algorithms": args.algorithm or []}  # fmt: skip
    return {"tenant": tenant}


def status_fields(status: str) -> Fields:
    return lambda args: {"id": args.id, "status": status, "reason": args.reason}


def _stdin_secret(flag: str) -> str:
    secret = sys.stdin.readline().rstrip("\r\n")
    if not secret:
        raise CliError(f"{flag}: no password on standard input", 2)
    return secret


def principal_fields(args: argparse.Namespace) -> dict[str, Any]:
    if args.digest_password_stdin and args.password_stdin:
        raise CliError("give --digest-password-stdin or --password-stdin, one per call", 2)
    digest = _stdin_secret("--digest-password-stdin") if args.digest_password_stdin else None
    password = _stdin_secret("--password-stdin") if args.password_stdin else None
    principal = {"id": args.id, "tenant_id": args.tenant, "name": args.name, "kind": args.kind,
                 "roles": csv_list(args.roles), "disabled": args.disabled}  # fmt: skip
    return {"principal": principal, "digest_password": digest, "clear_digest": args.clear_digest,
            "password": password, "clear_password": args.clear_password}  # fmt: skip


def camera_fields(args: argparse.Namespace) -> dict[str, Any]:
    camera = {"id": args.id, "owner_tenant": args.owner, "name": args.name,
              "tags": csv_list(args.tags), "location": args.location,
              "area_type": args.area_type, "retention_days": args.retention_days,
              "latitude": args.latitude, "longitude": args.longitude}  # fmt: skip
    return {"camera": camera}


def onvif_fields(args: argparse.Namespace) -> dict[str, Any]:
    if args.password_stdin and args.clear_password:
        raise CliError("give --password-stdin or --clear-password, not both", 2)
    d: dict[str, Any] = {"camera_id": args.id, "onvif_url": args.url,
                         "onvif_username": args.username, "onvif_profile": args.profile or "",
                         "clear_password": args.clear_password}  # fmt: skip
    if args.password_stdin:
        d["password"] = _stdin_secret("--password-stdin")
    return d


def camera_id_fields(args: argparse.Namespace) -> dict[str, Any]:
    return {"camera_id": args.id}


def mask_fields(args: argparse.Namespace) -> dict[str, Any]:
    mask = {"id": args.id, "camera_id": args.camera,
            "points": [{"x": x, "y": y} for x, y in args.points], "kind": args.kind,
            "tenant_kinds": csv_list(args.tenant_kinds), "label": args.label}  # fmt: skip
    return {"mask": mask}


def grant_fields(args: argparse.Namespace) -> dict[str, Any]:
    if not args.cameras and not args.tags:
        raise CliError("grants create: give --cameras or --tags", 2)
    constraints = {"time_windows": windows(args.window or ()),
                   "max_concurrent_streams": args.max_streams,
                   "max_playback_age_s": args.max_playback_age,
                   "purpose_required": args.purpose_required, "quality_cap": args.quality,
                   "ptz_priority": args.ptz_priority}  # fmt: skip
    grant = {"id": args.id, "owner_tenant": args.owner, "grantee_tenant": args.grantee,
             "camera_ids": csv_list(args.cameras), "camera_tags": csv_list(args.tags),
             "rights": csv_list(args.rights), "constraints": constraints}  # fmt: skip
    return {"grant": grant}


def token_fields(args: argparse.Namespace) -> dict[str, Any]:
    ttl = min(args.ttl, 2**31 - 1) if args.ttl is not None else None
    return {"tenant": args.tenant, "subject": args.subject, "cameras": args.camera or [],
            "roles": args.role or [], "purpose": args.purpose, "ttl_seconds": ttl}  # fmt: skip


def _token(args: argparse.Namespace, resp: Any) -> int:
    print(resp.token)
    return 0


def issue_local(args: argparse.Namespace) -> int:
    """Sign with the data dir's key and audit it as ``local:<os user>``."""
    from feedgate.v1 import tokens_pb2

    from gateway.grpc.converters import token_body
    from gateway.grpc.interceptor import STATUS
    from gateway.tenancy import Tenancy
    from tenants.control.errors import from_exception
    from tenants.control.tokens import issue_token, plan_token

    req = request("TokenService", "IssueToken", token_fields(args))
    assert isinstance(req, tokens_pb2.IssueTokenRequest)
    tenancy = Tenancy.open(load_config(args.config))
    try:
        try:
            plan = plan_token(tenancy.store, token_body(req), None)
        except Exception as exc:
            error = from_exception(exc)
            if error is None:
                raise
            raise CliError(f"{STATUS[error.code].name}: {error}") from None
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
        view = issue_token(tenancy.issuer, tenancy.verifier, tenancy.audit, plan,
                           actor_tenant=None, actor=f"local:{user}", via="cli --local")  # fmt: skip
    finally:
        asyncio.run(tenancy.close())
    print(view.token)
    return 0


# ---- the table --------------------------------------------------------------------------------

_PUT_TENANT = (
    arg("--id", required=True), arg("--name", required=True),
    arg("--kind", required=True, help="council, police, retail, ..."),
    arg("--jwks-url", help="the tenant's own identity provider's JWKS (https)"),
    arg("--issuer", help="the iss its identity provider's tokens carry"),
    arg("--algorithm", action="append", help="pinned algorithm, e.g. ES256"),
)  # fmt: skip
_PUT_PRINCIPAL = (
    arg("--id", required=True), arg("--tenant", required=True), arg("--name", required=True),
    arg("--kind", default="user", help="user or service"),
    arg("--roles", help="comma-separated: viewer,operator,investigator,..."),
    arg("--disabled", action="store_true"),
    arg("--digest-password-stdin", action="store_true",
        help="read an RTSP Digest password from the first line of standard input"),
    arg("--clear-digest", action="store_true", help="remove the Digest password"),
    arg("--password-stdin", action="store_true",
        help="read a console sign-in password (12+ characters) from standard input"),
    arg("--clear-password", action="store_true", help="remove the console password"),
)  # fmt: skip
_PUT_CAMERA = (
    arg("--id", required=True), arg("--owner", required=True), arg("--name"),
    arg("--tags", help="comma-separated"), arg("--location"),
    arg("--area-type", help="high_street, transport_hub, ..."),
    arg("--retention-days", type=int),
    arg("--latitude", type=float, help="WGS84 degrees, with --longitude (the console's map)"),
    arg("--longitude", type=float),
)  # fmt: skip
_SET_ONVIF = (
    ID, arg("--url", required=True, help="http://host:port of the camera's ONVIF device service"),
    arg("--username", required=True, help="the ONVIF user feedgate signs in as"),
    arg("--profile", help="the media profile token (default: the first with PTZ)"),
    arg("--password-stdin", action="store_true",
        help="read the ONVIF password from standard input (kept sealed; never shown)"),
    arg("--clear-password", action="store_true", help="remove the stored ONVIF password"),
)  # fmt: skip
_PUT_MASK = (
    arg("--id", required=True), arg("--camera", required=True),
    arg("--points", required=True, type=parse_points,
        help='polygon corners, normalised 0..1 from the top left: "x,y x,y x,y ..." (3..64)'),
    arg("--kind", help="permanent (default) or liftable"),
    arg("--tenant-kinds", help="comma-separated: retail,sports,... (default: all)"),
    arg("--label"),
)  # fmt: skip
_PUT_GRANT = (
    arg("--id", required=True), arg("--owner", required=True), arg("--grantee", required=True),
    arg("--cameras", help="comma-separated camera ids"),
    arg("--tags", help="comma-separated camera tags"),
    arg("--rights", required=True, help="comma-separated: live,playback,ptz,..."),
    arg("--window", action="append", help="HH:MM-HH:MM[@d,d] in UTC, Monday = 0 (repeatable)"),
    arg("--max-streams", type=int), arg("--max-playback-age", type=int, help="seconds"),
    arg("--purpose-required", action="store_true"), arg("--quality", help="main or sub"),
    arg("--ptz-priority", type=int),
)  # fmt: skip
_ISSUE = (
    arg("--tenant", required=True),
    arg("--subject", required=True, help="a principal id of the tenant"),
    arg("--camera", action="append", help="limit to this camera (repeatable)"),
    arg("--ttl", type=parse_ttl, help="seconds or 15m, 2h, 1d (default 15m)"),
    arg("--role", action="append", help="limit to this role (repeatable)"),
    arg("--purpose"),
)  # fmt: skip


def _tenant_put(args: argparse.Namespace) -> int:
    method = "UpdateTenant" if args.update else "CreateTenant"
    return Rpc("TenantService", method, tenant_fields, shown())(args)


VERBS: list[Verb] = [
    *crud("tenants", "tenant", "TenantService", ("id", "name", "kind", "status"),
          verbs=("list", "show")),
    Verb("tenants", "create", "create a tenant", _tenant_put,
         (*_PUT_TENANT, arg("--update", action="store_true",
                            help="update (upsert) instead of create"))),
    Verb("tenants", "suspend", "suspend a tenant: its sessions end",
         Rpc("TenantService", "SetTenantStatus", status_fields("suspended"), shown()),
         (ID, REASON)),
    Verb("tenants", "activate", "activate a suspended tenant",
         Rpc("TenantService", "SetTenantStatus", status_fields("active"), shown()), (ID, REASON)),
    *crud("principals", "principal", "TenantService",
          ("id", "tenant_id", "name", "kind", "roles", "disabled", "has_digest", "has_password"),
          filters={"tenant_id": arg("--tenant")}, verbs=("list", "delete")),
    Verb("principals", "put", "create or update a principal",
         Rpc("TenantService", "PutPrincipal", principal_fields, shown()), _PUT_PRINCIPAL),
    *crud("cameras", "camera", "CameraService",
          ("id", "owner_tenant", "name", "tags", "area_type", "retention_days"),
          filters={"owner_tenant": arg("--owner")}),
    Verb("cameras", "put", "create or update a camera",
         Rpc("CameraService", "PutCamera", camera_fields, shown()), _PUT_CAMERA),
    Verb("cameras", "onvif-set", "set how feedgate steers a camera over ONVIF (without "
         "--password-stdin the stored password is kept)",
         Rpc("CameraService", "SetCameraOnvif", onvif_fields, shown()), _SET_ONVIF),
    Verb("cameras", "onvif-show", "show a camera's ONVIF settings (never the password)",
         Rpc("CameraService", "GetCameraOnvif", camera_id_fields, shown()), (ID,)),
    Verb("cameras", "onvif-clear", "forget a camera's ONVIF settings",
         Rpc("CameraService", "ClearCameraOnvif", camera_id_fields, said("cleared {id}")),
         (ID,)),
    # The table shows how many points a mask has; --json gives the coordinates.
    *crud("masks", "mask", "MaskService",
          ("id", "camera_id", "kind", "tenant_kinds", "points", "label"),
          filters={"camera_id": arg("--camera")}, verbs=("list", "delete"), full=True,
          summaries={"points": len}),
    Verb("masks", "put", "create or update a mask",
         Rpc("MaskService", "PutMask", mask_fields, shown(full=True)), _PUT_MASK),
    *crud("grants", "grant", "GrantService",
          ("id", "owner_tenant", "grantee_tenant", "camera_ids", "camera_tags", "rights",
           "revoked_at"),
          filters={"owner_tenant": arg("--owner"), "grantee_tenant": arg("--grantee"),
                   "include_revoked": arg("--include-revoked", action="store_true")},
          verbs=("list", "show")),
    Verb("grants", "create", "create or update a grant",
         Rpc("GrantService", "PutGrant", grant_fields, shown()), _PUT_GRANT),
    Verb("grants", "revoke", "revoke a grant",
         Rpc("GrantService", "RevokeGrant", lambda a: {"id": a.id, "reason": a.reason}, shown()),
         (ID, REASON)),
    Verb("token", "issue", "issue a token (prints only the token)",
         Rpc("TokenService", "IssueToken", token_fields, _token), _ISSUE, local=issue_local),
    *audit.VERBS,
]  # fmt: skip


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the admin verbs to the ``feedgate`` command's subparsers."""
    verbs.register(sub, NOUNS, VERBS)


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry (``python -m gateway.cli.admin``), the same verbs as ``feedgate``."""
    parser = argparse.ArgumentParser(prog="feedgate")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
