"""A cluster node stops even when a cancellation is lost (issue #15, failover scope 1).

`test_cluster_media::test_when_the_owner_goes_another_node_pulls_and_viewers_carry_on` hung in
a loaded batch. Reproduced with three copies running at once (3 hangs in about 40 runs): the
owner's `Gateway.stop()` never returned, so the owner never went and its viewers' relays ran
out, which looked like a failover that never came back. A task dump at the hang showed the
node's heartbeat task with `cancelling() == 1` parked on its next `asyncio.sleep`: its
cancellation had been swallowed. redis-py wraps every socket write in `asyncio.wait_for`, and
Python 3.11's `wait_for` returns normally when the cancellation lands just as the inner write
completes; the heartbeat loop then carried on beating, and `cancel_and_wait` waited forever.

These tests swallow a cancellation the same way (a real `asyncio.wait_for` whose inner future
completes as the cancel arrives) inside each long-lived Redis loop of a node on a real Redis.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import pytest
import redis.asyncio.client as aioclient
from conftest import wait_for
from test_cluster_media import node_config

from gateway.config import CameraConfig
from gateway.core import Gateway
from gateway.tasks import cancel_and_wait

SWALLOWS = sys.version_info < (3, 12)  # 3.12 rewrote wait_for on asyncio.timeout


class Swallower:
    """Makes one Redis call of the task named ``task`` park in ``asyncio.wait_for`` on a gate;
    ``release_and_cancel`` completes the gate and cancels in the same step, as happens when a
    stop lands just as redis-py's write finishes."""

    def __init__(self, task: str) -> None:
        self.task = task
        self.gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.parked = False
        self.returned_cancelling = -1  # Task.cancelling() once wait_for returned

    async def park(self) -> None:
        me = asyncio.current_task()
        if me is None or me.get_name() != self.task or self.gate.done():
            return
        self.parked = True
        await asyncio.wait_for(self.gate, 60)
        self.returned_cancelling = me.cancelling()


def swallow_in(monkeypatch: pytest.MonkeyPatch, swallower: Swallower) -> None:
    command = aioclient.Redis.execute_command
    get_message = aioclient.PubSub.get_message

    async def execute_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        await swallower.park()
        return await command(self, *args, **kwargs)

    async def pubsub_get_message(self: Any, *args: Any, **kwargs: Any) -> Any:
        await swallower.park()
        return await get_message(self, *args, **kwargs)

    monkeypatch.setattr(aioclient.Redis, "execute_command", execute_command)
    monkeypatch.setattr(aioclient.PubSub, "get_message", pubsub_get_message)


async def test_cancel_and_wait_cancels_again_a_task_whose_cancellation_was_swallowed():
    loop = asyncio.get_running_loop()
    gates: list[asyncio.Future[None]] = []
    rounds = 0

    async def carries_on() -> None:
        nonlocal rounds
        while True:
            gates.append(loop.create_future())
            await asyncio.wait_for(gates[-1], 60)
            rounds += 1

    task = loop.create_task(carries_on(), name="carries-on")
    await wait_for(lambda: bool(gates), 5, what="the task to wait")
    gates[-1].set_result(None)  # the inner operation completes as the cancel arrives
    async with asyncio.timeout(10):
        await cancel_and_wait(task, recancel_after=0.2)
    assert task.cancelled()
    if SWALLOWS:
        assert rounds == 1  # the first cancellation was lost: the second one ended it


# Each loop and the stop that cancels it: called in the step that completes the gate, as the
# first thing that stop does (a node's stop cancels its heartbeat first, then the others).
STOPS = {
    "cluster-heartbeat": lambda gw: gw.stop(),
    "ownership": lambda gw: gw.cluster.ownership.stop(),
    "cluster-kicks": lambda gw: gw.cluster.kicks.stop(),
}


@pytest.mark.parametrize("task", sorted(STOPS))
async def test_a_node_stops_when_a_redis_call_swallows_its_cancellation(
    redis_server, monkeypatch, caplog, task
):
    cams = (CameraConfig(id="yard", name="Yard", source="rtsp://127.0.0.1:9/nothing"),)
    gw = Gateway(node_config(redis_server.url, "s1", cams))
    await gw.start()
    try:
        await wait_for(lambda: "yard" in gw.cluster.ownership.held, 15, what="the lease")
        swallower = Swallower(task)
        swallow_in(monkeypatch, swallower)
        await wait_for(lambda: swallower.parked, 15, what=f"{task} in a Redis call")
        caplog.set_level(logging.WARNING, logger="gateway.tasks")
        swallower.gate.set_result(None)
        async with asyncio.timeout(20):
            await STOPS[task](gw)  # cancels the parked task in this same step
        if SWALLOWS:
            assert swallower.returned_cancelling == 1  # the cancel was swallowed
        # Ended by its own loop noticing the lost cancel, not by cancel_and_wait's fallback.
        assert "cancelling it again" not in caplog.text
    finally:
        monkeypatch.undo()
        await gw.stop()
