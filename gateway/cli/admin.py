"""``feedgate tenants|principals|cameras|masks|grants|token|audit``: the control API from a
shell.

Every verb calls the gRPC control API (``--server host:port``, default 127.0.0.1:50051 or
``FEEDGATE_SERVER``; ``--token`` or ``FEEDGATE_TOKEN``). Three work offline on a data dir,
for bootstrapping and for oversight bodies handed a copy of the database:

* ``feedgate token issue --local --config FILE`` signs with the local key and audits it;
* ``feedgate audit verify --local --config FILE`` prints ``ok: N entries, M checkpoints``
  (exit 0) or the problem naming the first bad entry (exit 1);
* ``feedgate audit export --local --config FILE --from D --to D`` writes the disclosures CSV.

Exit codes: 0 done, 1 refused or failed (the server's status and message on stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import grpc
    from google.protobuf.message import Message

    from gateway.config import Config

DEFAULT_SERVER = "127.0.0.1:50051"
TIMEOUT_S = 30.0
_M = TypeVar("_M", bound="Message")


class CliError(Exception):
    """Print the message and exit with the code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# ----------------------------------------------------------------------------- the client


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

    def call(self, service: str, method: str, request: Message, response: type[_M]) -> _M:
        fn: grpc.UnaryUnaryMultiCallable[Message, _M] = self._channel.unary_unary(
            f"/feedgate.v1.{service}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response.FromString,
        )
        result: _M = fn(request, metadata=self._metadata, timeout=TIMEOUT_S)
        return result

    def close(self) -> None:
        self._channel.close()


def _client(args: argparse.Namespace) -> Client:
    credentials = None
    if args.tls or args.tls_ca or args.tls_cert:
        from gateway.tls import TlsError, grpc_channel_credentials

        try:
            credentials = grpc_channel_credentials(args.tls_ca, args.tls_cert, args.tls_key)
        except TlsError as exc:
            raise CliError(str(exc), 2) from None
    return Client(args.server, args.token, credentials=credentials)


def _rpc_error(exc: grpc.RpcError) -> CliError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    name = code.name if code is not None else "ERROR"
    return CliError(f"{name}: {details}")


# ----------------------------------------------------------------------------- output


def _dict(msg: Message, *, full: bool = False) -> dict[str, Any]:
    """``full``: keep fields at their zero value (a mask's point at x = 0 keeps its x)."""
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=full
    )


def _show(args: argparse.Namespace, msg: Message, *, full: bool = False) -> None:
    d = _dict(msg, full=full)
    if args.json:
        print(json.dumps(d, indent=2, sort_keys=True))
        return
    for key, value in d.items():
        if isinstance(value, (list, dict)):
            value = json.dumps(value, sort_keys=True)
        print(f"{key}: {value}")


def _table(
    args: argparse.Namespace, items: Sequence[Message], columns: Sequence[str], key: str
) -> None:
    rows = [_dict(m) for m in items]
    if args.json:
        print(json.dumps({key: rows}, indent=2, sort_keys=True))
        return
    _print_table(rows, columns)


def _print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


