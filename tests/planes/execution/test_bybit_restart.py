"""The Bybit venue's drift check across a restart: a whole ``Runtime`` (storage, market, execution,
control) on one data dir, twice, with the loopback Bybit REST and private WebSocket servers
behind it (the private stream's fakes of ``test_bybit_private``).

At boot the venue starts before the Orchestrator: its private stream signs in and subscribes
inside ``start()``, so the stream's first resync (and its wallet baseline) is under way before
the Orchestrator asks for recovery, and may end before the recovered books are announced. The
recovered books are the portfolio's side of the comparison: nothing may be taken as drift
because the books came back from the data dir rather than from ``portfolio.cash``, and a real
drift after the restart is still alerted.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest

from contracts.control import ControlCommand
from contracts.enums import OrderType, Side
from contracts.risk import ApprovedIntent
from contracts.state import StateRecovered
from contracts.strategy import Intent
from contracts.system import Alert
from contracts.topics import CONTROL_COMMAND, OBSERVABILITY_ALERT, RISK_APPROVED, STATE_RECOVERY
from planes.config import load_config
from planes.execution.adapter import client_order_id
from planes.execution.bybit import BybitExecution
from planes.execution.positions import PositionManager
from planes.runtime import Runtime
from planes.storage.snapshots import StateStore
from tests.fakes.bybit_http import FakeBybitHTTP
from tests.planes.execution.test_bybit import KEYS
from tests.planes.execution.test_bybit_private import (
    FakeBybitPrivateWS,
    position_push,
    until,
    wallet_push,
)

pytestmark = pytest.mark.network
C = TypeVar("C")

GRACE_S = 0.2
PLUGINS = [
    ("planes.storage", "planes.storage.plugin"),
    ("planes.market", "planes.market.plugin"),
    ("planes.execution", "planes.execution.plugin"),
    ("planes.control", "planes.control.plugin"),
]
"""What a restart of the venue needs: the journal and recovery, market data, the boot."""


def D(value: str | int) -> Decimal:  # noqa: N802 - reads like the literal it stands for
    return Decimal(value)


def rest_wallet(usdt: str) -> list[dict[str, Any]]:
    """What the loopback REST server answers for the unified wallet: ``usdt`` USDT."""
    return [{"accountType": "UNIFIED", "coin": [{"coin": "USDT", "walletBalance": usdt}]}]


def held(qty: str) -> list[dict[str, str]]:
    """Bybit's REST position listing: a long of ``qty`` BTCUSDT."""
    return [{"symbol": "BTCUSDT", "side": "Buy", "size": qty, "avgPrice": "100"}]


class Run:
    """One ``Runtime`` on the data dir, the loopback servers behind its Bybit venue."""

    def __init__(
        self,
        data_dir: Path,
        http: FakeBybitHTTP,
        ws: FakeBybitPrivateWS,
        intents: Iterator[int],
    ) -> None:
        sets = [
            "plugins.entry_points=false",
            f"runtime.data_dir={data_dir}",
            'market.symbols=["BTCUSDT"]',
            "market.synthetic.bar_s=3600",  # no bar closes: no mark moves the books
            "strategy.scenarios=[]",
            "storage.snapshot_interval_s=0",
            'portfolio.cash="5000"',
            "execution.venue=bybit",
            f"execution.bybit.base_url={http.url}",
            "execution.bybit.timeout_s=2.0",
            "execution.bybit.backoff_initial_s=0.01",
            "execution.bybit.backoff_max_s=0.04",
            "execution.bybit.private_stream=true",
            f"execution.bybit.private_ws_url={ws.url}",
            "execution.bybit.reconnect_initial_s=0.005",
            "execution.bybit.reconnect_max_s=0.02",
            f"execution.bybit.drift_grace_s={GRACE_S}",
            "control.connect_timeout_s=5",
            "control.disconnect_timeout_s=2",
        ]
        config = load_config(None, sets, environ={}, use_default_file=False)
        self.http = http
        self.ws = ws
        self.runtime = Runtime(config, builtin=PLUGINS)
        self.runtime.assemble()
        self.venue = self._component(BybitExecution)
        self.positions = self._component(PositionManager)
        self.alerts: list[Alert] = []
        self.boot: list[str] = []
        """What the stream had done when the recovery was asked for and when it was done."""
        self.risk = self.runtime.attach("risk")
        self._ids = intents
        """Intent numbers, shared by the runs of a test: an intent id is never used twice."""
        bus = self.runtime.bus
        bus.subscribe(OBSERVABILITY_ALERT, self.alerts.append)
        bus.subscribe(CONTROL_COMMAND, self._on_command)
        bus.subscribe(STATE_RECOVERY, self._on_recovered)

    def _component(self, kind: type[C]) -> C:
        (found,) = [c for _, _, c in self.runtime.components if isinstance(c, kind)]
        return found

    def _stream_did(self) -> str:
        stream = self.venue.stream
        assert stream is not None
        metrics = stream.metrics
        return f"subscribed {metrics.subscribed}, resynced {metrics.resyncs}"

    def _on_command(self, command: ControlCommand) -> None:
        if command.name == "recover":
            self.boot.append(f"recover asked: {self._stream_did()}")

    def _on_recovered(self, event: StateRecovered) -> None:
        self.boot.append(f"recovered ({event.positions} positions): {self._stream_did()}")

    @property
    def drift(self) -> list[Alert]:
        return [a for a in self.alerts if "drift" in a.code]

    async def start(self) -> Run:
        await asyncio.wait_for(self.runtime.start(), 10)
        stream = self.venue.stream
        assert stream is not None
        await until(lambda: stream.metrics.resyncs >= 1, "the first resync")
        return self

    async def stop(self) -> None:
        await asyncio.wait_for(self.runtime.stop(), 10)

    async def trade(self, side: Side, qty: str, price: str, fee: str) -> None:
        """An approval, the order Bybit takes and fills, the fill booked (``poll()``)."""
        n = next(self._ids)
        intent = Intent(
            self.risk.meta(f"corr-{n}"),
            intent_id=f"i-{n}",
            scenario_id="sc",
            strategy="test",
            symbol="BTCUSDT",
            side=side,
            size_hint=D(qty),
            order_type=OrderType.MARKET,
        )
        approved = ApprovedIntent(
            self.risk.meta(intent.meta.correlation_id), intent, D(qty), f"sc:i-{n}"
        )
        self.risk.publish(RISK_APPROVED, approved)
        await self.runtime.bus.drain(10)
        self.http.fill(client_order_id("sc", f"i-{n}"), qty, price, fee)
        assert await self.venue.poll() == 1

    def settled(self) -> Decimal:
        """The portfolio's settled balance (what Bybit's linear wallet balance moves with)."""
        ledger = self.positions.ledger
        return ledger.starting_cash + ledger.realized - ledger.fees


