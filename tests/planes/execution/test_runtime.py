"""End to end in a backtest Runtime: a test strategy -> the real RiskManager -> paper fills ->
positions, on the synthetic source."""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest

from contracts.control import ControlState
from contracts.enums import Lifecycle, OrderStatus, OrderType, Side
from contracts.execution import OrderEvent, PositionUpdate
from contracts.market import KlineEvent
from contracts.meta import Payload
from contracts.ports import ComponentContext, PlaneSpec
from contracts.risk import ApprovedIntent
from contracts.strategy import Intent
from contracts.topics import CONTROL_STATE, MARKET_KLINE, STRATEGY_INTENT, Topic
from planes.config import load_config
from planes.execution.positions import PositionManager
from planes.runtime import Runtime
from plugins.builtin import BUILTIN_PLUGINS
from plugins.hookspecs import hookimpl

PLUGIN = "fake_execution_test_strategy"
EXECUTION = ("planes.execution", "planes.execution.plugin")

PLAN: dict[int, tuple[Side, str, bool]] = {
    2: (Side.BUY, "0.02", False),
    5: (Side.SELL, "0.01", False),
    8: (Side.SELL, "0.05", True),  # reduce-only: clipped to the 0.01 left, then flat
    10: (Side.SELL, "0.01", False),  # short into the end
}
"""On the n-th closed bar seen while RUNNING: side, size hint, reduce-only."""


class PlanStrategy:
    """A test-only strategy component: publishes the ``PLAN`` intents on closed bars."""

    name = "plan"

    def __init__(self, ctx: ComponentContext) -> None:
        self.bus = ctx.bus
        self.running = False
        self.seen = 0
        self.triggers: dict[str, KlineEvent] = {}

    async def start(self) -> None:
        self.bus.subscribe(CONTROL_STATE, self._on_state)
        self.bus.subscribe(MARKET_KLINE, self._on_kline)

    async def stop(self) -> None:
        return None

    def _on_state(self, state: ControlState) -> None:
        self.running = state.lifecycle is Lifecycle.RUNNING

    def _on_kline(self, bar: KlineEvent) -> None:
        if not (bar.closed and self.running):
            return
        self.seen += 1
        step = PLAN.get(self.seen)
        if step is None:
            return
        side, size, reduce_only = step
        intent_id = f"bar-{self.seen}"
        self.triggers[intent_id] = bar
        self.bus.publish(
            STRATEGY_INTENT,
            Intent(
                self.bus.meta(f"corr-{intent_id}"),
                intent_id=intent_id,
                scenario_id="plan",
                strategy="plan",
                symbol=bar.symbol,
                side=side,
                size_hint=Decimal(size),
                order_type=OrderType.MARKET,
                reduce_only=reduce_only,
            ),
        )


@pytest.fixture
def strategy_plugin(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType(PLUGIN)

    @hookimpl
    def planes_register_planes() -> Sequence[PlaneSpec]:
        return [PlaneSpec(name="plan", plane="strategy", factory=PlanStrategy)]

    module.planes_register_planes = planes_register_planes  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, PLUGIN, module)
    return module


def component(runtime: Runtime, kind: type[Any]) -> Any:
    (found,) = [c for _, _, c in runtime.components if isinstance(c, kind)]
    return found


async def test_intents_become_fills_and_positions_in_a_backtest(
    strategy_plugin: types.ModuleType,
) -> None:
    sets = [
        "runtime.mode=backtest",
        "observability.status_interval_s=0",
        "plugins.entry_points=false",
        'market.symbols=["BTCUSDT"]',
        "market.synthetic.max_bars=14",
        "market.synthetic.bar_s=60",
        "market.synthetic.tick_ms=5000",
        "strategy.scenarios=[]",  # only the test strategy trades
        "execution.max_volume_share=100",  # whole fills: this test is about the flow
        "control.connect_timeout_s=2",
        "control.disconnect_timeout_s=2",
    ]
    config = load_config(None, sets, environ={}, use_default_file=False)
    builtin = list(BUILTIN_PLUGINS)
    if EXECUTION not in builtin:
        builtin.append(EXECUTION)
    runtime = Runtime(config, builtin=[*builtin, (PLUGIN, PLUGIN)])
    runtime.assemble()
    events: list[tuple[str, Payload]] = []

    def tap(topic: Topic[Any], payload: Payload) -> None:
        events.append((topic.name, payload))

    runtime.bus.subscribe_all(tap)
    await asyncio.wait_for(runtime.run(), 10)  # ends by itself at the end of the data

    strategy: PlanStrategy = component(runtime, PlanStrategy)
    positions: PositionManager = component(runtime, PositionManager)
    bars = [p for _, p in events if isinstance(p, KlineEvent) and p.closed]
    orders = [p for _, p in events if isinstance(p, OrderEvent)]
    updates = [p for _, p in events if isinstance(p, PositionUpdate)]
    approvals = [p for _, p in events if isinstance(p, ApprovedIntent)]
    assert len(approvals) == len(PLAN) == len(strategy.triggers)

    fills: list[OrderEvent] = []
    for intent_id, trigger in strategy.triggers.items():
        mine = [o for o in orders if o.intent_id == intent_id]
        assert [o.status for o in mine] == [
            OrderStatus.SUBMITTED,
            OrderStatus.ACCEPTED,
            OrderStatus.FILLED,
        ], intent_id
        assert {o.meta.correlation_id for o in mine} == {f"corr-{intent_id}"}
        fill = mine[-1]
        after = next(b for b in bars if b.start_ts > trigger.end_ts)  # the next bar
        assert fill.last_fill_price == after.open
        assert fill.exchange_ts == after.start_ts
        assert fill.last_fill_qty is not None
        assert fill.fee == fill.last_fill_qty * after.open * Decimal("0.00055")
        fills.append(fill)
    sizes = [Decimal(s) for s in ("0.02", "0.01", "0.01", "0.01")]
    assert [f.last_fill_qty for f in fills] == sizes

    # The books, recomputed from the fills alone: cash, position, equity at the last close.
    cash = config.portfolio.cash
    qty = Decimal(0)
    for fill in fills:
        assert fill.last_fill_qty is not None
        assert fill.last_fill_price is not None
        signed = fill.last_fill_qty if fill.side is Side.BUY else -fill.last_fill_qty
        cash -= signed * fill.last_fill_price + fill.fee
        qty += signed
        update = next(u for u in updates if u.meta.correlation_id == fill.meta.correlation_id)
        assert update.qty == qty
        assert update.cash == cash
    last = updates[-1]
    assert last.qty == qty == Decimal("-0.01")
    assert last.mark_price == bars[-1].close
    assert last.equity == cash + qty * bars[-1].close
    assert last.equity == positions.ledger.equity()
    ledger = positions.ledger
    assert ledger.equity() - config.portfolio.cash == (
        ledger.realized + ledger.unrealized() - ledger.fees
    )
    for update in updates:
        assert update.equity == update.cash + update.qty * update.mark_price
    # While flat (between the reduce-only exit and the short) no bar published an update.
    flat_from = next(u for u in updates if u.meta.correlation_id == "corr-bar-8").meta.ts
    flat_to = next(u for u in updates if u.meta.correlation_id == "corr-bar-10").meta.ts
    assert [u for u in updates if flat_from < u.meta.ts < flat_to] == []
    assert all(o.meta.source.value == "trading" for o in orders)