# ----------------------------------------------------------------------------- parsing helpers


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_ttl(text: str) -> int:
    """'900', '90s', '15m', '2h', '1d' -> seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r}: expected seconds or N[s|m|h|d]")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected YYYY-MM-DD") from None


def _day_range(start: date, end: date) -> tuple[datetime, datetime]:
    """--from D1 --to D2: D1 00:00 UTC up to the end of D2 (inclusive)."""
    lo = datetime(start.year, start.month, start.day, tzinfo=UTC)
    hi = datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1)
    if hi <= lo:
        raise CliError("--to is before --from", 2)
    return lo, hi


def _load_config(path: str | None) -> Config:
    from gateway.config import ConfigError, load_config

    if not path:
        raise CliError("--local needs --config FILE", 2)
    try:
        return load_config(path)
    except ConfigError as exc:
        raise CliError(f"config error: {exc}", 2) from None


def _audit_key_path(config: Config) -> Path:
    # Where Tenancy.open keeps the audit signing key.
    return Path(config.data_dir) / "keys" / "audit-signing.pem"


# ----------------------------------------------------------------------------- tenants


def cmd_tenants_list(args: argparse.Namespace) -> int:
    from feedgate.v1 import tenants_pb2

    resp = _client(args).call(
        "TenantService",
        "ListTenants",
        tenants_pb2.ListTenantsRequest(),
        tenants_pb2.ListTenantsResponse,
    )
    _table(args, resp.tenants, ("id", "name", "kind", "status"), "tenants")
    return 0


def cmd_tenants_show(args: argparse.Namespace) -> int:
    from feedgate.v1 import common_pb2, tenants_pb2

    resp = _client(args).call(
        "TenantService", "GetTenant", tenants_pb2.GetTenantRequest(id=args.id), common_pb2.Tenant
    )
    _show(args, resp)
    return 0


def cmd_tenants_create(args: argparse.Namespace) -> int:
    from feedgate.v1 import common_pb2, tenants_pb2

    tenant = common_pb2.Tenant(id=args.id, name=args.name, kind=args.kind)
    if args.jwks_url or args.issuer or args.algorithm:
        tenant.jwks_url = args.jwks_url or ""
        tenant.issuer = args.issuer or ""
        tenant.algorithms.extend(args.algorithm or [])
    method = "UpdateTenant" if args.update else "CreateTenant"
    resp = _client(args).call(
        "TenantService", method, tenants_pb2.PutTenantRequest(tenant=tenant), common_pb2.Tenant
    )
    _show(args, resp)
    return 0


def _set_status(args: argparse.Namespace, status: str) -> int:
    from feedgate.v1 import common_pb2, tenants_pb2

    req = tenants_pb2.SetTenantStatusRequest(id=args.id, status=status, reason=args.reason or "")
    resp = _client(args).call("TenantService", "SetTenantStatus", req, common_pb2.Tenant)
    _show(args, resp)
    return 0


def cmd_tenants_suspend(args: argparse.Namespace) -> int:
    return _set_status(args, "suspended")


def cmd_tenants_activate(args: argparse.Namespace) -> int:
    return _set_status(args, "active")


# ----------------------------------------------------------------------------- principals


def cmd_principals_list(args: argparse.Namespace) -> int:
    from feedgate.v1 import tenants_pb2

    resp = _client(args).call(
        "TenantService",
        "ListPrincipals",
        tenants_pb2.ListPrincipalsRequest(tenant_id=args.tenant or ""),
        tenants_pb2.ListPrincipalsResponse,
    )
    _table(
        args,
        resp.principals,
        ("id", "tenant_id", "name", "kind", "roles", "disabled", "has_digest"),
        "principals",
    )
    return 0


def cmd_principals_put(args: argparse.Namespace) -> int:
    from feedgate.v1 import common_pb2, tenants_pb2

    password = ""
    if args.digest_password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise CliError("--digest-password-stdin: no password on standard input", 2)
    req = tenants_pb2.PutPrincipalRequest(
        principal=common_pb2.Principal(
            id=args.id,
            tenant_id=args.tenant,
            name=args.name,
            kind=args.kind,
            roles=_csv(args.roles or ""),
            disabled=args.disabled,
        ),
        digest_password=password,
        clear_digest=args.clear_digest,
    )
    resp = _client(args).call("TenantService", "PutPrincipal", req, common_pb2.Principal)
    _show(args, resp)
    return 0


def cmd_principals_delete(args: argparse.Namespace) -> int:
    from feedgate.v1 import tenants_pb2

    _client(args).call(
        "TenantService",
        "DeletePrincipal",
        tenants_pb2.DeletePrincipalRequest(id=args.id),
        tenants_pb2.DeletePrincipalResponse,
    )
    print(f"deleted principal {args.id}")
    return 0


# ----------------------------------------------------------------------------- cameras


def cmd_cameras_list(args: argparse.Namespace) -> int:
    from feedgate.v1 import cameras_pb2

    resp = _client(args).call(
        "CameraService",
        "ListCameras",
        cameras_pb2.ListCamerasRequest(owner_tenant=args.owner or ""),
        cameras_pb2.ListCamerasResponse,
    )
    _table(
        args,
        resp.cameras,
        ("id", "owner_tenant", "name", "tags", "area_type", "retention_days"),
        "cameras",
    )
    return 0


def cmd_cameras_show(args: argparse.Namespace) -> int:
    from feedgate.v1 import cameras_pb2, common_pb2

    resp = _client(args).call(
        "CameraService", "GetCamera", cameras_pb2.GetCameraRequest(id=args.id), common_pb2.Camera
    )
    _show(args, resp)
    return 0


def cmd_cameras_put(args: argparse.Namespace) -> int:
    from feedgate.v1 import cameras_pb2, common_pb2

    camera = common_pb2.Camera(
        id=args.id,
        owner_tenant=args.owner,
        name=args.name or "",
        tags=_csv(args.tags or ""),
        location=args.location or "",
        area_type=args.area_type or "",
        retention_days=args.retention_days or 0,
    )
    resp = _client(args).call(
        "CameraService", "PutCamera", cameras_pb2.PutCameraRequest(camera=camera), common_pb2.Camera
    )
    _show(args, resp)
    return 0


def cmd_cameras_delete(args: argparse.Namespace) -> int:
    from feedgate.v1 import cameras_pb2

    _client(args).call(
        "CameraService",
        "DeleteCamera",
        cameras_pb2.DeleteCameraRequest(id=args.id),
        cameras_pb2.DeleteCameraResponse,
    )
    print(f"deleted camera {args.id}")
    return 0


# ----------------------------------------------------------------------------- masks


def parse_points(text: str) -> list[tuple[float, float]]:
    """'0.1,0.1 0.5,0.1 0.5,0.4' -> [(0.1, 0.1), (0.5, 0.1), (0.5, 0.4)]. Ranges and counts
    are the server's to check (it names the offending field)."""
    points: list[tuple[float, float]] = []
    for part in text.split():
        xs, sep, ys = part.partition(",")
        try:
            if not sep:
                raise ValueError
            points.append((float(xs), float(ys)))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{part!r}: expected space-separated x,y pairs in 0..1"
            ) from None
    if not points:
        raise argparse.ArgumentTypeError('no points: expected "x,y x,y x,y ..."')
    return points


