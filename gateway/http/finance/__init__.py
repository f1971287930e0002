"""The finance view: usage by tenant and month, invoices, CSV exports and printable invoices,
for council finance teams.

Server-rendered from templates (``templates/finance/``), with no JavaScript and nothing fetched
from elsewhere: the chart is inline SVG. Every handler checks the caller itself:

- the policy :class:`~tenants.policy.Decision` the bearer middleware put on the request must
  carry the FINANCE or ADMIN role (otherwise a 403 page);
- a user of the platform tenant (``config.grpc.platform_tenant``) sees every tenant; anyone
  else sees only their own tenant's rows and invoices, and another tenant's invoice is a 404
  (not a 403), so invoice ids do not leak.

Money is integer pence, formatted by :mod:`billing.money` (``£1,234.56``), as are quantities
in display units; nothing here uses floats or Decimal. Modules: :mod:`.routes` (handlers and
access), :mod:`.views` (what the pages show), :mod:`.exports` (CSV). Signing in and out
(``/finance/login``, ``/finance/logout``) is the console's sign-in
(:mod:`gateway.http.console.signin`), landing here.
"""

from billing.money import format_money
from gateway.http.csrf import SESSION_COOKIE as COOKIE
from gateway.http.finance.exports import csv_cell
from gateway.http.finance.routes import add_finance_routes
from gateway.http.finance.views import PAYMENT_TERMS_DAYS

__all__ = ["COOKIE", "PAYMENT_TERMS_DAYS", "add_finance_routes", "csv_cell", "format_money"]
