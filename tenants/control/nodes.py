"""The cluster's nodes (``GET /v1/nodes``, ``NodeService/ListNodes``, ``feedgate nodes``): who
is up, since when, their relay addresses, sessions and the cameras each owns or relays. The
cluster's layout is the platform's business: its admins and operators only."""

from __future__ import annotations

import logging

from tenants.control.core import Core, operation
from tenants.control.errors import Code, ControlError, denied
from tenants.control.rules import SESSION_ROLES, Caller
from tenants.control.views import NodeView

log = logging.getLogger(__name__)


class NodeOps:
    def __init__(self, core: Core) -> None:
        self.core = core

    @operation("ListNodes")
    async def list(self, caller: Caller) -> list[NodeView]:
        # Who may ask comes before whether there is a cluster to show.
        if not (caller.platform and caller.has(SESSION_ROLES)):
            raise denied("the platform's admin or operator role is needed")
        directory = self.core.nodes
        if directory is None:
            raise ControlError(Code.UNAVAILABLE, "this gateway is one node (no [cluster])")
        try:
            found = await directory.nodes()
        except Exception as exc:  # Redis down or refusing: say so, never a 500
            log.warning("nodes: cannot read the cluster's Redis: %s", exc)
            raise ControlError(
                Code.UNAVAILABLE, "the cluster's Redis cannot be read right now"
            ) from None
        return [NodeView.of(n) for n in found]


__all__ = ["NodeOps"]
