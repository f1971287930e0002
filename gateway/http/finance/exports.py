"""The finance CSV exports: usage and invoices as a spreadsheet opens them, with every cell
defused against formula injection (a tenant's name is text its admin chose)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from aiohttp import web

from billing.model import Invoice, Metric
from billing.money import format_quantity, plain_money
from gateway.http.finance.views import COLUMNS

__all__ = ["csv_cell", "csv_response", "invoice_rows", "usage_rows"]

_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def csv_cell(value: object) -> str:
    """CSV-injection safe: text starting with = + - @ tab or CR gets a leading ``'`` (a plain
    number such as ``-12.50`` cannot be a formula and is left as it is)."""
    text = "" if value is None else str(value)
    if text and text[0] in "=+-@\t\r" and not _NUMBER.match(text):
        return "'" + text
    return text


def csv_response(
    rows: Iterable[Sequence[object]], filename: str, headers: Mapping[str, str]
) -> web.Response:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    for row in rows:
        writer.writerow([csv_cell(v) for v in row])
    return web.Response(
        body=buf.getvalue().encode("utf-8"),
        content_type="text/csv",
        charset="utf-8",
        headers={**headers, "Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _iso(when: datetime | None) -> str:
    return "" if when is None else when.astimezone(UTC).isoformat(timespec="seconds")


def usage_rows(
    period: str, rows: Sequence[tuple[str, Mapping[Metric, int]]], names: Mapping[str, str]
) -> list[list[object]]:
    """Quantities to 4 places (exports whole): finer than the page, for reconciling."""
    out: list[list[object]] = [["period", "tenant", "tenant_name", *(c.short for c in COLUMNS)]]
    for tenant, usage in rows:
        out.append(
            [
                period,
                tenant,
                names.get(tenant, tenant),
                *(
                    format_quantity(usage[c.metric], c.size, 4 if c.places else 0, grouped=False)
                    for c in COLUMNS
                ),
            ]
        )
    return out


INVOICE_HEADER = (
    "invoice_id", "tenant", "tenant_name", "period", "status", "currency", "subtotal",
    "vat_rate", "vat", "total", "credit_note_for", "created_at", "finalized_at", "paid_at",
)  # fmt: skip


def invoice_rows(found: Sequence[Invoice], names: Mapping[str, str]) -> list[list[object]]:
    out: list[list[object]] = [list(INVOICE_HEADER)]
    for inv in found:
        out.append(
            [
                inv.invoice_id,
                inv.tenant,
                names.get(inv.tenant, inv.tenant),
                inv.period,
                inv.status.value,
                inv.currency,
                plain_money(inv.subtotal_pence),
                inv.vat_rate,
                plain_money(inv.vat_pence),
                plain_money(inv.total_pence),
                inv.credit_note_for or "",
                _iso(inv.created_at),
                _iso(inv.finalized_at),
                _iso(inv.paid_at),
            ]
        )
    return out
