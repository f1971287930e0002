"""Several nodes as one gateway (issue #15): Redis holds which node owns what.

- :mod:`settings`: the ``[cluster]`` config section.
- :mod:`keys`: every Redis key and channel name, in one place.
- :mod:`leases`: camera ownership leases (``SET NX PX``, renewal, fencing tokens).
- :mod:`nodes`: node heartbeats (a key with a TTL per node) and the node list.
- :mod:`relay`: the internal, authenticated RTSP listener and the edge relay that pulls a
  camera from its owner.
- :mod:`ownership`: which cameras this node pulls, relays or publishes, kept current.
- :mod:`sessions`: the cluster-wide session registry and kicks across nodes.
- :mod:`node`: one node's cluster membership, owning every task above.

Redis is the only shared engine: there is no consensus protocol here. Without
``cluster.redis_url`` none of this runs and a gateway is one node, as before.
"""
