"""Fixtures the instrumented-client tests share: one provider test server per module, and
a Meter (team ``search``) whose events are collected in memory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from spendstream.producers import Meter
from tests.producers.collecting import CollectingTransport, collecting_meter
from tests.producers.provider_server import ProviderServer


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as s:
        yield s


@pytest.fixture
def metered() -> Iterator[tuple[Meter, CollectingTransport]]:
    meter, transport = collecting_meter(team="search")
    yield meter, transport
    meter.close(timeout_s=5)
