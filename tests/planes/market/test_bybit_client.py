"""The Bybit source against a loopback server that speaks the protocol, with faults injected.

Every test starts its own ``FakeBybitServer`` on 127.0.0.1 and a real ``BybitPublicSource`` on a
real ``EventBus``; nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from contracts.market import (
    MarketConnected,
    MarketDisconnected,
    MarketErrorEvent,
    OrderBookDelta,
    TickerEvent,
    TradeEvent,
)
from contracts.meta import Payload
from contracts.rights import rights_for
from contracts.system import Alert, ErrorEvent
from contracts.topics import MARKET_TICKER, Topic
from planes.bus import EventBus
from planes.clock import RealtimeClock
from planes.config import load_config
from planes.market.bybit import SUBSCRIBE_BATCH, BybitPublicSource
from planes.runtime import PlaneContext, Runtime
from tests.fakes.bybit_server import FakeBybitServer

pytestmark = pytest.mark.network

TICKER_FIELDS = (
    "bid_price",
    "bid_size",
    "ask_price",
    "ask_size",
    "high_24h",
    "low_24h",
    "volume_24h",
    "turnover_24h",
    "price_24h_pcnt",
    "mark_price",
    "index_price",
    "open_interest",
    "funding_rate",
)


class Harness:
    """A source on a bus, with every published event recorded."""

    def __init__(self, url: str, *sets: str, rng_seed: int = 1) -> None:
        config = load_config(
            None,
            [
                "market.source=bybit",
                f"market.bybit.ws_url={url}",
                "market.bybit.ping_interval_s=0.2",
                "market.bybit.watchdog_s=0.8",
                "market.bybit.backoff_initial_s=0.05",
                "market.bybit.backoff_max_s=0.4",
                *sets,
            ],
            environ={},
            use_default_file=False,
        )
        self.bus = EventBus()
        self.events: list[tuple[str, Payload]] = []
        self.bus.subscribe_all(self._tap)
        handle = self.bus.handle("market", *rights_for("market"))
        ctx = PlaneContext(handle, RealtimeClock(), config, {}, {}, {}, {})
        self.source = BybitPublicSource(ctx, rng=random.Random(rng_seed))

    def _tap(self, topic: Topic[Any], payload: Payload) -> None:
        self.events.append((topic.name, payload))

    def of(self, kind: type[Any]) -> list[Any]:
        return [p for _, p in self.events if isinstance(p, kind)]

    async def until(self, predicate: Callable[[], bool], within_s: float = 5.0) -> None:
        deadline = asyncio.get_running_loop().time() + within_s
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("condition not reached")
            await asyncio.sleep(0.01)


def our_tasks() -> list[str]:
    return sorted(t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("bybit"))


@pytest.fixture
async def server() -> AsyncIterator[FakeBybitServer]:
    async with FakeBybitServer(rate_hz=100, seed=3) as fake:
        yield fake
    assert fake.errors == []


def per_connection(server: FakeBybitServer) -> dict[int, list[str]]:
    topics: dict[int, list[str]] = {}
    for conn, args in server.subscribe_requests:
        topics.setdefault(conn, []).extend(args)
    return topics


async def test_streams_merged_tickers_and_cleans_up(server: FakeBybitServer) -> None:
    h = Harness(server.url)
    await h.source.subscribe(["BTCUSDT", "ETHUSDT"], ["tickers", "trades", "orderbook", "kline"])
    await h.source.connect()
    await h.source.connect()  # idempotent
    await h.until(lambda: len(h.of(TickerEvent)) >= 20 and len(h.of(OrderBookDelta)) >= 10)
    assert server.connections == 1
    assert sorted(server.active_topics(0)) == sorted(h.source.topics)
    for ticker in h.of(TickerEvent):
        assert all(getattr(ticker, field) is not None for field in TICKER_FIELDS)
    assert h.of(TradeEvent)
    assert h.source.metrics.malformed == 0
    await h.until(lambda: h.source.metrics.pings_sent >= 1)
    await h.until(lambda: server.pings_total >= 1)
    await h.source.disconnect()
    await h.source.disconnect()  # idempotent
    assert our_tasks() == []
    await server.wait_for(lambda: server.open_connections == 0, timeout_s=2, what="closed")


async def test_every_reconnection_resubscribes_each_topic_exactly_once(
    server: FakeBybitServer,
) -> None:
    server.set_faults(drop_every=25)
    h = Harness(server.url)
    await h.source.subscribe(["BTCUSDT", "ETHUSDT"], ["tickers", "orderbook"])
    await h.source.connect()
    expected = sorted(h.source.topics)
    # an accepted connection has not necessarily subscribed yet: wait for five whole sessions
    await server.wait_for(
        lambda: sum(sorted(t) == expected for t in per_connection(server).values()) >= 5,
        timeout_s=10,
        what="5 subscribed sessions",
    )
    await h.until(lambda: len(h.of(MarketConnected)) >= 3)
    await h.source.disconnect()
    sessions = per_connection(server)
    assert len(sessions) >= 5
    for conn, topics in sessions.items():
        assert sorted(topics) == expected, conn  # each topic once per connection
    assert server.violations == []
    reconnects = h.of(MarketDisconnected)
    assert reconnects
    assert all(d.will_reconnect for d in reconnects)
    assert all(c.reconnect for c in h.of(MarketConnected))
    # tickers flow after every drop, and no merged field is ever lost
    tickers = h.of(TickerEvent)
    assert len(tickers) > 40
    for ticker in tickers:
        assert all(getattr(ticker, field) is not None for field in TICKER_FIELDS)
    assert our_tasks() == []


async def test_a_restarted_server_on_the_same_port_is_reconnected(server: FakeBybitServer) -> None:
    h = Harness(server.url)
    await h.source.subscribe(["BTCUSDT"], ["tickers"])
    await h.source.connect()
    await h.until(lambda: len(h.of(TickerEvent)) >= 5)
    await server.restart(down_s=0.3)
    before = len(h.of(TickerEvent))
    await h.until(lambda: len(h.of(TickerEvent)) >= before + 10)
    assert server.connections >= 2
    assert per_connection(server)[server.last_connection] == ["tickers.BTCUSDT"]
    errors = [e.code for e in h.of(MarketErrorEvent)]
    assert set(errors) <= {"connect_attempt_failed"}
    await h.source.disconnect()
    assert our_tasks() == []


async def test_the_watchdog_catches_a_half_open_socket(server: FakeBybitServer) -> None:
    h = Harness(server.url)
    await h.source.subscribe(["BTCUSDT"], ["tickers"])
    await h.source.connect()
    await h.until(lambda: len(h.of(TickerEvent)) >= 5)
    with capture_logs() as logs:
        server.stall(5.0)  # no data, no pong, socket left open
        await h.until(lambda: h.source.metrics.watchdog_trips == 1, within_s=3)
        await server.wait_for_connections(2, timeout_s=3)
        before = len(h.of(TickerEvent))
        await h.until(lambda: len(h.of(TickerEvent)) >= before + 5, within_s=3)
    server.end_stall()
    disconnected = [e for e in logs if e["event"] == "bybit.disconnected"]
    assert len(disconnected) == 1  # one owner of cleanup, one log line
    assert disconnected[0]["reason"].startswith("watchdog")
    await h.source.disconnect()
    assert our_tasks() == []


async def test_bad_frames_are_counted_and_skipped_and_the_stream_goes_on(
    server: FakeBybitServer,
) -> None:
    server.set_faults(malformed_every=7, duplicate_every=5, out_of_order_every=4)
    h = Harness(server.url)
    await h.source.subscribe(["BTCUSDT"], ["tickers", "orderbook"])
    await h.source.connect()
    await h.until(
        lambda: (
            h.source.metrics.malformed >= 3
            and h.source.metrics.unknown >= 1
            and h.source.metrics.duplicates >= 2
            and h.source.metrics.gaps >= 1
            and h.source.metrics.resyncs >= 1
        ),
        within_s=8,
    )
    before = len(h.of(TickerEvent))
    await h.until(lambda: len(h.of(TickerEvent)) > before + 5)
    # a gap asked for a fresh snapshot: unsubscribe, then subscribe the book again
    assert any("orderbook" in args[0] for _, args in server.unsubscribe_requests)
    snapshots = [d for d in h.of(OrderBookDelta) if d.snapshot]
    assert len(snapshots) >= 2
    assert server.connections == 1  # none of it cost the connection
    await h.source.disconnect()


async def test_a_rejected_topic_is_reported_and_the_others_stream(server: FakeBybitServer) -> None:
    server.set_faults(reject_topics=["tickers.NOPEUSDT"])
    h = Harness(server.url)
    await h.source.subscribe(["BTCUSDT", "NOPEUSDT", "ETHUSDT"], ["tickers"])
    await h.source.connect()
    await h.until(lambda: any(e.code == "subscribe_rejected" for e in h.of(MarketErrorEvent)))
    rejected = [e for e in h.of(MarketErrorEvent) if e.code == "subscribe_rejected"]
    assert [e.topic for e in rejected] == ["tickers.NOPEUSDT"]
    await h.until(lambda: {t.symbol for t in h.of(TickerEvent)} == {"BTCUSDT", "ETHUSDT"})
    assert "tickers.NOPEUSDT" not in h.source.topics
    await h.source.disconnect()


async def test_backoff_stays_within_bounds_and_alerts_without_giving_up() -> None:
    async with FakeBybitServer(rate_hz=50) as fake:
        url = fake.url
    # the server is gone: every attempt is refused
    h = Harness(url, "market.bybit.alert_after_failures=3", "market.bybit.backoff_max_s=0.2")
    await h.source.subscribe(["BTCUSDT"], ["tickers"])
    connecting = asyncio.create_task(h.source.connect())
    await h.until(lambda: h.source.metrics.connect_failures >= 7, within_s=10)
    config = h.source.config
    for n, delay in enumerate(h.source.backoff_history, start=1):
        ceiling = min(config.backoff_max_s, config.backoff_initial_s * 2 ** (n - 1))
        assert 0 <= delay <= ceiling
    alerts = h.of(Alert)
    assert len(alerts) >= 2
    assert alerts[0].code == "market_unreachable"
    assert any(e.code == "unreachable" for e in h.of(MarketErrorEvent))
    assert not connecting.done()  # still trying
    await h.source.disconnect()
    with pytest.raises(asyncio.CancelledError):
        await connecting
    assert our_tasks() == []


async def test_backoff_resets_after_a_healthy_connection(server: FakeBybitServer) -> None:
    server.set_faults(drop_every=10)
    h = Harness(server.url, "market.bybit.backoff_initial_s=0.05", "market.bybit.backoff_max_s=5")
    await h.source.subscribe(["BTCUSDT"], ["tickers"])
    await h.source.connect()
    await server.wait_for_connections(6, timeout_s=10)
    await h.source.disconnect()
    # every connection delivered data, so no delay ever grew past the first ceiling
    assert h.source.backoff_history
    assert max(h.source.backoff_history) <= 0.05


async def test_a_raising_subscriber_never_reaches_the_socket_loop(
    server: FakeBybitServer,
) -> None:
    h = Harness(server.url)

    def explode(_: TickerEvent) -> None:
        raise RuntimeError("subscriber bug")

    h.bus.subscribe(MARKET_TICKER, explode)
    await h.source.subscribe(["BTCUSDT"], ["tickers"])
    await h.source.connect()
    with capture_logs():
        await h.until(lambda: len(h.of(TickerEvent)) >= 20)
    assert len(h.of(ErrorEvent)) >= 20
    assert server.connections == 1
    assert h.source.metrics.publish_errors == 0
    await h.source.disconnect()


async def test_subscribe_while_disconnected_is_stored_then_sent(server: FakeBybitServer) -> None:
    h = Harness(server.url)
    with capture_logs() as logs:
        await h.source.subscribe(["BTCUSDT"], ["tickers"])
    assert [e["event"] for e in logs] == ["bybit.subscribe_stored"]
    await h.source.connect()
    await h.source.subscribe(["ETHUSDT"], ["tickers"])  # connected: sent at once
    await h.until(lambda: {t.symbol for t in h.of(TickerEvent)} == {"BTCUSDT", "ETHUSDT"})
    assert per_connection(server)[0] == ["tickers.BTCUSDT", "tickers.ETHUSDT"]
    await h.source.disconnect()


async def test_spot_requests_carry_at_most_ten_topics() -> None:
    async with FakeBybitServer(category="spot", rate_hz=20) as fake:
        h = Harness(fake.url, "market.bybit.category=spot")
        symbols = [f"C{i:02d}USDT" for i in range(12)]
        await h.source.subscribe(symbols, ["tickers", "trades"])
        await h.source.connect()
        await h.until(lambda: len({t.symbol for t in h.of(TickerEvent)}) == 12)
        await h.source.disconnect()
        requests = [args for _, args in fake.subscribe_requests]
        assert all(len(args) <= SUBSCRIBE_BATCH for args in requests)
        assert sum(len(args) for args in requests) == 24
        assert fake.violations == []


async def test_the_runtime_boots_and_stops_on_the_bybit_source(server: FakeBybitServer) -> None:
    config = load_config(
        None,
        [
            "market.source=bybit",
            f"market.bybit.ws_url={server.url}",
            'market.symbols=["BTCUSDT"]',
            "observability.status_interval_s=0",
        ],
        environ={},
        use_default_file=False,
    )
    runtime = Runtime(config)
    runtime.assemble()
    tickers: list[TickerEvent] = []
    runtime.bus.subscribe(MARKET_TICKER, tickers.append)
    await runtime.start()
    try:
        for _ in range(200):
            if len(tickers) >= 5:
                break
            await asyncio.sleep(0.01)
        assert len(tickers) >= 5
    finally:
        await runtime.stop()
    assert our_tasks() == []


REPO = str(Path(__file__).resolve().parents[3])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _start_server_process(port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.bybit_server",
        "--port",
        str(port),
        "--rate-hz",
        "50",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 15)
    assert b"ws://127.0.0.1" in line, line
    return proc


@pytest.mark.subprocess
async def test_a_killed_server_process_restarted_on_the_same_port() -> None:
    port = _free_port()
    first = await _start_server_process(port)
    second: asyncio.subprocess.Process | None = None
    h = Harness(f"ws://127.0.0.1:{port}/v5/public/linear")
    try:
        await h.source.subscribe(["BTCUSDT", "ETHUSDT"], ["tickers", "trades"])
        await h.source.connect()
        await h.until(lambda: len(h.of(TickerEvent)) >= 5)
        first.kill()  # SIGKILL: no close frame, no FIN from a clean shutdown
        await first.wait()
        await h.until(lambda: h.source.metrics.reconnects >= 1)
        second = await _start_server_process(port)
        before = len(h.of(TickerEvent))
        await h.until(lambda: len(h.of(TickerEvent)) >= before + 10, within_s=10)
        assert any(c.reconnect for c in h.of(MarketConnected))
        await h.source.disconnect()
        second.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(second.communicate(), 10)
    finally:
        for proc in (first, second):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
    subscribed = [line for line in out.decode().splitlines() if " subscribe [" in line]
    assert len(subscribed) == 1, out.decode()  # one connection to the new process
    for topic in h.source.topics:
        assert subscribed[0].count(f"'{topic}'") == 1
    assert our_tasks() == []
