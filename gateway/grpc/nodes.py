"""feedgate.v1.NodeService: the cluster's nodes, for the platform's admins and operators."""

from __future__ import annotations

from feedgate.v1 import nodes_pb2

from gateway.grpc import converters as c
from tenants.control import Caller, ControlService

DESCRIPTOR = nodes_pb2.DESCRIPTOR.services_by_name["NodeService"]


class NodeService:
    def __init__(self, service: ControlService) -> None:
        self.nodes = service.nodes

    async def ListNodes(
        self, req: nodes_pb2.ListNodesRequest, caller: Caller
    ) -> nodes_pb2.ListNodesResponse:
        found = await self.nodes.list(caller)
        return nodes_pb2.ListNodesResponse(nodes=[c.node_pb(n) for n in found])
