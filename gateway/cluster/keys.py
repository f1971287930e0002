"""Every Redis key and channel the cluster uses, named in one place.

``{p}`` is ``cluster.prefix``. Keys that expire say so: nothing a dead node wrote outlives it
by more than its TTL.

- ``{p}:own:{path}``: ``holder|token``, the node incarnation pulling ``path`` (``PX`` lease).
- ``{p}:fence:{path}``: the fencing counter ``INCR``-ed by every new owner of ``path``.
- ``{p}:alive:{holder}``: set while the node incarnation ``holder`` beats (``PX``).
- ``{p}:node:{id}``: a node's heartbeat record (JSON, ``PX`` heartbeat_ttl).
- ``{p}:nodes``: sorted set of node ids by the last heartbeat (unix seconds), for listing.
- ``{p}:sessions:{id}``: a node's live sessions (JSON, ``PX`` heartbeat_ttl).
- ``{p}:kick:{id}``: the pub/sub channel a node takes kicks on.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str

    def owner(self, path: str) -> str:
        return f"{self.prefix}:own:{path}"

    def fence(self, path: str) -> str:
        return f"{self.prefix}:fence:{path}"

    def alive(self, holder: str) -> str:
        return f"{self.prefix}:alive:{holder}"

    def node(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}:nodes"

    def sessions(self, node_id: str) -> str:
        return f"{self.prefix}:sessions:{node_id}"

    def kick(self, node_id: str) -> str:
        return f"{self.prefix}:kick:{node_id}"