@pytest.fixture
async def runs(
    tmp_path: Path, http: FakeBybitHTTP, ws: FakeBybitPrivateWS, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[[], Run]]:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    made: list[Run] = []
    intents = itertools.count(1)

    def make() -> Run:
        run = Run(tmp_path / "var", http, ws, intents)
        made.append(run)
        return run

    yield make
    for run in made:
        if run.runtime.lifecycle is not None:
            await run.stop()


def slow_snapshot_reads(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Make recovery's snapshot read take ``seconds`` (a big snapshot, a slow disk)."""
    latest = StateStore.latest

    def slow(store: StateStore) -> Any:
        time.sleep(seconds)  # in recovery's worker thread: the loop goes on
        return latest(store)

    monkeypatch.setattr(StateStore, "latest", slow)


async def test_a_restart_whose_resync_comes_before_the_recovered_books_alerts_no_drift(
    runs: Callable[[], Run], http: FakeBybitHTTP, ws: FakeBybitPrivateWS, monkeypatch: Any
) -> None:
    http.wallet = rest_wallet("5000")
    first = await runs().start()
    await first.trade(Side.BUY, "0.5", "100", "2")  # Bybit takes the 2 USDT fee
    assert first.settled() == D(4998)
    http.wallet, http.positions = rest_wallet("4998"), held("0.5")
    await ws.push(wallet_push("4998"))
    await ws.push(position_push("BTCUSDT", "Buy", "0.5"))
    await asyncio.sleep(GRACE_S * 3)
    assert first.drift == []
    await first.stop()

    slow_snapshot_reads(monkeypatch, GRACE_S)  # the resync's REST wallet answers first
    second = await runs().start()
    assert second.boot == [
        "recover asked: subscribed 1, resynced 0",  # the stream connected inside start()
        "recovered (1 positions): subscribed 1, resynced 1",  # its resync was done before
    ]
    assert second.positions.ledger.position("BTCUSDT").qty == D("0.5")
    assert second.settled() == D(4998)  # Bybit's 4998: the books agree with it
    await asyncio.sleep(GRACE_S * 4)
    assert [a.message for a in second.drift] == []
    # A real drift after the restart is still one: 20 USDT the books do not know of.
    await ws.push(wallet_push("4978"))
    await until(lambda: bool(second.drift), "the wallet drift alert")
    (alert,) = second.drift
    assert alert.code == "bybit_wallet_drift"
    assert "moved by -20 since the baseline" in alert.message
    assert "(difference -20.0, tolerance 0.01)" in alert.message


async def test_a_restart_on_flat_books_alerts_no_drift_at_its_next_fill(
    runs: Callable[[], Run], http: FakeBybitHTTP, ws: FakeBybitPrivateWS
) -> None:
    http.wallet = rest_wallet("5000")
    first = await runs().start()
    await first.trade(Side.BUY, "0.5", "100", "1")
    await first.trade(Side.SELL, "0.5", "96", "1")  # flat again: -2 realised, 2 in fees
    assert first.settled() == D(4996)
    assert first.positions.ledger.cash == D(4996)
    await first.stop()

    http.wallet = rest_wallet("4996")
    second = await runs().start()
    assert second.positions.ledger.cash == D(4996)
    await asyncio.sleep(GRACE_S * 2)
    # The next fill: Bybit's balance and the books both move by its fee.
    await second.trade(Side.BUY, "0.1", "100", "0.5")
    await ws.push(wallet_push("4995.5"))
    await ws.push(position_push("BTCUSDT", "Buy", "0.1"))
    assert second.settled() == D("4995.5")
    await asyncio.sleep(GRACE_S * 4)
    assert [a.message for a in second.drift] == []
    # A fill Bybit has and the books do not is still a drift (its position and its fee).
    await ws.push(wallet_push("4995"))
    await ws.push(position_push("BTCUSDT", "Buy", "0.2"))
    await until(lambda: len(second.drift) == 2, "the drift alerts")
    assert sorted(a.code for a in second.drift) == ["bybit_position_drift", "bybit_wallet_drift"]