def cmd_masks_list(args: argparse.Namespace) -> int:
    from feedgate.v1 import masks_pb2

    resp = _client(args).call(
        "MaskService",
        "ListMasks",
        masks_pb2.ListMasksRequest(camera_id=args.camera or ""),
        masks_pb2.ListMasksResponse,
    )
    if args.json:
        rows = [_dict(m, full=True) for m in resp.masks]
        print(json.dumps({"masks": rows}, indent=2, sort_keys=True))
        return 0
    # The table shows how many points a mask has; --json gives the coordinates.
    rows = [{**_dict(m), "points": len(m.points)} for m in resp.masks]
    _print_table(rows, ("id", "camera_id", "kind", "tenant_kinds", "points", "label"))
    return 0


def cmd_masks_put(args: argparse.Namespace) -> int:
    from feedgate.v1 import masks_pb2

    mask = masks_pb2.Mask(
        id=args.id,
        camera_id=args.camera,
        points=[masks_pb2.Point(x=x, y=y) for x, y in args.points],
        kind=args.kind or "",
        tenant_kinds=_csv(args.tenant_kinds or ""),
        label=args.label or "",
    )
    resp = _client(args).call(
        "MaskService", "PutMask", masks_pb2.PutMaskRequest(mask=mask), masks_pb2.Mask
    )
    _show(args, resp, full=True)
    return 0


def cmd_masks_delete(args: argparse.Namespace) -> int:
    from feedgate.v1 import masks_pb2

    _client(args).call(
        "MaskService",
        "DeleteMask",
        masks_pb2.DeleteMaskRequest(id=args.id),
        masks_pb2.DeleteMaskResponse,
    )
    print(f"deleted mask {args.id}")
    return 0


# ----------------------------------------------------------------------------- grants


def cmd_grants_list(args: argparse.Namespace) -> int:
    from feedgate.v1 import grants_pb2

    req = grants_pb2.ListGrantsRequest(
        owner_tenant=args.owner or "",
        grantee_tenant=args.grantee or "",
        include_revoked=args.include_revoked,
    )
    resp = _client(args).call("GrantService", "ListGrants", req, grants_pb2.ListGrantsResponse)
    _table(
        args,
        resp.grants,
        (
            "id",
            "owner_tenant",
            "grantee_tenant",
            "camera_ids",
            "camera_tags",
            "rights",
            "revoked_at",
        ),
        "grants",
    )
    return 0


def cmd_grants_show(args: argparse.Namespace) -> int:
    from feedgate.v1 import common_pb2, grants_pb2

    resp = _client(args).call(
        "GrantService", "GetGrant", grants_pb2.GetGrantRequest(id=args.id), common_pb2.Grant
    )
    _show(args, resp)
    return 0


