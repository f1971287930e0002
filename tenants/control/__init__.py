"""The control service: the management rules and operations behind every control entry
point. gRPC (``gateway/grpc/``), REST (``gateway/http/api/``), the admin CLI and the finance
pages are thin adapters over :class:`ControlService`; none of them decides anything itself.

Layout:

* ``rules.py``: who may manage what (``Caller`` and pure rule functions);
* ``errors.py``: ``ControlError`` with a stable ``Code``, mapped by each adapter;
* ``schemas.py``, ``views.py``: the declared types (pydantic v2) of request bodies and
  responses; REST validates with them and builds its OpenAPI document from them, gRPC
  converts its messages into them;
* ``core.py``: the one write path (check and change in a transaction, audit, reload), reads
  in threads, and refusal auditing (``@operation``);
* ``ports.py``: what the service needs from the gateway (media plane, billing);
* one module per resource: ``tenants.py`` (tenants, principals), ``cameras.py`` (cameras,
  masks), ``grants.py``, ``tokens.py``, ``audit.py``, ``sessions.py`` (sessions, usage,
  invoices); ``service.py`` puts them together and authenticates callers.

How to add a resource (e.g. PTZ):

1. Declare its bodies and views in a ``schemas``-like module (pydantic models deriving from
   ``schemas.Body`` and ``schemas.View``).
2. Write ``XOps(core)`` with one ``@operation("Name")`` async method per operation, each
   taking ``(caller, ...)``. Check the caller first (``rules``), raise ``ControlError``s
   (``denied``, ``invalid``, ``core.missing(...)`` for objects the caller may not see), and
   change state only through ``core.write(caller, "Name", fn)`` where ``fn`` returns a
   ``Change`` naming its audit entry. Blocking reads go through ``core.read``.
3. Add it to ``ControlService.__init__``.
4. Adapters: REST, add ``Route`` rows to a module in ``gateway/http/api/`` (the OpenAPI
   document follows); gRPC, add the .proto service and a module in ``gateway/grpc/`` that
   converts messages; CLI, add rows to the verb table in ``gateway/cli/``.
"""

from tenants.control.core import Change, Core, operation
from tenants.control.errors import Code, ControlError
from tenants.control.rules import Caller
from tenants.control.service import ControlService

__all__ = ["Caller", "Change", "Code", "ControlError", "ControlService", "Core", "operation"]
