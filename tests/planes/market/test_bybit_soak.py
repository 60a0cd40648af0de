"""A compressed soak: the runtime on the Bybit source through drops every 50 messages and a stall.

The issue's 60-second version is run by hand (docs/market.md); this one keeps the same faults
in about ten seconds so it runs in every CI build.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from contracts.market import MarketDisconnected, TickerEvent
from contracts.topics import MARKET_DISCONNECTED, MARKET_TICKER
from planes.config import load_config
from planes.runtime import Runtime
from tests.fakes.bybit_server import FakeBybitServer
from tests.planes.market.test_bybit_client import TICKER_FIELDS

pytestmark = [pytest.mark.network, pytest.mark.slow]

WATCHDOG_S = 1.0


async def test_ticker_flow_resumes_after_every_fault() -> None:
    async with FakeBybitServer(rate_hz=40, seed=5, drop_every=50) as server:
        config = load_config(
            None,
            [
                "market.source=bybit",
                f"market.bybit.ws_url={server.url}",
                'market.symbols=["BTCUSDT","ETHUSDT"]',
                'market.bybit.channels=["tickers","orderbook","trades"]',
                "market.bybit.ping_interval_s=0.3",
                f"market.bybit.watchdog_s={WATCHDOG_S}",
                "market.bybit.backoff_initial_s=0.1",
                "market.bybit.backoff_max_s=1",
                "observability.status_interval_s=0",
            ],
            environ={},
            use_default_file=False,
        )
        runtime = Runtime(config)
        runtime.assemble()
        arrivals: list[tuple[float, TickerEvent]] = []
        faults: list[tuple[float, MarketDisconnected]] = []
        runtime.bus.subscribe(MARKET_TICKER, lambda t: arrivals.append((time.monotonic(), t)))
        runtime.bus.subscribe(MARKET_DISCONNECTED, lambda d: faults.append((time.monotonic(), d)))
        await runtime.start()
        try:
            await asyncio.sleep(3)
            # Connections come and go every 50 messages: stall one that is open right now.
            await server.wait_for(lambda: server.open_connections > 0, timeout_s=5, what="open")
            assert server.stall(2.5 * WATCHDOG_S)  # longer than the watchdog: half-open socket
            await asyncio.sleep(6)
        finally:
            stopped_at = time.monotonic()
            await runtime.stop()
        gateway = next(c for plane, _, c in runtime.components if plane == "market")
        source = gateway.sources["bybit"]
    reconnects = [d for _, d in faults if d.will_reconnect]
    assert len(reconnects) >= 10
    assert source.metrics.watchdog_trips == 1
    # after every fault the flow resumes; no silence is longer than watchdog + backoff + margin
    times = [at for at, _ in arrivals]
    settled = [at for at, _ in faults if at < stopped_at - 2 * WATCHDOG_S]
    for fault_at in settled:
        assert any(at > fault_at for at in times), "no ticker after a fault"
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) < WATCHDOG_S + 1.0 + 1.0
    # the merged tickers never lost a field across the reconnections
    for _, ticker in arrivals:
        assert all(getattr(ticker, field) is not None for field in TICKER_FIELDS)
    assert {t.symbol for _, t in arrivals} == {"BTCUSDT", "ETHUSDT"}
