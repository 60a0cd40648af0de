"""The StrategyManager inside a real runtime: scenarios, intents, isolation, commands."""

from __future__ import annotations

import sys
import tempfile
import types
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import pytest

from contracts.analytics import MarketContext
from contracts.control import ControlCommand
from contracts.enums import Side, Trend, VolatilityBucket
from contracts.execution import PositionUpdate
from contracts.market import KlineEvent
from contracts.meta import Payload
from contracts.strategy import Intent, IntentDraft, ScenarioDisabled, ScenarioEnabled
from contracts.system import Alert
from contracts.topics import ANALYTICS_CONTEXT, CONTROL_COMMAND, Topic
from planes.config import load_config
from planes.runtime import Runtime, RuntimeStartError
from planes.strategy.manager import ScenarioError, StrategyManager

BASE = [
    "runtime.mode=backtest",
    "market.synthetic.bar_s=60",
    "market.synthetic.tick_ms=20000",
    "market.synthetic.max_bars=300",
    "observability.status_interval_s=0",
]


class EveryBar:
    """Buys on every closed bar (test strategy)."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.qty = Decimal(str(params.get("qty", "0.001")))

    def on_event(self, topic: Topic[Any], payload: Payload, view: Any) -> Sequence[IntentDraft]:
        if isinstance(payload, KlineEvent):
            return [IntentDraft(Side.BUY, size_hint=self.qty, reason=f"bar {payload.start_ts}")]
        return []


class Explodes:
    def __init__(self, params: Mapping[str, Any]) -> None:
        self.calls = 0

    def on_event(self, topic: Topic[Any], payload: Payload, view: Any) -> Sequence[IntentDraft]:
        self.calls += 1
        if self.calls == 3:
            raise ZeroDivisionError("bad math")
        return []


@pytest.fixture
def strategies_module(monkeypatch: pytest.MonkeyPatch) -> str:
    module = types.ModuleType("test_strategies_mod")
    module.EveryBar = EveryBar  # type: ignore[attr-defined]
    module.Explodes = Explodes  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module.__name__


BTC = '["BTCUSDT"]'
ETH = '["ETHUSDT"]'
UP_LOW = '"up_low"'


def scenario(sid: str, strategy: str, **extra: Any) -> str:
    fields = [f'id = "{sid}"', f'strategy = "{strategy}"']
    fields += [f"{k} = {v}" for k, v in extra.items()]
    return "{" + ", ".join(fields) + "}"


async def run(
    sets: list[str], data_dir: str | None = None
) -> tuple[Runtime, list[tuple[str, Payload]]]:
    # Each run its own data dir unless told: a second run on one is a restart (recovery).
    data_dir = data_dir or tempfile.mkdtemp(prefix="var-", dir=".")
    config = load_config(
        None, [*BASE, f'runtime.data_dir="{data_dir}"', *sets], environ={}, use_default_file=False
    )
    runtime = Runtime(config)
    runtime.assemble()
    events: list[tuple[str, Payload]] = []
    runtime.bus.subscribe_all(lambda t, p: events.append((t.name, p)))
    await runtime.run()
    return runtime, events


def of(events: list[tuple[str, Payload]], kind: type[Any]) -> list[Any]:
    return [p for _, p in events if isinstance(p, kind)]


async def test_the_demo_scenario_turns_crosses_into_intents() -> None:
    _, events = await run([])
    enabled = of(events, ScenarioEnabled)
    assert [e.scenario_id for e in enabled] == ["sma_cross_demo"]
    intents = of(events, Intent)
    assert intents, "300 bars of the synthetic market should hold SMA crosses"
    for intent in intents:
        assert intent.scenario_id == "sma_cross_demo"
        assert intent.strategy == "sma_cross"
        assert intent.meta.source.value == "strategy"
        assert intent.intent_id.startswith(f"sma_cross_demo-v1:{intent.symbol}:")
    assert len({i.intent_id for i in intents}) == len(intents)
    # long-only: per symbol the sides alternate, starting with a buy
    for symbol in ("BTCUSDT", "ETHUSDT"):
        sides = [i.side for i in intents if i.symbol == symbol]
        assert sides == [Side.BUY, Side.SELL] * (len(sides) // 2) + [Side.BUY] * (len(sides) % 2)


async def test_intents_are_deterministic_across_runs() -> None:
    _, first = await run([])
    _, second = await run([])
    key = [(i.intent_id, i.side, i.symbol) for i in of(first, Intent)]
    assert key == [(i.intent_id, i.side, i.symbol) for i in of(second, Intent)]


async def test_a_warm_restart_keeps_the_scenarios_and_never_doubles_a_position() -> None:
    _, first = await run([], data_dir="shared")
    held = {p.symbol: p.qty for p in of(first, PositionUpdate)}
    held = {symbol: qty for symbol, qty in held.items() if qty > 0}
    assert held, "the first run must end long somewhere for this test to mean anything"
    _, second = await run([], data_dir="shared")
    assert [e.scenario_id for e in of(second, ScenarioEnabled)] == ["sma_cross_demo"]
    for symbol, qty in held.items():
        first_intent = next(i for i in of(second, Intent) if i.symbol == symbol)
        # The new instance found the position: its first move closes it, never adds to it.
        assert (first_intent.side, first_intent.reduce_only) == (Side.SELL, True), symbol
        assert first_intent.size_hint == qty  # the whole restored position


async def test_class_path_strategies_and_correlation(strategies_module: str) -> None:
    sets = [
        f'strategy.class_paths=["every = {strategies_module}:EveryBar"]',
        f"strategy.scenarios=[{scenario('each', 'every', symbols=BTC)}]",
        "market.synthetic.max_bars=5",
    ]
    _, events = await run(sets)
    intents = of(events, Intent)
    bars = [b for b in of(events, KlineEvent) if b.symbol == "BTCUSDT"]
    assert len(intents) == len(bars) == 5
    assert all(i.size_hint == Decimal("0.001") for i in intents)


async def test_a_raising_strategy_disables_its_scenario_only(strategies_module: str) -> None:
    sets = [
        f'strategy.class_paths=["boom = {strategies_module}:Explodes", '
        f'"every = {strategies_module}:EveryBar"]',
        f"strategy.scenarios=[{scenario('bad', 'boom')}, {scenario('good', 'every', symbols=ETH)}]",
        "market.synthetic.max_bars=10",
    ]
    _, events = await run(sets)
    disabled = of(events, ScenarioDisabled)
    assert [d.scenario_id for d in disabled] == ["bad"]
    assert "ZeroDivisionError" in disabled[0].reason
    alerts = [a for a in of(events, Alert) if a.code == "scenario_failed"]
    assert len(alerts) == 1
    good = [i for i in of(events, Intent) if i.scenario_id == "good"]
    assert len(good) == 10  # the healthy scenario saw every bar


async def test_regime_condition_drops_entries(strategies_module: str) -> None:
    sets = [
        f'strategy.class_paths=["every = {strategies_module}:EveryBar"]',
        f"strategy.scenarios=[{scenario('gated', 'every', regime=UP_LOW)}]",
        "market.synthetic.max_bars=5",
    ]
    _, events = await run(sets)
    assert of(events, Intent) == []  # no analytics:context said up_low


@pytest.mark.parametrize("storage", [True, False], ids=["through-the-registry", "direct"])
async def test_scenario_commands_switch_scenarios(strategies_module: str, storage: bool) -> None:
    sets = [
        f'strategy.class_paths=["every = {strategies_module}:EveryBar"]',
        f"strategy.scenarios=[{scenario('each', 'every', enabled='false')}]",
        "market.synthetic.max_bars=20",
        f"storage.enabled={'true' if storage else 'false'}",
    ]
    config = load_config(None, [*BASE, *sets], environ={}, use_default_file=False)
    runtime = Runtime(config)
    runtime.assemble()
    events: list[tuple[str, Payload]] = []
    runtime.bus.subscribe_all(lambda t, p: events.append((t.name, p)))
    cli = runtime.attach("cli")
    await runtime.start()
    cli.publish(CONTROL_COMMAND, ControlCommand(cli.meta(), "scenario.enable", ("each",)))
    manager = next(c for _, _, c in runtime.components if isinstance(c, StrategyManager))
    assert manager.registry_driven is storage
    assert manager.enabled == {"each"}
    cli.publish(CONTROL_COMMAND, ControlCommand(cli.meta(), "scenario.disable", ("each",)))
    assert manager.enabled == set()
    await runtime.stop()
    assert [e.enabled_by for e in of(events, ScenarioEnabled)] == ["cli"]
    assert [d.reason for d in of(events, ScenarioDisabled)] == ["disabled by cli"]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ([f"strategy.scenarios=[{scenario('x', 'nope')}]"], "not registered"),
        (
            [f"strategy.scenarios=[{scenario('x', 'sma_cross', params='{fast = 9, slow = 3}')}]"],
            "must be below",
        ),
        (['strategy.class_paths=["a = no.such.module:Thing"]'], "ModuleNotFoundError"),
        (
            [f"strategy.scenarios=[{scenario('x', 'sma_cross')}, {scenario('x', 'breakout')}]"],
            "used twice",
        ),
    ],
)
async def test_bad_scenarios_fail_start_up_naming_them(sets: list[str], message: str) -> None:
    config = load_config(None, [*BASE, *sets], environ={}, use_default_file=False)
    with pytest.raises(RuntimeStartError, match=message):
        Runtime(config).assemble()


def test_scenario_error_is_a_value_error() -> None:
    assert issubclass(ScenarioError, ValueError)


async def test_the_view_reports_regime_and_position(strategies_module: str) -> None:
    seen: list[tuple[str | None, Decimal]] = []

    class Watcher:
        def __init__(self, params: Mapping[str, Any]) -> None: ...

        def on_event(self, topic: Topic[Any], payload: Payload, view: Any) -> list[IntentDraft]:
            seen.append((view.regime(), view.position()))
            return []

    sys.modules[strategies_module].Watcher = Watcher  # type: ignore[attr-defined]
    sets = [
        f'strategy.class_paths=["watch = {strategies_module}:Watcher"]',
        f"strategy.scenarios=[{scenario('w', 'watch', symbols=BTC)}]",
        "market.synthetic.max_bars=30",
    ]
    config = load_config(None, [*BASE, *sets], environ={}, use_default_file=False)
    runtime = Runtime(config)
    runtime.assemble()
    analytics = runtime.attach("analytics")
    await runtime.start()
    analytics.publish(
        ANALYTICS_CONTEXT,
        MarketContext(
            analytics.meta(), "BTCUSDT", "60s", 0, Trend.UP, VolatilityBucket.LOW, "up_low"
        ),
    )
    await runtime.wait_stopped(10)
    await runtime.stop()
    assert seen
    assert seen[-1] == ("up_low", Decimal(0))
