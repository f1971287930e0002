"""The finance view's routes: who may see what, the query parameters, and which page or export
answers. The pages themselves are templates under ``templates/finance/``; their data is shaped
in :mod:`gateway.http.finance.views`."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

from aiohttp import web

from billing.invoices import InvoiceStore
from billing.ledger import Ledger
from billing.model import BillingError, Invoice, parse_period, period_of
from gateway.http import pages
from gateway.http.finance import exports, views
from gateway.http.finance.views import Usage
from gateway.http.keys import DECISION_KEY
from gateway.http.pages import NavItem
from tenants.control.rules import Caller
from tenants.model import ID_RE
from tenants.policy import Decision

__all__ = ["add_finance_routes"]

_PERIOD = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
_INVOICE_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class Viewer:
    """The signed-in finance user, judged by the control service's finance rule."""

    caller: Caller

    @property
    def tenant(self) -> str:
        return self.caller.tenant

    @property
    def principal(self) -> str:
        return self.caller.subject

    @property
    def platform(self) -> bool:
        return self.caller.platform

    def sees(self, tenant: str) -> bool:
        return self.caller.finance_of(tenant)


class FinanceView:
    """The handlers, over one ledger and invoice store. Every handler checks the caller."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        invoices: InvoiceStore,
        platform_tenant: str,
        tenant_names: Callable[[], dict[str, str]],
    ) -> None:
        self.ledger = ledger
        self.invoices = invoices
        self.platform_tenant = platform_tenant
        self._tenant_names = tenant_names

    # ---- who is asking, and for what ---------------------------------------------------
    def names(self) -> dict[str, str]:
        try:
            return dict(self._tenant_names())
        except Exception:  # a name lookup must never take the finance view down
            return {}

    def fail(self, request: web.Request, status: int, message: str) -> NoReturn:
        network = self.names().get(self.platform_tenant, self.platform_tenant)
        pages.fail(request, status, message, context={"network": network, "section": "Finance"})

    def viewer(self, request: web.Request) -> Viewer:
        decision = request.get(DECISION_KEY)
        if not isinstance(decision, Decision) or not decision.allow or not decision.tenant:
            self.fail(request, 403, "The finance view needs a signed-in finance user.")
        caller = Caller(
            tenant=decision.tenant,
            subject=decision.principal or "",
            roles=frozenset(decision.roles),
            platform=decision.tenant == self.platform_tenant,
            via="http",
            peer=request.remote or "",
        )
        if not caller.finance_of(caller.tenant):
            self.fail(request, 403, "Your account does not have the finance or admin role.")
        return Viewer(caller)

    def period(self, request: web.Request) -> str | None:
        """The ``period`` asked for, or None when none is."""
        raw = request.query.get("period")
        if raw is None or raw == "":
            return None
        try:
            if not _PERIOD.match(raw):
                raise BillingError("not YYYY-MM")
            parse_period(raw)
        except BillingError:
            self.fail(request, 400, "The period must be a month written as YYYY-MM, e.g. 2026-05.")
        return raw

    def tenant(self, request: web.Request, who: Viewer) -> str | None:
        """The tenant asked for; None is every tenant (the platform's users only)."""
        raw = request.query.get("tenant")
        if raw is None or raw == "":
            return None if who.platform else who.tenant
        if not ID_RE.match(raw):
            self.fail(request, 400, "That is not a valid tenant id.")
        if not who.sees(raw):
            self.fail(request, 404, "No such tenant.")
        return raw

    def page(
        self,
        request: web.Request,
        who: Viewer,
        template: str,
        context: dict[str, Any],
        *,
        tab: str,
        period: str,
    ) -> web.Response:
        known = self.names()
        network = known.get(self.platform_tenant, self.platform_tenant)
        tenant_name = known.get(who.tenant, who.tenant)
        scope = "all tenants" if who.platform else tenant_name
        return pages.render(
            request,
            template,
            {
                **context,
                "title": f"{context['title']} {views.NDASH} {network} finance",
                "network": network,
                "section": f"Finance · {scope}",
                "who": {
                    "principal": who.principal,
                    "tenant": who.tenant,
                    "tenant_name": tenant_name,
                    "sign_out": "/finance/logout",
                },
                "nav": (
                    NavItem("usage", "Usage", views.q("/finance/usage", period=period)),
                    NavItem("invoices", "Invoices", views.q("/finance/invoices", period=period)),
                ),
                "current": tab,
            },
        )

    # ---- usage -----------------------------------------------------------------------------
    def usage_rows(self, period: str, tenant: str | None) -> list[tuple[str, Usage]]:
        tenants = [tenant] if tenant is not None else self.ledger.tenants(period)
        return [(t, self.ledger.usage(t, period)) for t in tenants]

    async def index(self, request: web.Request) -> web.StreamResponse:
        self.viewer(request)
        raise web.HTTPFound(
            views.q("/finance/usage", period=period_of(datetime.now(UTC), self.ledger.zone))
        )

    async def usage_page(self, request: web.Request) -> web.StreamResponse:
        who = self.viewer(request)
        period = self.period(request) or period_of(datetime.now(UTC), self.ledger.zone)
        tenant = self.tenant(request, who)

        def load() -> tuple[list[tuple[str, Usage]], list[tuple[str, Usage]]]:
            rows = self.usage_rows(period, tenant)
            trend: list[tuple[str, Usage]] = []
            if tenant is not None:
                for k in range(-5, 1):
                    p = views.shift(period, k)
                    trend.append((p, self.ledger.usage(tenant, p)))
            return rows, trend

        rows, trend = await asyncio.to_thread(load)
        known = self.names()
        keep = tenant if who.platform else None
        csv_url = views.q("/finance/usage.csv", period=period, tenant=keep)
        links = {
            t: views.q("/finance/invoices", period=period, tenant=t if who.platform else None)
            for t, _ in rows
        }
        month = views.month_name(period)
        if tenant is not None:
            chart_title = f"{known.get(tenant, tenant)}: the six months to {month}"
            panels = views.chart([(views.month_name(p)[:3] + " " + p[:4], u) for p, u in trend])
        else:
            chart_title = f"Usage by tenant, {month}"
            panels = views.chart([(known.get(t, t), u) for t, u in rows]) if rows else ()
        context = {
            "title": f"Usage {period}",
            "month": month,
            "bar": views.month_nav(
                "/finance/usage",
                period,
                tenant,
                known if who.platform else None,
                [views.Link("Download CSV", csv_url)],
            ),
            "table": views.usage_table(rows, known, links),
            "chart_title": chart_title,
            "panels": panels,
        }
        return self.page(request, who, "finance/usage.html", context, tab="usage", period=period)

    async def usage_csv(self, request: web.Request) -> web.StreamResponse:
        who = self.viewer(request)
        period = self.period(request) or period_of(datetime.now(UTC), self.ledger.zone)
        tenant = self.tenant(request, who)
        rows = await asyncio.to_thread(self.usage_rows, period, tenant)
        suffix = f"-{tenant}" if tenant is not None else ""
        return exports.csv_response(
            exports.usage_rows(period, rows, self.names()),
            f"feedgate-usage-{period}{suffix}.csv",
            pages.page_headers(),
        )

    # ---- invoices --------------------------------------------------------------------------
    async def _invoices(self, who: Viewer, period: str | None, tenant: str | None) -> list[Invoice]:
        found = await asyncio.to_thread(self.invoices.list, tenant=tenant, period=period)
        return [inv for inv in found if who.sees(inv.tenant)]

    async def invoices_page(self, request: web.Request) -> web.StreamResponse:
        who = self.viewer(request)
        period = self.period(request)
        tenant = self.tenant(request, who)
        found = await self._invoices(who, period, tenant)
        known = self.names()
        shown = period or period_of(datetime.now(UTC), self.ledger.zone)
        keep = tenant if who.platform else None
        actions = []
        if period is not None:
            actions.append(views.Link("All months", views.q("/finance/invoices", tenant=keep)))
        csv_url = views.q("/finance/invoices.csv", period=period, tenant=keep)
        actions.append(views.Link("Download CSV", csv_url))
        rows, sums = views.invoice_rows(found, known)
        when = views.month_name(period) if period else "all months"
        context = {
            "title": f"Invoices {when}",
            "when": when,
            "bar": views.month_nav(
                "/finance/invoices", shown, tenant, known if who.platform else None, actions
            ),
            "rows": rows,
            "sums": sums,
        }
        return self.page(
            request, who, "finance/invoices.html", context, tab="invoices", period=shown
        )

    async def invoices_csv(self, request: web.Request) -> web.StreamResponse:
        who = self.viewer(request)
        period = self.period(request)
        tenant = self.tenant(request, who)
        found = await self._invoices(who, period, tenant)
        name = f"feedgate-invoices-{period or 'all'}"
        if tenant is not None:
            name += f"-{tenant}"
        return exports.csv_response(
            exports.invoice_rows(found, self.names()), f"{name}.csv", pages.page_headers()
        )

    async def invoice_of(self, request: web.Request, who: Viewer) -> tuple[Invoice, list[Invoice]]:
        """The invoice named in the path and its credit notes. Another tenant's invoice is
        "not found", as a missing one is, so invoice numbers tell nothing."""
        invoice_id = request.match_info["invoice_id"]
        if not _INVOICE_ID.match(invoice_id):
            self.fail(request, 400, "That is not a valid invoice number.")

        def load() -> tuple[Invoice | None, list[Invoice]]:
            inv = self.invoices.get(invoice_id)
            if inv is None or not who.sees(inv.tenant):
                return None, []
            notes = [
                other
                for other in self.invoices.list(tenant=inv.tenant)
                if other.credit_note_for == inv.invoice_id
            ]
            return inv, notes

        inv, notes = await asyncio.to_thread(load)
        if inv is None:
            self.fail(request, 404, "There is no such invoice, or it is not yours to see.")
        return inv, notes

    async def invoice_page(self, request: web.Request) -> web.StreamResponse:
        who = self.viewer(request)
        inv, notes = await self.invoice_of(request, who)
        known = self.names()
        kind = views.kind_of(inv)
        context = {
            "title": f"{kind} {inv.invoice_id}",
            "kind": kind,
            "invoice": inv,
            "back": views.Link(
                f"← Invoices for {views.month_name(inv.period)}",
                views.q("/finance/invoices", period=inv.period),
            ),
            "print_href": views.invoice_url(inv.invoice_id, "/print"),
            "facts": views.invoice_facts(inv, known),
            "lines": views.lines(inv),
            "totals": views.totals(inv),
            "notes": views.invoice_rows(notes, known)[0],
        }
        return self.page(
            request, who, "finance/invoice.html", context, tab="invoices", period=inv.period
        )

    async def invoice_print(self, request: web.Request) -> web.StreamResponse:
        who = self.viewer(request)
        inv, _notes = await self.invoice_of(request, who)
        sheet = views.printable(inv, self.names(), self.platform_tenant)
        return pages.render(request, "finance/print.html", {"title": sheet.title, "sheet": sheet})


def add_finance_routes(
    app: web.Application,
    *,
    ledger: Ledger,
    invoices: InvoiceStore,
    platform_tenant: str,
    tenant_names: Callable[[], dict[str, str]],
) -> None:
    """Register the finance view under ``/finance`` (see :mod:`gateway.http.finance`)."""
    pages.setup_pages(app)
    view = FinanceView(
        ledger=ledger,
        invoices=invoices,
        platform_tenant=platform_tenant,
        tenant_names=tenant_names,
    )
    # /finance/login and /finance/logout are the console's sign-in (gateway/http/console/).
    app.router.add_get("/finance", view.index)
    app.router.add_get("/finance/usage", view.usage_page)
    app.router.add_get("/finance/usage.csv", view.usage_csv)
    app.router.add_get("/finance/invoices", view.invoices_page)
    app.router.add_get("/finance/invoices.csv", view.invoices_csv)
    app.router.add_get("/finance/invoices/{invoice_id}", view.invoice_page)
    app.router.add_get("/finance/invoices/{invoice_id}/print", view.invoice_print)
