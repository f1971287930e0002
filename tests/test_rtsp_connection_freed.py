"""A viewer that goes leaves nothing behind for the garbage collector.

Issue #9's soak: every closed reader connection used to stay in memory until a full collection,
held by a cycle between its session and the reader's kick callback, with its parser, deadlines,
grant and socket. With readers reconnecting all day, that is a heap that grows between full
collections and the arenas it leaves behind. Then, with that fixed, Python 3.11's own
transport cycle (its read callback, a bound method of itself) was all that remained. Here the
collector is off: what a finished viewer
held must be freed by reference counting alone, whether it said TEARDOWN or just hung up.
"""

from __future__ import annotations

import gc
import signal
import weakref
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from conftest import (
    Proc,
    RunningGateway,
    make_config,
    publish_argv,
    publishing,
    read_argv,
    running_gateway,
    spawn,
    wait_for,
)

from gateway.rtsp.session import Session


@pytest.fixture
async def published() -> AsyncIterator[RunningGateway]:
    async with running_gateway(make_config()) as gw:
        pub = await spawn(publish_argv(gw.url("cam1")))
        try:
            await publishing(gw, "cam1")
            yield gw
        finally:
            pub.kill()
            await pub.wait()


@pytest.fixture
def no_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _viewers(gw: RunningGateway) -> list[Session]:
    return [s for s in gw.gateway.rtsp.sessions.values() if s.reader is not None]


async def _watch_then_leave(
    gw: RunningGateway, transport: str, leave: Callable[[Proc], None] | None
) -> list[weakref.ref[object]]:
    viewer = await spawn(read_argv(gw.url("cam1"), transport=transport, seconds=30))
    try:
        await wait_for(lambda: bool(_viewers(gw)), 15, what="the viewer to be playing")
        (session,) = _viewers(gw)
        # The hub's Reader and the parser have slots and no weak references; they go with these.
        conn = session.conn
        refs: list[weakref.ref[object]] = [
            weakref.ref(session),
            weakref.ref(conn),
            weakref.ref(conn.transport),  # with its socket
        ]
        del conn
        sid = session.id
        del session
        if leave is not None:
            leave(viewer)
        else:
            viewer.kill()
        await viewer.wait()
    finally:
        viewer.kill()
    server = gw.gateway.rtsp
    await wait_for(
        lambda: sid not in server.sessions and len(server.connections) == 1,
        10,
        what="the gateway to let the viewer go (the publisher's connection stays)",
    )
    return refs


@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_a_viewer_that_hangs_up_is_freed_without_the_collector(
    published: RunningGateway, no_collector: None, transport: str
) -> None:
    refs = await _watch_then_leave(published, transport, None)
    assert len(refs) == 3
    assert [r for r in refs if r() is not None] == []


async def test_a_viewer_that_says_teardown_is_freed_without_the_collector(
    published: RunningGateway, no_collector: None
) -> None:
    # ffmpeg sends TEARDOWN on SIGINT before it exits.
    refs = await _watch_then_leave(published, "tcp", lambda v: v.kill(signal.SIGINT))
    assert len(refs) == 3
    assert [r for r in refs if r() is not None] == []
