"""``await meter.aguard(..., reserve=True)`` on the real Kafka lease client: a lease in hand
is taken without yielding; a refill waits off the event loop, which keeps running."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from spendstream.config import load_config
from spendstream.errors import BudgetExhausted, LeaseUnavailable
from spendstream.kafka_leases import ensure_lease_topics
from spendstream.producers import LeaseClient
from spendstream.producers.leases import Reservation
from spendstream.runtime.lease_server import lease_topics
from tests.producers.collecting import collecting_meter
from tests.test_budget_leases_kafka import write_config
from tests.test_lease_landed_spend_kafka import serving

pytestmark = pytest.mark.kafka
D = Decimal


def without_yielding(coro: object) -> Reservation:
    """Run a coroutine one step: it must finish there (no await reached the loop)."""
    try:
        coro.send(None)  # type: ignore[attr-defined]
    except StopIteration as done:
        result: Reservation = done.value
        return result
    coro.close()  # type: ignore[attr-defined]
    raise AssertionError("the reservation yielded to the event loop")


def test_aguard_reserves_off_the_loop_and_takes_held_leases_without_yielding(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config = load_config(write_config(tmp_path, kafka_bootstrap, "10", ttl_s=600))
    ensure_lease_topics(kafka_bootstrap, lease_topics(config), partitions=3, reply_partitions=4)
    meter, _ = collecting_meter(team="search")
    client = LeaseClient.kafka(kafka_bootstrap, config, request_timeout_s=1.5, refill_calls=4)
    meter.use_leases(client)
    try:

        async def no_server_yet() -> list[str]:
            order: list[str] = []

            async def ticker() -> None:
                for _ in range(10):
                    await asyncio.sleep(0.01)
                order.append("ticked")

            async def refill() -> None:
                try:
                    await meter.aguard(max_usd="1")
                except LeaseUnavailable:
                    order.append("unavailable")

            await asyncio.gather(refill(), ticker())
            return order

        # No server answers: the refill waits out request_timeout_s on a worker thread
        # while the loop runs the ticker to its end.
        assert asyncio.run(no_server_yet()) == ["ticked", "unavailable"]

        with serving(config):

            async def served() -> tuple[Reservation, int]:
                deadline = asyncio.get_running_loop().time() + 90
                while True:  # the server joins its group first
                    try:
                        first = await meter.aguard(reserve=True, max_usd="1")
                        break
                    except LeaseUnavailable:
                        assert asyncio.get_running_loop().time() < deadline
                assert first is not None
                return first, client.metrics.requests

            first, requests = asyncio.run(served())
            assert first.lease_id and first.scopes == ("team:search",)
            # The grant covers refill_calls calls of $1: the next three are local.
            held = [without_yielding(meter.aguard(max_usd="1")) for _ in range(3)]
            assert client.metrics.requests == requests
            assert {r.lease_id for r in held} == {first.lease_id}
            for r in [first, *held]:
                r.settle("1")
            reserved, grants = client.metrics.reserved, client.metrics.grants

            async def cancelled_during_a_refill() -> None:
                task = asyncio.ensure_future(meter.aguard(max_usd="1"))
                await asyncio.sleep(0)  # the lease is used up: the refill is on its thread
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                for _ in range(3000):  # the refill still lands...
                    if client.metrics.grants > grants:
                        return
                    await asyncio.sleep(0.01)
                raise AssertionError("the refill never landed")

            asyncio.run(cancelled_during_a_refill())
            # ...and what it took for the cancelled call went back at once.
            assert client.metrics.reserved == reserved
            assert client.held("team:search") > 0

            async def past_the_cap() -> None:
                await meter.aguard(max_usd="7")  # $4 spent: $6 left

            with pytest.raises(BudgetExhausted) as caught:
                asyncio.run(past_the_cap())
            assert caught.value.left_usd == D(6)
    finally:
        client.close()
        meter.close()
