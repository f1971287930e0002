"""The finance view: usage by tenant and month, invoices, CSV exports and printable invoices.

Plain server-rendered HTML (no template engine, no JavaScript, no network fetches: the chart is
inline SVG), for council finance teams. Every handler checks the caller itself:

- the policy :class:`~tenants.policy.Decision` the bearer middleware put on the request must
  carry the FINANCE or ADMIN role (otherwise a 403 page);
- a user of the platform tenant (``config.grpc.platform_tenant``) sees every tenant; anyone
  else sees only their own tenant's rows and invoices, and another tenant's invoice is a 404
  (not a 403), so invoice ids do not leak.

Money is integer pence and is formatted with integer arithmetic (``£1,234.56``); quantities
are turned into display units with ``Decimal``. Every value put into a page goes through
:func:`html.escape`. Browsers sign in with ``/finance/login?token=...``, which checks the token
with the policy and keeps it in an HttpOnly, SameSite=Strict cookie scoped to ``/finance``; the
token is never logged or echoed.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from html import escape
from typing import NoReturn
from urllib.parse import quote, urlencode

from aiohttp import web

from billing.invoices import InvoiceStore
from billing.ledger import Ledger
from billing.model import BillingError, Invoice, InvoiceStatus, Metric, parse_period, period_of
from gateway.http.keys import DECISION_KEY, GATEWAY_KEY
from tenants.control.rules import FINANCE_ROLES  # the one finance rule
from tenants.model import ID_RE
from tenants.policy import AccessRequest, Action, Decision

__all__ = ["COOKIE", "PAYMENT_TERMS_DAYS", "add_finance_routes", "format_money"]

COOKIE = "feedgate_token"
COOKIE_PATH = "/finance"
PAYMENT_TERMS_DAYS = 30

_PERIOD = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
_INVOICE_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")
# Where the login may send the browser afterwards: a path inside the finance view, nothing else.
_NEXT = re.compile(r"^/finance(/[A-Za-z0-9._~-]+)*/?(\?[A-Za-z0-9=&._~%-]*)?$")
_MAX_TOKEN = 8192

_NDASH = "\u2013"
_SYMBOLS = {"GBP": "£", "EUR": "€", "USD": "$"}
_STATUS_LABEL = {
    InvoiceStatus.DRAFT: "Draft",
    InvoiceStatus.FINALIZED: "Finalised",
    InvoiceStatus.PAID: "Paid",
    InvoiceStatus.VOID: "Void",
}

_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:;"
        " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}


@dataclass(frozen=True)
class _Column:
    label: str
    short: str  # CSV header
    metric: Metric
    size: int  # base units per display unit
    places: int  # decimal places on the page (CSV: 4, exports 0)


COLUMNS: tuple[_Column, ...] = (
    _Column("Live camera-hours", "live_camera_hours", Metric.LIVE_SECONDS, 3_600_000, 2),
    _Column("Playback hours", "playback_hours", Metric.PLAYBACK_SECONDS, 3_600_000, 2),
    _Column("GB delivered", "gb_delivered", Metric.BYTES, 10**9, 2),
    _Column("PTZ minutes", "ptz_minutes", Metric.PTZ_SECONDS, 60_000, 2),
    _Column("Exports", "exports", Metric.EXPORTS, 1, 0),
)


# ------------------------------------------------------------------------------ formatting
def h(value: object) -> str:
    """HTML-escape anything (quotes too: safe in attributes)."""
    return escape(str(value), quote=True)


def format_money(pence: int, currency: str = "GBP") -> str:
    """Integer pence -> ``£1,234.56`` / ``-£12.00``; integer arithmetic only."""
    sign = "-" if pence < 0 else ""
    pounds, rest = divmod(abs(int(pence)), 100)
    symbol = _SYMBOLS.get(currency)
    if symbol is None:
        return f"{sign}{pounds:,}.{rest:02d} {currency}"
    return f"{sign}{symbol}{pounds:,}.{rest:02d}"


def _plain_money(pence: int) -> str:
    """``-1234.56``: for CSV cells (no symbol, no separators)."""
    sign = "-" if pence < 0 else ""
    pounds, rest = divmod(abs(int(pence)), 100)
    return f"{sign}{pounds}.{rest:02d}"


def _quantity(base: int, size: int, places: int) -> Decimal:
    q = Decimal(1).scaleb(-places)
    return (Decimal(base) / Decimal(size)).quantize(q, rounding=ROUND_HALF_UP)


def _fmt_quantity(base: int, col: _Column) -> str:
    return f"{_quantity(base, col.size, col.places):,.{col.places}f}"


_WHOLE_UNITS = frozenset({"export", "month", "credit"})


def _fmt_line_quantity(text: str, unit: str) -> str:
    """An invoice line's decimal text ("1234.5000") -> "1,234.50": whole units (exports,
    months) without decimals, others with 2 to 4 places (as many as are not zero)."""
    try:
        d = Decimal(text)
    except ArithmeticError:
        return text
    if not d.is_finite():
        return text
    d = d.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
    if unit in _WHOLE_UNITS and d == d.to_integral_value():
        return f"{d:,.0f}"
    places = 4
    while places > 2 and d == d.quantize(Decimal(1).scaleb(-(places - 1))):
        places -= 1
    return f"{d:,.{places}f}"


def _fmt_unit_price(pence_text: str, currency: str) -> str:
    """A unit price in pence (decimal text) -> pounds, 2 to 4 places: ``£0.4550``."""
    try:
        d = Decimal(pence_text) / 100
    except ArithmeticError:
        return pence_text
    d = d.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
    places = 4
    while places > 2 and d == d.quantize(Decimal(1).scaleb(-(places - 1))):
        places -= 1
    sign = "-" if d < 0 else ""
    symbol = _SYMBOLS.get(currency, "")
    text = f"{sign}{symbol}{d.copy_abs():,.{places}f}"
    return text if symbol else f"{text} {currency}"


def _fmt_rate(vat_rate: str) -> str:
    try:
        pct = (Decimal(vat_rate) * 100).normalize()
    except ArithmeticError:
        return vat_rate
    return f"{pct:f}%"


def _fmt_date(when: datetime | None) -> str:
    if when is None:
        return "—"
    when = when.astimezone(UTC)
    return f"{when.day} {when:%B %Y}"


def _month_name(period: str) -> str:
    start, _ = parse_period(period)
    return f"{start:%B %Y}"


def _shift(period: str, months: int) -> str:
    start, _ = parse_period(period)
    index = start.year * 12 + start.month - 1 + months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def _period_span(period: str) -> str:
    start, end = parse_period(period)
    last = end - timedelta(days=1)
    return f"{start.day} {start:%B %Y} {_NDASH} {last.day} {last:%B %Y}"


_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def csv_cell(value: object) -> str:
    """CSV-injection safe: text starting with = + - @ tab or CR gets a leading ``'`` (a plain
    number such as ``-12.50`` cannot be a formula and is left as it is)."""
    text = "" if value is None else str(value)
    if text and text[0] in "=+-@\t\r" and not _NUMBER.match(text):
        return "'" + text
    return text


def _csv_response(rows: Iterable[Sequence[object]], filename: str) -> web.Response:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    for row in rows:
        writer.writerow([csv_cell(v) for v in row])
    return web.Response(
        body=buf.getvalue().encode("utf-8"),
        content_type="text/csv",
        charset="utf-8",
        headers={
            **_SECURITY_HEADERS,
            "Content-Disposition": f'attachment; filename="{filename}"',
        },
    )


# ---------------------------------------------------------------------------------- pages
_CSS = """
:root { --ink:#1b1f24; --muted:#5b6470; --rule:#d5dae1; --band:#f4f6f8; --brand:#1d3557;
        --accent:#2a6f97; --good:#1f7a45; --bad:#a4262c; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.45 "Segoe UI", "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); background:#fff; }
header.top { background: var(--brand); color:#fff; padding: 12px 32px; display:flex;
             align-items:center; justify-content:space-between; }
header.top .net { font-size: 18px; font-weight: 600; letter-spacing: .2px; }
header.top .net small { font-weight: 400; opacity: .8; margin-left: 8px; }
header.top .who { font-size: 13px; text-align:right; opacity:.95; }
header.top .who a { color:#fff; }
nav.tabs { border-bottom: 1px solid var(--rule); padding: 0 32px; background: var(--band); }
nav.tabs a { display:inline-block; padding: 10px 14px; color: var(--ink); text-decoration:none;
             border-bottom: 3px solid transparent; }
nav.tabs a.on { border-bottom-color: var(--accent); font-weight: 600; }
main { padding: 20px 32px 40px; max-width: 1280px; }
h1 { font-size: 22px; margin: 4px 0 14px; font-weight: 600; }
h2 { font-size: 17px; margin: 26px 0 10px; font-weight: 600; }
a { color: var(--accent); }
.bar { display:flex; gap: 14px; align-items:center; flex-wrap: wrap; margin-bottom: 14px; }
.bar form { display:flex; gap:8px; align-items:center; margin:0; }
.bar .sp { flex:1; }
.btn { display:inline-block; padding: 5px 12px; border:1px solid var(--rule); border-radius:4px;
       background:#fff; color: var(--ink); text-decoration:none; font-size: 14px; }
input, select, button { font: inherit; font-size: 14px; padding: 4px 6px; }
table.data { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
table.data th, table.data td { padding: 7px 10px; border-bottom: 1px solid var(--rule);
                               text-align: left; vertical-align: top; }
table.data th { font-size: 12px; text-transform: uppercase; letter-spacing: .4px;
                color: var(--muted); border-bottom: 2px solid var(--ink); }
table.data .num { text-align: right; white-space: nowrap; }
table.data tfoot td { font-weight: 600; border-top: 2px solid var(--ink); border-bottom: none; }
table.data tbody tr:nth-child(even) { background: #fafbfc; }
.muted { color: var(--muted); }
.status { display:inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
          font-weight:600; border:1px solid currentColor; }
.status.draft { color: var(--muted); } .status.finalized { color: var(--accent); }
.status.paid { color: var(--good); } .status.void { color: var(--bad); }
.charts { display:grid; grid-template-columns: repeat(auto-fill, minmax(380px, 1fr));
          gap: 14px 24px; margin: 6px 0 10px; }
figure { margin:0; } figcaption { font-size: 13px; font-weight:600; margin-bottom: 4px; }
dl.facts { display:grid; grid-template-columns: max-content 1fr; gap: 4px 18px; margin: 0; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin:0; }
table.data.totals { width: auto; min-width: 360px; margin: 12px 0 0 auto; }
td.unit { white-space: nowrap; }
.empty { padding: 18px; background: var(--band); color: var(--muted); }
.error { max-width: 640px; margin: 48px auto; padding: 24px 28px; border:1px solid var(--rule);
         border-left: 4px solid var(--bad); }
"""


@dataclass(frozen=True)
class _Viewer:
    tenant: str
    principal: str
    platform: bool

    def sees(self, tenant: str) -> bool:
        return self.platform or tenant == self.tenant


def _html(body: str, *, status: int = 200) -> web.Response:
    return web.Response(
        text=body, status=status, content_type="text/html", headers=_SECURITY_HEADERS
    )


def _document(title: str, body: str, css: str = _CSS) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en-GB"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{h(title)}</title><style>{css}</style></head><body>{body}</body></html>"
    )


_REASONS = {400: "Bad request", 401: "Sign-in required", 403: "Not allowed", 404: "Not found"}


def _fail(status: int, message: str) -> NoReturn:
    """Stop the handler with a small HTML error page."""
    title = _REASONS.get(status, "Error")
    page = _document(
        f"{title} {_NDASH} Finance",
        f'<div class="error"><h1>{h(title)}</h1><p>{h(message)}</p>'
        '<p class="muted">Feedgate finance</p></div>',
    )
    headers = dict(_SECURITY_HEADERS)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="feedgate"'
    cls = {
        400: web.HTTPBadRequest,
        401: web.HTTPUnauthorized,
        403: web.HTTPForbidden,
        404: web.HTTPNotFound,
    }.get(status, web.HTTPBadRequest)
    raise cls(text=page, content_type="text/html", headers=headers)


def _status_badge(status: InvoiceStatus) -> str:
    return f'<span class="status {h(status.value)}">{h(_STATUS_LABEL[status])}</span>'


def _invoice_url(invoice_id: str, suffix: str = "") -> str:
    return f"/finance/invoices/{quote(invoice_id, safe='')}{suffix}"


def _q(path: str, **params: str | None) -> str:
    kept = {k: v for k, v in params.items() if v}
    return f"{path}?{urlencode(kept)}" if kept else path


# ----------------------------------------------------------------------------------- chart
def _svg_panel(title: str, unit: str, bars: Sequence[tuple[str, Decimal, str]]) -> str:
    """One horizontal bar chart: (label, value, formatted value) per bar, scaled to the max."""
    label_w, bar_w, value_w, row_h, top = 130, 190, 70, 22, 6
    width = label_w + bar_w + value_w
    height = top + row_h * max(len(bars), 1) + 6
    biggest = max((v for _, v, _ in bars), default=Decimal(0))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}"'
        f' width="100%" role="img" aria-label="{h(title)} ({h(unit)})"'
        ' font-family="Segoe UI, Helvetica Neue, Arial, sans-serif" font-size="12">',
        f'<line x1="{label_w}" y1="{top - 2}" x2="{label_w}" y2="{height - 4}"'
        ' stroke="#9aa3ad" stroke-width="1"/>',
    ]
    for i, (label, value, shown) in enumerate(bars):
        y = top + i * row_h
        w = 0 if biggest <= 0 else int((value * bar_w / biggest).to_integral_value())
        if value > 0:
            w = max(w, 1)
        short = label if len(label) <= 20 else label[:19] + "…"
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" fill="#1b1f24">'
            f"<title>{h(label)}</title>{h(short)}</text>"
            f'<rect x="{label_w}" y="{y + 4}" width="{w}" height="{row_h - 8}" fill="#2a6f97">'
            f"<title>{h(label)}: {h(shown)} {h(unit)}</title></rect>"
            f'<text x="{label_w + w + 5}" y="{y + 15}" fill="#5b6470">{h(shown)}</text>'
        )
    parts.append("</svg>")
    return (
        f"<figure><figcaption>{h(title)} <span class='muted'>({h(unit)})</span></figcaption>"
        + "".join(parts)
        + "</figure>"
    )


def _chart(rows: Sequence[tuple[str, dict[Metric, int]]]) -> str:
    """Small multiples: one panel per metric, one bar per row (a tenant or a month)."""
    panels = []
    units = {
        Metric.LIVE_SECONDS: "camera-hours",
        Metric.PLAYBACK_SECONDS: "hours",
        Metric.BYTES: "GB",
        Metric.PTZ_SECONDS: "minutes",
        Metric.EXPORTS: "exports",
    }
    for col in COLUMNS:
        bars = [
            (
                label,
                _quantity(usage[col.metric], col.size, col.places),
                _fmt_quantity(usage[col.metric], col),
            )
            for label, usage in rows
        ]
        title = col.label.replace(" camera-hours", "").replace(" hours", "")
        title = {"GB delivered": "Data delivered", "PTZ minutes": "PTZ control"}.get(title, title)
        panels.append(_svg_panel(title, units[col.metric], bars))
    return '<div class="charts">' + "".join(panels) + "</div>"


# ---------------------------------------------------------------------------------- routes
def add_finance_routes(
    app: web.Application,
    *,
    ledger: Ledger,
    invoices: InvoiceStore,
    platform_tenant: str,
    tenant_names: Callable[[], dict[str, str]],
) -> None:
    """Register the finance view under ``/finance`` (see the module docstring)."""

    def names() -> dict[str, str]:
        try:
            return dict(tenant_names())
        except Exception:  # a name lookup must never take the finance view down
            return {}

    def viewer(request: web.Request) -> _Viewer:
        decision = request.get(DECISION_KEY)
        if not isinstance(decision, Decision) or not decision.allow or not decision.tenant:
            _fail(403, "The finance view needs a signed-in finance user.")
        if not (decision.roles & FINANCE_ROLES):
            _fail(403, "Your account does not have the finance or admin role.")
        return _Viewer(
            tenant=decision.tenant,
            principal=decision.principal or "",
            platform=decision.tenant == platform_tenant,
        )

    def period_param(request: web.Request, *, required: bool = True) -> str | None:
        raw = request.query.get("period")
        if raw is None or raw == "":
            return period_of(datetime.now(UTC)) if required else None
        if not _PERIOD.match(raw):
            _fail(400, "The period must be a month written as YYYY-MM, e.g. 2026-05.")
        try:
            parse_period(raw)
        except BillingError:
            _fail(400, "The period must be a month written as YYYY-MM, e.g. 2026-05.")
        return raw

    def tenant_param(request: web.Request, who: _Viewer) -> str | None:
        raw = request.query.get("tenant")
        if raw is None or raw == "":
            return None if who.platform else who.tenant
        if not ID_RE.match(raw):
            _fail(400, "That is not a valid tenant id.")
        if not who.sees(raw):
            _fail(404, "No such tenant.")
        return raw

    def chrome(
        who: _Viewer, tab: str, title: str, content: str, *, period: str | None = None
    ) -> web.Response:
        known = names()
        network = known.get(platform_tenant, platform_tenant)
        tenant_name = known.get(who.tenant, who.tenant)
        p = period or period_of(datetime.now(UTC))
        tabs = "".join(
            f'<a href="{h(url)}"{" class=on" if key == tab else ""}>{h(label)}</a>'
            for key, label, url in (
                ("usage", "Usage", _q("/finance/usage", period=p)),
                ("invoices", "Invoices", _q("/finance/invoices", period=p)),
            )
        )
        scope = "all tenants" if who.platform else tenant_name
        body = (
            '<header class="top"><div class="net">'
            f"{h(network)} CCTV network<small>Finance · {h(scope)}</small></div>"
            f'<div class="who">Signed in as <strong>{h(who.principal)}</strong><br>'
            f"{h(tenant_name)} ({h(who.tenant)}) · "
            '<a href="/finance/logout">Sign out</a></div></header>'
            f'<nav class="tabs">{tabs}</nav><main>{content}</main>'
        )
        return _html(_document(f"{title} {_NDASH} {network} finance", body))

    def month_nav(path: str, period: str, tenant: str | None, who: _Viewer) -> str:
        prev_p, next_p = _shift(period, -1), _shift(period, 1)
        tenant_field = ""
        if who.platform:
            known = names()
            options = ['<option value="">All tenants</option>'] + [
                f'<option value="{h(t)}"{" selected" if t == tenant else ""}>'
                f"{h(known.get(t, t))}</option>"
                for t in sorted(known, key=lambda t: known[t].lower())
            ]
            tenant_field = (
                f'<label>Tenant <select name="tenant">{"".join(options)}</select></label>'
            )
        keep = tenant if who.platform else None
        return (
            '<div class="bar">'
            f'<a class="btn" href="{h(_q(path, period=prev_p, tenant=keep))}">'
            f"← {h(_month_name(prev_p))}</a>"
            f"<strong>{h(_month_name(period))}</strong>"
            f'<a class="btn" href="{h(_q(path, period=next_p, tenant=keep))}">'
            f"{h(_month_name(next_p))} →</a>"
            f'<form method="get" action="{h(path)}"><label>Month '
            f'<input type="month" name="period" value="{h(period)}"></label>'
            f'{tenant_field}<button type="submit">Show</button></form>'
            '<span class="sp"></span>'
        )

    # ---- usage -----------------------------------------------------------------------------
    def usage_rows(period: str, tenant: str | None) -> list[tuple[str, dict[Metric, int]]]:
        tenants = [tenant] if tenant is not None else ledger.tenants(period)
        return [(t, ledger.usage(t, period)) for t in tenants]

    async def index(request: web.Request) -> web.StreamResponse:
        viewer(request)
        raise web.HTTPFound(_q("/finance/usage", period=period_of(datetime.now(UTC))))

    async def usage_page(request: web.Request) -> web.StreamResponse:
        who = viewer(request)
        period = period_param(request)
        assert period is not None
        tenant = tenant_param(request, who)

        def load() -> tuple[
            list[tuple[str, dict[Metric, int]]], list[tuple[str, dict[Metric, int]]]
        ]:
            rows = usage_rows(period, tenant)
            trend: list[tuple[str, dict[Metric, int]]] = []
            if tenant is not None:
                for k in range(-5, 1):
                    p = _shift(period, k)
                    trend.append((p, ledger.usage(tenant, p)))
            return rows, trend

        rows, trend = await asyncio.to_thread(load)
        known = names()

        def label(t: str) -> str:
            return known.get(t, t)

        nav = month_nav("/finance/usage", period, tenant, who)
        csv_url = _q("/finance/usage.csv", period=period, tenant=tenant if who.platform else None)
        nav += f'<a class="btn" href="{h(csv_url)}">Download CSV</a></div>'
        heads = "".join(f'<th class="num">{h(c.label)}</th>' for c in COLUMNS)
        body_rows = []
        totals = dict.fromkeys((c.metric for c in COLUMNS), 0)
        for t, usage in rows:
            cells = "".join(
                f'<td class="num">{h(_fmt_quantity(usage[c.metric], c))}</td>' for c in COLUMNS
            )
            link = _q("/finance/invoices", period=period, tenant=t if who.platform else None)
            body_rows.append(
                f'<tr><td><a href="{h(link)}">{h(label(t))}</a>'
                f' <span class="muted">{h(t)}</span></td>{cells}</tr>'
            )
            for c in COLUMNS:
                totals[c.metric] += usage[c.metric]
        foot = ""
        if len(rows) > 1:
            foot = (
                f"<tfoot><tr><td>Total ({len(rows)} tenants)</td>"
                + "".join(
                    f'<td class="num">{h(_fmt_quantity(totals[c.metric], c))}</td>' for c in COLUMNS
                )
                + "</tr></tfoot>"
            )
        if rows:
            table = (
                f'<table class="data" id="usage"><thead><tr><th>Tenant</th>{heads}</tr></thead>'
                f"<tbody>{''.join(body_rows)}</tbody>{foot}</table>"
            )
        else:
            table = f'<p class="empty">No usage was recorded in {h(_month_name(period))}.</p>'
        if tenant is not None:
            chart_title = f"{label(tenant)}: the six months to {_month_name(period)}"
            chart = _chart([(_month_name(p)[:3] + " " + p[:4], u) for p, u in trend])
        else:
            chart_title = f"Usage by tenant, {_month_name(period)}"
            chart = _chart([(label(t), u) for t, u in rows]) if rows else ""
        content = (
            f"<h1>Usage · {h(_month_name(period))}</h1>{nav}{table}"
            f"<h2>{h(chart_title)}</h2>{chart}"
            '<p class="muted">Hours and minutes are camera time (one viewer on one camera);'
            " GB are decimal gigabytes delivered to the tenant's viewers. Usage counts in the"
            " month an interval starts, UTC.</p>"
        )
        return chrome(who, "usage", f"Usage {period}", content, period=period)

    async def usage_csv(request: web.Request) -> web.StreamResponse:
        who = viewer(request)
        period = period_param(request)
        assert period is not None
        tenant = tenant_param(request, who)
        rows = await asyncio.to_thread(usage_rows, period, tenant)
        known = names()
        out: list[list[object]] = [["period", "tenant", "tenant_name", *(c.short for c in COLUMNS)]]
        for t, usage in rows:
            out.append(
                [
                    period,
                    t,
                    known.get(t, t),
                    *(
                        str(_quantity(usage[c.metric], c.size, 4 if c.places else 0))
                        for c in COLUMNS
                    ),
                ]
            )
        suffix = f"-{tenant}" if tenant is not None else ""
        return _csv_response(out, f"feedgate-usage-{period}{suffix}.csv")

    # ---- invoices --------------------------------------------------------------------------
    def list_invoices(period: str | None, tenant: str | None) -> list[Invoice]:
        return invoices.list(tenant=tenant, period=period)

    async def invoices_page(request: web.Request) -> web.StreamResponse:
        who = viewer(request)
        period = period_param(request, required=False)
        tenant = tenant_param(request, who)
        found = await asyncio.to_thread(list_invoices, period, tenant)
        found = [inv for inv in found if who.sees(inv.tenant)]
        known = names()
        shown_period = period or period_of(datetime.now(UTC))
        nav = month_nav("/finance/invoices", shown_period, tenant, who)
        if period is not None:
            all_url = _q("/finance/invoices", tenant=tenant if who.platform else None)
            nav += f'<a class="btn" href="{h(all_url)}">All months</a>'
        csv_url = _q(
            "/finance/invoices.csv", period=period, tenant=tenant if who.platform else None
        )
        nav += f'<a class="btn" href="{h(csv_url)}">Download CSV</a></div>'
        rows = []
        sums: dict[str, list[int]] = {}
        for inv in found:
            kind = "Credit note" if inv.credit_note_for else "Invoice"
            rows.append(
                "<tr>"
                f'<td><a href="{h(_invoice_url(inv.invoice_id))}">{h(inv.invoice_id)}</a>'
                f'<br><span class="muted">{h(kind)}</span></td>'
                f"<td>{h(known.get(inv.tenant, inv.tenant))}</td>"
                f"<td>{h(inv.period)}</td><td>{_status_badge(inv.status)}</td>"
                f'<td class="num">{h(format_money(inv.subtotal_pence, inv.currency))}</td>'
                f'<td class="num">{h(format_money(inv.vat_pence, inv.currency))}</td>'
                f'<td class="num"><strong>{h(format_money(inv.total_pence, inv.currency))}'
                "</strong></td>"
                f'<td><a href="{h(_invoice_url(inv.invoice_id))}">View</a> · '
                f'<a href="{h(_invoice_url(inv.invoice_id, "/print"))}">Print</a></td>'
                "</tr>"
            )
            if inv.status is not InvoiceStatus.VOID:
                s = sums.setdefault(inv.currency, [0, 0, 0])
                s[0] += inv.subtotal_pence
                s[1] += inv.vat_pence
                s[2] += inv.total_pence
        foot = "".join(
            f"<tr><td colspan=4>Total excluding void ({h(cur)})</td>"
            f'<td class="num">{h(format_money(s[0], cur))}</td>'
            f'<td class="num">{h(format_money(s[1], cur))}</td>'
            f'<td class="num">{h(format_money(s[2], cur))}</td><td></td></tr>'
            for cur, s in sorted(sums.items())
        )
        when = _month_name(period) if period else "all months"
        if rows:
            table = (
                '<table class="data" id="invoices"><thead><tr><th>Invoice</th><th>Tenant</th>'
                '<th>Period</th><th>Status</th><th class="num">Subtotal</th>'
                '<th class="num">VAT</th><th class="num">Total</th><th></th></tr></thead>'
                f"<tbody>{''.join(rows)}</tbody><tfoot>{foot}</tfoot></table>"
            )
        else:
            table = f'<p class="empty">No invoices for {h(when)}.</p>'
        content = f"<h1>Invoices · {h(when)}</h1>{nav}{table}"
        return chrome(who, "invoices", f"Invoices {when}", content, period=shown_period)

    async def invoices_csv(request: web.Request) -> web.StreamResponse:
        who = viewer(request)
        period = period_param(request, required=False)
        tenant = tenant_param(request, who)
        found = await asyncio.to_thread(list_invoices, period, tenant)
        known = names()
        out: list[list[object]] = [
            [
                "invoice_id",
                "tenant",
                "tenant_name",
                "period",
                "status",
                "currency",
                "subtotal",
                "vat_rate",
                "vat",
                "total",
                "credit_note_for",
                "created_at",
                "finalized_at",
                "paid_at",
            ]
        ]
        for inv in found:
            if not who.sees(inv.tenant):
                continue
            out.append(
                [
                    inv.invoice_id,
                    inv.tenant,
                    known.get(inv.tenant, inv.tenant),
                    inv.period,
                    inv.status.value,
                    inv.currency,
                    _plain_money(inv.subtotal_pence),
                    inv.vat_rate,
                    _plain_money(inv.vat_pence),
                    _plain_money(inv.total_pence),
                    inv.credit_note_for or "",
                    *(
                        "" if t is None else t.astimezone(UTC).isoformat(timespec="seconds")
                        for t in (inv.created_at, inv.finalized_at, inv.paid_at)
                    ),
                ]
            )
        name = f"feedgate-invoices-{period or 'all'}"
        if tenant is not None:
            name += f"-{tenant}"
        return _csv_response(out, f"{name}.csv")

    def invoice_of(request: web.Request, who: _Viewer) -> tuple[Invoice, list[Invoice]]:
        invoice_id = request.match_info["invoice_id"]
        if not _INVOICE_ID.match(invoice_id):
            _fail(400, "That is not a valid invoice number.")
        inv = invoices.get(invoice_id)
        if inv is None or not who.sees(inv.tenant):
            _fail(404, f"There is no invoice {invoice_id}.")
        notes = [
            other
            for other in invoices.list(tenant=inv.tenant)
            if other.credit_note_for == inv.invoice_id
        ]
        return inv, notes

    def lines_table(inv: Invoice, *, table_id: str) -> str:
        rows = "".join(
            "<tr>"
            f"<td>{h(line.description)}</td>"
            f'<td class="num">{h(_fmt_line_quantity(line.quantity, line.unit))}</td>'
            f'<td class="unit">{h(line.unit)}</td>'
            f'<td class="num">{h(_fmt_unit_price(line.unit_price, inv.currency))}</td>'
            f'<td class="num">{h(format_money(line.amount_pence, inv.currency))}</td>'
            "</tr>"
            for line in inv.lines
        )
        return (
            f'<table class="data lines" id="{h(table_id)}"><thead><tr><th>Description</th>'
            '<th class="num">Quantity</th><th>Unit</th><th class="num">Unit price</th>'
            f'<th class="num">Amount</th></tr></thead><tbody>{rows}</tbody></table>'
        )

    def totals_table(inv: Invoice, *, due_label: str = "Total") -> str:
        return (
            '<table class="data totals" id="totals"><tbody>'
            f'<tr><td>Subtotal</td><td class="num">'
            f"{h(format_money(inv.subtotal_pence, inv.currency))}</td></tr>"
            f"<tr><td>VAT at {h(_fmt_rate(inv.vat_rate))}</td>"
            f'<td class="num">{h(format_money(inv.vat_pence, inv.currency))}</td></tr>'
            f"</tbody><tfoot><tr><td>{h(due_label)}</td>"
            f'<td class="num" id="total">{h(format_money(inv.total_pence, inv.currency))}</td>'
            "</tr></tfoot></table>"
        )

    async def invoice_page(request: web.Request) -> web.StreamResponse:
        who = viewer(request)
        inv, notes = await asyncio.to_thread(invoice_of, request, who)
        known = names()
        kind = "Credit note" if inv.credit_note_for else "Invoice"
        facts = [
            ("Tenant", f"{h(known.get(inv.tenant, inv.tenant))} ({h(inv.tenant)})"),
            ("Period", f"{h(_period_span(inv.period))}"),
            ("Status", _status_badge(inv.status)),
            ("Currency", h(inv.currency)),
            ("Created", h(_fmt_date(inv.created_at))),
            ("Finalised", h(_fmt_date(inv.finalized_at))),
            ("Paid", h(_fmt_date(inv.paid_at))),
        ]
        if inv.credit_note_for:
            target = inv.credit_note_for
            facts.append(
                ("Credit note for", f'<a href="{h(_invoice_url(target))}">{h(target)}</a>')
            )
        if inv.stripe_invoice_id:
            facts.append(("Payment provider ref.", h(inv.stripe_invoice_id)))
        facts_html = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
        if notes:
            note_rows = "".join(
                f'<tr><td><a href="{h(_invoice_url(n.invoice_id))}">{h(n.invoice_id)}</a></td>'
                f"<td>{h(_fmt_date(n.created_at))}</td><td>{_status_badge(n.status)}</td>"
                f'<td class="num">{h(format_money(n.total_pence, n.currency))}</td></tr>'
                for n in notes
            )
            notes_html = (
                '<table class="data" id="credit-notes"><thead><tr><th>Credit note</th>'
                '<th>Issued</th><th>Status</th><th class="num">Total</th></tr></thead>'
                f"<tbody>{note_rows}</tbody></table>"
            )
        else:
            notes_html = '<p class="muted">No credit notes have been issued against it.</p>'
        back = _q("/finance/invoices", period=inv.period)
        content = (
            f'<p><a href="{h(back)}">← Invoices for {h(_month_name(inv.period))}</a></p>'
            f"<h1>{h(kind)} {h(inv.invoice_id)}</h1>"
            f'<div class="bar"><a class="btn" href="{h(_invoice_url(inv.invoice_id, "/print"))}">'
            "Printable version</a></div>"
            f'<dl class="facts">{facts_html}</dl>'
            f"<h2>Lines</h2>{lines_table(inv, table_id='lines')}{totals_table(inv)}"
            + ("" if inv.credit_note_for else f"<h2>Credit notes</h2>{notes_html}")
        )
        return chrome(who, "invoices", f"{kind} {inv.invoice_id}", content, period=inv.period)

    async def invoice_print(request: web.Request) -> web.StreamResponse:
        who = viewer(request)
        inv, _notes = await asyncio.to_thread(invoice_of, request, who)
        known = names()
        issuer = known.get(platform_tenant, platform_tenant)
        customer = known.get(inv.tenant, inv.tenant)
        note = inv.credit_note_for is not None
        kind = "Credit note" if note else "Invoice"
        issued = inv.finalized_at
        if inv.status is InvoiceStatus.DRAFT or issued is None:
            issued_text, due_text = (
                "Not yet issued (draft)",
                f"{PAYMENT_TERMS_DAYS} days from issue",
            )
        else:
            issued_text = _fmt_date(issued)
            due_text = _fmt_date(issued + timedelta(days=PAYMENT_TERMS_DAYS))
        banner = ""
        if inv.status is InvoiceStatus.DRAFT:
            banner = '<div class="banner">DRAFT — this is not a VAT invoice</div>'
        elif inv.status is InvoiceStatus.VOID:
            banner = '<div class="banner">VOID — this invoice has been cancelled</div>'
        elif inv.status is InvoiceStatus.PAID:
            banner = f'<div class="banner paid">PAID on {h(_fmt_date(inv.paid_at))}</div>'
        facts = [
            (f"{kind} number", h(inv.invoice_id)),
            (f"{kind} date", h(issued_text)),
            ("Period", h(_period_span(inv.period))),
            ("Account", h(inv.tenant)),
        ]
        if note:
            facts.append(("Credits invoice", h(inv.credit_note_for)))
        else:
            facts.append(("Payment due", h(due_text)))
        facts_html = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
        if note:
            terms = (
                "This credit note reduces the amount owed on the invoice it names. It will be"
                " set against your account; no payment is due."
            )
        else:
            terms = (
                f"Payment is due within {PAYMENT_TERMS_DAYS} days of the invoice date. Please"
                f" quote the invoice number {inv.invoice_id} as the payment reference."
                " Amounts are in "
                + ("pounds sterling" if inv.currency == "GBP" else inv.currency)
                + "; VAT is charged on the subtotal at the rate shown."
            )
        body = (
            '<div class="sheet">'
            f"{banner}"
            '<div class="head"><div class="issuer">'
            f'<div class="org">{h(issuer)}</div>'
            '<div class="muted">CCTV network partnership · Finance</div></div>'
            f'<div class="kind">{h(kind.upper())}</div></div>'
            '<div class="parties"><div><div class="label">Bill to</div>'
            f'<div class="customer">{h(customer)}</div>'
            f'<div class="muted">Account {h(inv.tenant)}</div></div>'
            f'<dl class="facts">{facts_html}</dl></div>'
            f"{lines_table(inv, table_id='lines')}"
            f"{totals_table(inv, due_label='Total credited' if note else 'Total due')}"
            f'<div class="terms"><div class="label">Payment terms</div><p>{h(terms)}</p></div>'
            f'<div class="foot">{h(issuer)} · {h(kind)} {h(inv.invoice_id)}</div>'
            "</div>"
        )
        return _html(_document(f"{kind} {inv.invoice_id} {_NDASH} {issuer}", body, _PRINT_CSS))

    # ---- sign-in ---------------------------------------------------------------------------
    async def login(request: web.Request) -> web.StreamResponse:
        token = request.query.get("token", "").strip()
        target = request.query.get("next", "") or "/finance"
        if not _NEXT.match(target) or "//" in target or ".." in target:
            target = "/finance"
        if not token or len(token) > _MAX_TOKEN:
            _fail(401, "Open this page with the sign-in link you were given.")
        gateway = request.app.get(GATEWAY_KEY)
        tenancy = gateway.tenancy if gateway is not None else None
        if tenancy is None:
            _fail(401, "Sign-in is not available: tenancy is not enabled on this gateway.")
        decision = await tenancy.policy.authorize(
            AccessRequest(Action.API, "http", token=token, peer=request.remote or "")
        )
        if not decision.allow:
            _fail(401, "That sign-in link is not valid or has expired.")
        if not (decision.roles & FINANCE_ROLES):
            _fail(403, "Your account does not have the finance or admin role.")
        response = web.HTTPFound(target, headers=_SECURITY_HEADERS)
        max_age: int | None = None
        if decision.expires_at is not None:
            left = int((decision.expires_at - datetime.now(UTC)).total_seconds())
            max_age = max(left, 1)
        response.set_cookie(
            COOKIE,
            token,
            httponly=True,
            samesite="Strict",
            path=COOKIE_PATH,
            secure=request.secure,
            max_age=max_age,
        )
        raise response

    async def logout(request: web.Request) -> web.StreamResponse:
        response = _html(
            _document(
                f"Signed out {_NDASH} Finance",
                '<div class="error" style="border-left-color:#2a6f97"><h1>Signed out</h1>'
                "<p>You have signed out of the finance view.</p></div>",
            )
        )
        response.del_cookie(COOKIE, path=COOKIE_PATH)
        return response

    app.router.add_get("/finance", index)
    app.router.add_get("/finance/login", login)
    app.router.add_get("/finance/logout", logout)
    app.router.add_get("/finance/usage", usage_page)
    app.router.add_get("/finance/usage.csv", usage_csv)
    app.router.add_get("/finance/invoices", invoices_page)
    app.router.add_get("/finance/invoices.csv", invoices_csv)
    app.router.add_get("/finance/invoices/{invoice_id}", invoice_page)
    app.router.add_get("/finance/invoices/{invoice_id}/print", invoice_print)


_PRINT_CSS = """
@page { size: A4; margin: 16mm 16mm 18mm; }
* { box-sizing: border-box; }
body { margin: 0; background: #e9ecef; color: #1b1f24;
       font: 10.5pt/1.45 "Segoe UI", "Helvetica Neue", Arial, sans-serif; }
.sheet { width: 210mm; min-height: 297mm; margin: 12mm auto; padding: 16mm; background: #fff;
         box-shadow: 0 1px 6px rgba(0,0,0,.18); position: relative; }
.banner { border: 2px solid #a4262c; color: #a4262c; font-weight: 700; text-align: center;
          padding: 4px; margin-bottom: 8mm; letter-spacing: 1px; }
.banner.paid { border-color: #1f7a45; color: #1f7a45; }
.head { display: flex; justify-content: space-between; align-items: flex-start;
        border-bottom: 3px solid #1d3557; padding-bottom: 5mm; margin-bottom: 7mm; }
.org { font-size: 20pt; font-weight: 700; color: #1d3557; }
.kind { font-size: 20pt; font-weight: 300; letter-spacing: 3px; color: #1d3557; }
.muted { color: #5b6470; }
.label { font-size: 8.5pt; text-transform: uppercase; letter-spacing: .6px; color: #5b6470;
         margin-bottom: 1mm; }
.parties { display: flex; justify-content: space-between; margin-bottom: 8mm; gap: 10mm; }
.customer { font-size: 13pt; font-weight: 600; }
dl.facts { display: grid; grid-template-columns: max-content max-content; gap: 1mm 6mm;
           margin: 0; }
dl.facts dt { color: #5b6470; } dl.facts dd { margin: 0; font-weight: 600; }
table.data { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
table.data th, table.data td { padding: 2mm 2.5mm; border-bottom: 0.3mm solid #d5dae1;
                               text-align: left; vertical-align: top; }
table.data th { font-size: 8.5pt; text-transform: uppercase; letter-spacing: .4px;
                color: #5b6470; border-bottom: 0.6mm solid #1b1f24; }
table.data .num { text-align: right; white-space: nowrap; }
table.totals { width: 80mm; margin: 5mm 0 0 auto; }
td.unit { white-space: nowrap; }
table.totals tfoot td { font-weight: 700; font-size: 12pt; border-top: 0.6mm solid #1b1f24;
                        border-bottom: none; }
.terms { margin-top: 10mm; padding-top: 4mm; border-top: 0.3mm solid #d5dae1; }
.terms p { margin: 0; }
.foot { position: absolute; bottom: 10mm; left: 16mm; right: 16mm; font-size: 8.5pt;
        color: #5b6470; border-top: 0.3mm solid #d5dae1; padding-top: 2mm; }
tr { page-break-inside: avoid; }
@media print {
  body { background: #fff; }
  .sheet { width: auto; min-height: auto; margin: 0; padding: 0; box-shadow: none; }
  .foot { position: static; margin-top: 10mm; }
}
"""