def _windows(texts: Iterable[str]) -> list[Any]:
    from feedgate.v1 import common_pb2

    from tenants.model import DomainError, TimeWindow

    out = []
    for text in texts:
        try:
            w = TimeWindow.parse(text)
        except DomainError as exc:
            raise CliError(f"--window: {exc}", 2) from None
        days = [] if w.weekdays == frozenset(range(7)) else sorted(w.weekdays)
        out.append(
            common_pb2.TimeWindow(start=f"{w.start:%H:%M}", end=f"{w.end:%H:%M}", weekdays=days)
        )
    return out


def cmd_grants_create(args: argparse.Namespace) -> int:
    from feedgate.v1 import common_pb2, grants_pb2

    if not args.cameras and not args.tags:
        raise CliError("grants create: give --cameras or --tags", 2)
    constraints = common_pb2.Constraints(
        time_windows=_windows(args.window or ()),
        purpose_required=args.purpose_required,
        quality_cap=args.quality or "",
        ptz_priority=args.ptz_priority or 0,
    )
    if args.max_streams is not None:
        constraints.max_concurrent_streams = args.max_streams
    if args.max_playback_age is not None:
        constraints.max_playback_age_s = args.max_playback_age
    grant = common_pb2.Grant(
        id=args.id,
        owner_tenant=args.owner,
        grantee_tenant=args.grantee,
        camera_ids=_csv(args.cameras or ""),
        camera_tags=_csv(args.tags or ""),
        rights=_csv(args.rights),
        constraints=constraints,
    )
    resp = _client(args).call(
        "GrantService", "PutGrant", grants_pb2.PutGrantRequest(grant=grant), common_pb2.Grant
    )
    _show(args, resp)
    return 0


def cmd_grants_revoke(args: argparse.Namespace) -> int:
    from feedgate.v1 import common_pb2, grants_pb2

    req = grants_pb2.RevokeGrantRequest(id=args.id, reason=args.reason or "")
    resp = _client(args).call("GrantService", "RevokeGrant", req, common_pb2.Grant)
    _show(args, resp)
    return 0


# ----------------------------------------------------------------------------- tokens


def cmd_token_issue(args: argparse.Namespace) -> int:
    from feedgate.v1 import tokens_pb2

    req = tokens_pb2.IssueTokenRequest(
        tenant=args.tenant,
        subject=args.subject,
        cameras=args.camera or [],
        roles=args.role or [],
        purpose=args.purpose or "",
    )
    if args.ttl is not None:
        req.ttl_seconds = min(args.ttl, 2**31 - 1)
    if args.local:
        resp = _issue_local(args, req)
    else:
        resp = _client(args).call("TokenService", "IssueToken", req, tokens_pb2.IssueTokenResponse)
    print(resp.token)
    return 0


def _issue_local(args: argparse.Namespace, req: Any) -> Any:
    from gateway.grpc.converters import token_body, token_pb
    from gateway.grpc.interceptor import STATUS
    from gateway.tenancy import Tenancy
    from tenants.control.errors import from_exception
    from tenants.control.tokens import issue_token, plan_token

    config = _load_config(args.config)
    tenancy = Tenancy.open(config)
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
        view = issue_token(
            tenancy.issuer,
            tenancy.verifier,
            tenancy.audit,
            plan,
            actor_tenant=None,
            actor=f"local:{user}",
            via="cli --local",
        )
        return token_pb(view)
    finally:
        asyncio.run(tenancy.close())


# ----------------------------------------------------------------------------- audit


def _print_report(
    ok: bool, entries: int, checkpoints: int, problem: str | None, first_bad: int | None
) -> int:
    if ok:
        print(f"ok: {entries} entries, {checkpoints} checkpoints")
        return 0
    where = f" (first bad entry: {first_bad})" if first_bad is not None else ""
    print(f"FAILED: {problem}{where}; {entries} entries, {checkpoints} checkpoints")
    return 1


def cmd_audit_verify(args: argparse.Namespace) -> int:
    if args.local:
        from tenants.audit import verify_log
        from tenants.db import Database
        from tenants.tokens import SigningKey

        config = _load_config(args.config)
        key_path = _audit_key_path(config)
        if not key_path.exists():
            raise CliError(f"no audit signing key at {key_path}", 2)
        public = SigningKey.load_or_create(key_path).private_key.public_key()
        db = Database.open(config.database_url)
        try:
            r = verify_log(db, public)
        finally:
            db.close()
        return _print_report(r.ok, r.entries, r.checkpoints, r.problem, r.first_bad_seq)

    from feedgate.v1 import audit_pb2

    rep = _client(args).call(
        "AuditService", "Verify", audit_pb2.VerifyRequest(), audit_pb2.VerifyReport
    )
    first = rep.first_bad_seq if rep.HasField("first_bad_seq") else None
    return _print_report(rep.ok, rep.entries, rep.checkpoints, rep.problem, first)


