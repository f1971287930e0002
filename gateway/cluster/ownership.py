"""Which camera paths this node pulls, publishes or relays, kept current against Redis.

One camera, one ingest per cluster:

- an always-on pull camera is pulled by whichever node holds its lease; the others try to
  take it every heartbeat interval, which succeeds once the lease lapses or its holder's
  heartbeat has (a dead owner's cameras move within ``heartbeat_ttl`` and one interval);
- an on-demand pull camera is taken by the first node a viewer asks;
- a push camera's lease is taken over by the node its publisher lands on; a node that loses
  the lease of a path it publishes drops its publisher (the encoder has moved on);
- any node with viewers of a path it does not own runs an :class:`EdgeRelay` from the owner,
  stopped ``relay_linger`` after its last viewer leaves.

Losing a lease (a renewal answered "not yours") stops the pull at once. Whatever else must
follow a path's ownership (the recorder: only the owner records a camera) adds a callback to
:attr:`Ownership.watchers`, called ``(path, True)`` when this node takes a path and
``(path, False)`` when it loses or gives it back. While Redis cannot be
reached every node keeps doing what it did (nobody can take anything over meanwhile), and
an owner keeps serving its edges; a lease this node could not renew and cannot confirm is
not served to edges (:meth:`serving`), which is what a paused owner sees on waking.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.cluster.leases import Held, Leases, Owner
from gateway.cluster.relay import EdgeRelay, Resolver
from gateway.cluster.tls import RelayTls
from gateway.stream.hub import StreamHub
from gateway.tasks import cancel_and_wait, raise_if_cancelling

log = logging.getLogger(__name__)

TICK = 0.25  # seconds between looks at the local paths (publishers, viewers)


class PathKind(enum.Enum):
    PULL = "pull"  # pulled from the camera all the time
    ON_DEMAND = "on_demand"  # pulled while someone watches
    PUSH = "push"  # published to us by an encoder


@dataclass
class _Edge:
    relay: EdgeRelay
    task: asyncio.Task[None]
    idle_since: float | None = None


class Ownership:
    """Owns every lease, pull start/stop decision and edge relay of one node.

    ``start_pull(path)``/``stop_pull(path)`` start and stop this node's own ingest of a
    camera; ``drop_publisher(path)`` ends a local publisher whose path moved elsewhere."""

    def __init__(
        self,
        leases: Leases,
        hub: StreamHub,
        paths: dict[str, PathKind],
        *,
        start_pull: Callable[[str], None],
        stop_pull: Callable[[str], None],
        drop_publisher: Callable[[str], None],
        resolve: Resolver,
        secret: str,
        attempt_interval: float = 1.0,
        relay_linger: float = 5.0,
        stall_timeout: float = 3.0,
        relay_tls: RelayTls | None = None,
    ) -> None:
        self.relay_tls = relay_tls  # edges connect to owners over TLS (gateway/cluster/tls.py)
        self.leases = leases
        self.hub = hub
        self.paths = paths
        self._start_pull = start_pull
        self._stop_pull = stop_pull
        self._drop_publisher = drop_publisher
        self._resolve = resolve
        self._secret = secret
        self.attempt_interval = attempt_interval
        self.relay_linger = relay_linger
        self.stall_timeout = stall_timeout
        self.held: dict[str, Held] = {}
        self.edges: dict[str, _Edge] = {}
        self.owners: dict[str, Owner | None] = {}  # what Redis said last, per path
        self.redis_down_since: float | None = None
        self.wanted: set[str] = set()  # on-demand paths a viewer asked for
        self.takeovers = 0
        self.losses = 0
        self._next_renew = 0.0
        self._next_attempt = 0.0
        self._task: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()  # edge relays being cancelled
        # Told (path, owned) whenever this node takes or stops holding a path's lease.
        self.watchers: list[Callable[[str, bool], None]] = []

    # ---- what other parts ask ---------------------------------------------------------------

    def serving(self, path: str, token: int) -> bool:
        """May this node serve ``path`` to an edge that expects lease ``token``?"""
        held = self.held.get(path)
        if held is None or held.owner.token != token:
            return False
        return held.valid(time.monotonic()) or self.redis_down_since is not None

    def holds(self, path: str) -> bool:
        """Is ``path`` this node's now? Its lease is held and not past what it may assume, or
        Redis is down (nothing changes hands until it is back). The recorder asks per unit."""
        held = self.held.get(path)
        if held is None:
            return False
        return held.valid(time.monotonic()) or self.redis_down_since is not None

    def on_demand(self, path: str) -> None:
        """A viewer wants ``path`` here (DESCRIBE, WHEP, a still): pull or relay it now."""
        if path not in self.paths or path in self.held:
            return
        if self.paths[path] is PathKind.ON_DEMAND:
            self.wanted.add(path)
        self._next_attempt = 0.0  # try for the lease on the next tick
        self._ensure_edge(path, time.monotonic())

    @property
    def owned(self) -> tuple[str, ...]:
        return tuple(sorted(self.held))

    @property
    def relayed(self) -> tuple[str, ...]:
        return tuple(sorted(self.edges))

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ownership")

    async def stop(self) -> None:
        await cancel_and_wait(self._task, *(e.task for e in self.edges.values()), *self._stopping)
        self.edges.clear()
        for path in list(self.held):
            self._stop_pull(path)
            self._tell(path, False)
        held, self.held = list(self.held.values()), {}
        for h in held:
            try:
                await self.leases.release(h)
            except Exception as exc:  # Redis gone: the lease lapses by itself
                log.info("could not release %s: %s", h.path, exc)

    async def _run(self) -> None:
        while True:
            raise_if_cancelling()  # a stop that redis-py's write swallowed (gateway.tasks)
            try:
                await self.tick(time.monotonic())
            except Exception:
                log.exception("ownership tick failed")
            await asyncio.sleep(TICK)

    # ---- one round ----------------------------------------------------------------------------

    async def tick(self, now: float) -> None:
        try:
            if self.redis_down_since is not None:
                await self.leases.redis.ping()  # raises while Redis is still down
                # Back. Leases may have lapsed meanwhile: the incumbents put theirs back first
                # (renewal restores a key nobody re-took), and takers wait until every node
                # has renewed and beaten again, so an outage does not move cameras.
                log.warning(
                    "Redis is back after %.1fs; camera ownership resumes",
                    now - self.redis_down_since,
                )
                self.redis_down_since = None
                self._next_renew = 0.0
                self._next_attempt = now + max(self.leases.ttl / 3, 2 * self.attempt_interval)
            if now >= self._next_renew:
                self._next_renew = now + self.leases.ttl / 3
                await self._renew(now)
            await self._publishers(now)
            if now >= self._next_attempt:
                self._next_attempt = now + self.attempt_interval
                await self._attempt(now)
        except (OSError, ConnectionError, TimeoutError) as exc:
            self._redis_failed(now, exc)
        except Exception as exc:
            if type(exc).__module__.startswith("redis"):
                self._redis_failed(now, exc)
            else:
                raise
        self._tend_edges(now)

    def _redis_failed(self, now: float, exc: BaseException) -> None:
        if self.redis_down_since is None:
            self.redis_down_since = now
            log.warning("Redis unreachable (%s): keeping the cameras as they are", exc)

    async def _renew(self, now: float) -> None:
        for path, held in list(self.held.items()):
            if not await self.leases.renew(held, now):
                self._lose(path)

    async def _publishers(self, now: float) -> None:
        """A publisher here takes its path over; one that left gives its lease back; a path
        whose publisher went to another node (it took the lease over) is let go of now, not at
        the next renewal, so the old node stops feeding (and recording) it within a tick."""
        pushed = [p for p, k in self.paths.items() if k is PathKind.PUSH and p in self.held]
        if pushed:
            for path, owner in (await self.leases.owners(pushed)).items():
                held = self.held.get(path)
                if owner is not None and held is not None and owner.value != held.owner.value:
                    self._lose(path)
        for path, kind in self.paths.items():
            if kind is not PathKind.PUSH:
                continue
            stream = self.hub.get(path)
            publishing = stream is not None and (stream.source_id or "").startswith("push:")
            if publishing and path not in self.held:
                self._stop_edge(path)
                self.held[path] = held = await self.leases.take_over(path, now)
                self.owners[path] = held.owner
                self.takeovers += 1
                log.info("path %s: its publisher is here; lease %d", path, held.owner.token)
                self._tell(path, True)
            elif not publishing and path in self.held:
                held = self.held.pop(path)
                self._tell(path, False)
                await self.leases.release(held)

    async def _attempt(self, now: float) -> None:
        """Try for the lease of every pull path we should own and do not."""
        for path, kind in self.paths.items():
            if path in self.held or kind is PathKind.PUSH:
                continue
            if kind is PathKind.ON_DEMAND and path not in self.wanted:
                continue
            got = await self.leases.acquire(path, now)
            if isinstance(got, Held):
                self._stop_edge(path)
                self.held[path] = got
                self.owners[path] = got.owner
                self.takeovers += 1
                log.info("path %s: this node pulls it now (lease %d)", path, got.owner.token)
                self._start_pull(path)
                self._tell(path, True)
            else:
                self.owners[path] = got

    def _lose(self, path: str) -> None:
        held = self.held.pop(path, None)
        if held is None:
            return
        self.losses += 1
        log.warning("path %s: lease %d is another node's now; stopping", path, held.owner.token)
        if self.paths.get(path) is PathKind.PUSH:
            self._drop_publisher(path)
        else:
            self._stop_pull(path)
        self._tell(path, False)

    def _tell(self, path: str, owned: bool) -> None:
        for watcher in self.watchers:
            try:
                watcher(path, owned)
            except Exception:
                log.exception("path %s: an ownership watcher failed", path)

    # ---- edge relays ----------------------------------------------------------------------------

    def _ensure_edge(self, path: str, now: float) -> None:
        edge = self.edges.get(path)
        if edge is not None and not edge.task.done():
            edge.idle_since = None
            return
        relay = EdgeRelay(
            self.hub.path(path),
            self._resolve,
            self._secret,
            stall_timeout=self.stall_timeout,
            tls=self.relay_tls,
        )
        task = asyncio.get_running_loop().create_task(relay.run(), name=f"edge:{path}")
        self.edges[path] = _Edge(relay, task)
        log.info("path %s: relaying it from its owner", path)

    def _stop_edge(self, path: str) -> None:
        edge = self.edges.pop(path, None)
        if edge is not None:
            edge.task.cancel()  # awaited by the next _tend_edges (or stop)
            self._stopping.add(edge.task)

    def _tend_edges(self, now: float) -> None:
        self._stopping = {t for t in self._stopping if not t.done()}
        for path in self.paths:
            if path in self.held:
                continue
            stream = self.hub.get(path)
            if stream is not None and stream.readers:
                self._ensure_edge(path, now)
        for path, edge in list(self.edges.items()):
            stream = self.hub.get(path)
            if stream is not None and stream.readers:
                edge.idle_since = None
                continue
            if edge.idle_since is None:
                edge.idle_since = now
            elif now - edge.idle_since >= self.relay_linger:
                log.info("path %s: no viewers left; relay stopped", path)
                self._stop_edge(path)
                self.wanted.discard(path)
