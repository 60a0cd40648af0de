"""Fixtures of the Bybit venue tests: the loopback REST and private WebSocket fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.fakes.bybit_http import FakeBybitHTTP
from tests.planes.execution.test_bybit_private import FakeBybitPrivateWS


@pytest.fixture
def http() -> Iterator[FakeBybitHTTP]:
    with FakeBybitHTTP() as fake:
        yield fake


@pytest.fixture
async def ws() -> AsyncIterator[FakeBybitPrivateWS]:
    async with FakeBybitPrivateWS() as fake:
        yield fake