def cmd_audit_export(args: argparse.Namespace) -> int:
    start, end = _day_range(args.from_day, args.to_day)
    if args.local:
        import io

        from tenants.audit import export_disclosures
        from tenants.db import Database

        config = _load_config(args.config)
        db = Database.open(config.database_url)
        try:
            buf = io.StringIO()
            rows = export_disclosures(db, start, end, buf)
        finally:
            db.close()
        text = buf.getvalue()
    else:
        from feedgate.v1 import audit_pb2
        from google.protobuf.timestamp_pb2 import Timestamp

        lo, hi = Timestamp(), Timestamp()
        lo.FromDatetime(start)
        hi.FromDatetime(end)
        resp = _client(args).call(
            "AuditService",
            "ExportDisclosures",
            audit_pb2.ExportDisclosuresRequest(from_time=lo, to_time=hi),
            audit_pb2.ExportDisclosuresResponse,
        )
        text, rows = resp.csv, resp.rows
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8", newline="")
        print(f"{rows} disclosures written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_audit_figures(args: argparse.Namespace) -> int:
    """The month's published, anonymised figures (what /transparency serves)."""
    if not args.local:
        raise CliError("figures are built from the data dir: use --local --config FILE", 2)
    from tenants.db import Database
    from tenants.months import previous_month
    from tenants.transparency import ACTIVITIES, monthly_report, publishable

    config = _load_config(args.config)
    period = args.period or previous_month(datetime.now(UTC))
    db = Database.open(config.database_url)
    ledger_db = None
    try:
        viewing = None
        if config.billing.enabled:
            from billing.ledger import Ledger

            ledger_db = Database.open(config.billing.ledger) if config.billing.ledger else db
            viewing = Ledger(ledger_db).viewing_by_tenant(period)
        try:
            report = publishable(monthly_report(db, period, viewing_ms_by_tenant=viewing))
        except ValueError as exc:
            raise CliError(str(exc), 2) from None
    finally:
        if ledger_db is not None and ledger_db is not db:
            ledger_db.close()
        db.close()
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    print(f"CCTV network, {report['period']}: {report['cameras']} cameras,")
    print(f"  {report['cameras_with_privacy_masks']} with privacy masks")
    columns = ["organisations", "grants", *ACTIVITIES]
    if any("viewing_hours" in v for v in report["by_organisation_kind"].values()):
        columns.append("viewing_hours")
    print(f"  {'kind':<12}" + "".join(f"{c:>15}" for c in columns))
    for kind, entry in report["by_organisation_kind"].items():
        print(f"  {kind:<12}" + "".join(f"{entry.get(c, '')!s:>15}" for c in columns))
    print(f"  ({report['suppression']})")
    return 0


def cmd_audit_list(args: argparse.Namespace) -> int:
    from feedgate.v1 import audit_pb2
    from google.protobuf.timestamp_pb2 import Timestamp

    req = audit_pb2.ListEntriesRequest(limit=args.limit, page=args.page)
    if args.from_day is not None:
        ts = Timestamp()
        ts.FromDatetime(_day_range(args.from_day, args.from_day)[0])
        req.from_time.CopyFrom(ts)
    if args.to_day is not None:
        ts = Timestamp()
        ts.FromDatetime(_day_range(args.to_day, args.to_day)[1])
        req.to_time.CopyFrom(ts)
    resp = _client(args).call("AuditService", "ListEntries", req, audit_pb2.ListEntriesResponse)
    if args.json:
        print(
            json.dumps(
                {"entries": [_dict(e) for e in resp.entries], "more": resp.more},
                indent=2,
                sort_keys=True,
            )
        )
        return 0
    for e in resp.entries:
        when = e.time.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        who = "/".join(x for x in (e.tenant, e.principal) if x) or "-"
        print(
            f"{e.seq}\t{when}\t{e.action}\t{who}\t{e.camera or '-'}\t{e.outcome}\t{e.detail_json}"
        )
    if resp.more:
        print(f"(more: --page {args.page + 1})", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- registration


def _run(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn RPC failures and CliErrors into a message on stderr and an exit code."""

    def run(args: argparse.Namespace) -> int:
        import grpc

        try:
            return fn(args)
        except CliError as exc:
            print(f"feedgate: {exc}", file=sys.stderr)
            return exc.code
        except grpc.RpcError as exc:
            print(f"feedgate: {_rpc_error(exc)}", file=sys.stderr)
            return 1

    run.__name__ = fn.__name__
    return run


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--server",
        default=os.environ.get("FEEDGATE_SERVER") or DEFAULT_SERVER,
        help=f"control API host:port (default $FEEDGATE_SERVER or {DEFAULT_SERVER})",
    )
    p.add_argument(
        "--token",
        default=os.environ.get("FEEDGATE_TOKEN"),
        help="bearer token (default $FEEDGATE_TOKEN)",
    )
    p.add_argument("--json", action="store_true", help="JSON output")
    tls = p.add_argument_group("TLS (a control API with grpc.tls_cert set)")
    tls.add_argument("--tls", action="store_true", help="use TLS, trusting the system's CAs")
    env = os.environ.get
    tls.add_argument("--tls-ca", default=env("FEEDGATE_TLS_CA"), help="trust this CA (PEM)")
    tls.add_argument("--tls-cert", default=env("FEEDGATE_TLS_CERT"), help="client certificate")
    tls.add_argument("--tls-key", default=env("FEEDGATE_TLS_KEY"), help="client certificate's key")
    return p


def _local(p: argparse.ArgumentParser) -> None:
    p.add_argument("--local", action="store_true", help="work on the data dir, not the server")
    p.add_argument("--config", help="the gateway's TOML config (with --local)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the admin verbs to the ``feedgate`` command's subparsers."""
    common = _common()

    def verb(
        group: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        fn: Callable[[argparse.Namespace], int],
        help: str,
    ) -> argparse.ArgumentParser:
        p = group.add_parser(name, help=help, parents=[common])
        p.set_defaults(func=_run(fn))
        return p

    def noun(name: str, help: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        p = sub.add_parser(name, help=help)
        return p.add_subparsers(dest=f"{name}_command", required=True, metavar="VERB")

    # tenants
    g = noun("tenants", "tenants of the network (platform admins)")
    verb(g, "list", cmd_tenants_list, "list tenants")
    verb(g, "show", cmd_tenants_show, "show a tenant").add_argument("id")
    p = verb(g, "create", cmd_tenants_create, "create a tenant")
    p.add_argument("--id", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--kind", required=True, help="council, police, retail, ...")
    p.add_argument("--jwks-url", help="the tenant's own identity provider's JWKS (https)")
    p.add_argument("--issuer", help="the iss its identity provider's tokens carry")
    p.add_argument("--algorithm", action="append", help="pinned algorithm, e.g. ES256")
    p.add_argument("--update", action="store_true", help="update (upsert) instead of create")
    for name, fn, what in (
        ("suspend", cmd_tenants_suspend, "suspend a tenant: its sessions end"),
        ("activate", cmd_tenants_activate, "activate a suspended tenant"),
    ):
        p = verb(g, name, fn, what)
        p.add_argument("id")
        p.add_argument("--reason", help="recorded in the audit log")

    # principals
    g = noun("principals", "users and services of a tenant")
    verb(g, "list", cmd_principals_list, "list principals").add_argument("--tenant")
    p = verb(g, "put", cmd_principals_put, "create or update a principal")
    p.add_argument("--id", required=True)
    p.add_argument("--tenant", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--kind", default="user", help="user or service")
    p.add_argument("--roles", help="comma-separated: viewer,operator,investigator,...")
    p.add_argument("--disabled", action="store_true")
    p.add_argument(
        "--digest-password-stdin",
        action="store_true",
        help="read an RTSP Digest password from the first line of standard input",
    )
    p.add_argument("--clear-digest", action="store_true", help="remove the Digest password")
    verb(g, "delete", cmd_principals_delete, "delete a principal").add_argument("id")

    # cameras
    g = noun("cameras", "cameras and their owners")
    verb(g, "list", cmd_cameras_list, "list cameras").add_argument("--owner")
    verb(g, "show", cmd_cameras_show, "show a camera").add_argument("id")
    p = verb(g, "put", cmd_cameras_put, "create or update a camera")
    p.add_argument("--id", required=True)
    p.add_argument("--owner", required=True)
    p.add_argument("--name")
    p.add_argument("--tags", help="comma-separated")
    p.add_argument("--location")
    p.add_argument("--area-type", help="high_street, transport_hub, ...")
    p.add_argument("--retention-days", type=int)
    verb(g, "delete", cmd_cameras_delete, "delete a camera").add_argument("id")

    # masks
    g = noun("masks", "privacy masks on cameras (changes are audited)")
    verb(g, "list", cmd_masks_list, "list masks").add_argument("--camera")
    p = verb(g, "put", cmd_masks_put, "create or update a mask")
    p.add_argument("--id", required=True)
    p.add_argument("--camera", required=True)
    p.add_argument(
        "--points",
        required=True,
        type=parse_points,
        help='polygon corners, normalised 0..1 from the top left: "x,y x,y x,y ..." (3..64)',
    )
    p.add_argument("--kind", help="permanent (default) or liftable")
    p.add_argument("--tenant-kinds", help="comma-separated: retail,sports,... (default: all)")
    p.add_argument("--label")
    verb(g, "delete", cmd_masks_delete, "delete a mask").add_argument("id")

    # grants
    g = noun("grants", "who may use whose cameras")
    p = verb(g, "list", cmd_grants_list, "list grants")
    p.add_argument("--owner")
    p.add_argument("--grantee")
    p.add_argument("--include-revoked", action="store_true")
    verb(g, "show", cmd_grants_show, "show a grant").add_argument("id")
    p = verb(g, "create", cmd_grants_create, "create or update a grant")
    p.add_argument("--id", required=True)
    p.add_argument("--owner", required=True)
    p.add_argument("--grantee", required=True)
    p.add_argument("--cameras", help="comma-separated camera ids")
    p.add_argument("--tags", help="comma-separated camera tags")
    p.add_argument("--rights", required=True, help="comma-separated: live,playback,ptz,...")
    p.add_argument(
        "--window", action="append", help="HH:MM-HH:MM[@d,d] in UTC, Monday = 0 (repeatable)"
    )
    p.add_argument("--max-streams", type=int)
    p.add_argument("--max-playback-age", type=int, help="seconds")
    p.add_argument("--purpose-required", action="store_true")
    p.add_argument("--quality", help="main or sub")
    p.add_argument("--ptz-priority", type=int)
    p = verb(g, "revoke", cmd_grants_revoke, "revoke a grant")
    p.add_argument("id")
    p.add_argument("--reason", help="recorded in the audit log")

    # token
    g = noun("token", "bearer tokens")
    p = verb(g, "issue", cmd_token_issue, "issue a token (prints only the token)")
    p.add_argument("--tenant", required=True)
    p.add_argument("--subject", required=True, help="a principal id of the tenant")
    p.add_argument("--camera", action="append", help="limit to this camera (repeatable)")
    p.add_argument("--ttl", type=parse_ttl, help="seconds or 15m, 2h, 1d (default 15m)")
    p.add_argument("--role", action="append", help="limit to this role (repeatable)")
    p.add_argument("--purpose")
    _local(p)

    # audit
    g = noun("audit", "the tamper-evident audit log")
    _local(verb(g, "verify", cmd_audit_verify, "verify every hash and checkpoint"))
    p = verb(g, "export", cmd_audit_export, "export disclosures as CSV")
    p.add_argument("--from", dest="from_day", type=parse_day, required=True, help="YYYY-MM-DD")
    p.add_argument(
        "--to", dest="to_day", type=parse_day, required=True, help="YYYY-MM-DD (inclusive)"
    )
    p.add_argument("--out", help="write to this file (default: standard output)")
    _local(p)
    p = verb(g, "figures", cmd_audit_figures, "the month's published anonymised figures")
    p.add_argument("--period", help="YYYY-MM (default: last full month)")
    _local(p)
    p = verb(g, "list", cmd_audit_list, "list audit entries")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--page", type=int, default=0)
    p.add_argument("--from", dest="from_day", type=parse_day, help="YYYY-MM-DD")
    p.add_argument("--to", dest="to_day", type=parse_day, help="YYYY-MM-DD (inclusive)")


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry (``python -m gateway.cli.admin``), the same verbs as ``feedgate``."""
    parser = argparse.ArgumentParser(prog="feedgate")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
