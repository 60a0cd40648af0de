"""The Orchestrator in a real Runtime: boot and shutdown order, commands, pause, failures."""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from contracts.control import ControlCommand, ControlState
from contracts.enums import Lifecycle, Side
from contracts.market import (
    MarketConnected,
    MarketDisconnected,
    MarketErrorEvent,
    MarketSubscribeRequest,
)
from contracts.meta import Payload
from contracts.ports import ComponentContext, ExchangeSpec, PlaneSpec
from contracts.risk import ApprovedIntent, RejectedIntent
from contracts.strategy import Intent
from contracts.topics import CONTROL_COMMAND, CONTROL_STATE, STRATEGY_INTENT, Topic
from planes.bus import PlaneHandle
from planes.config import load_config
from planes.runtime import Runtime, RuntimeStartError
from plugins.builtin import BUILTIN_PLUGINS
from plugins.hookspecs import hookimpl

FAKE_PLUGIN = "fake_orchestrator_plugin"

BASE = (
    "runtime.mode=backtest",  # historical clock: the generator runs at full speed, no waiting
    "market.synthetic.bar_s=60",
    "observability.status_interval_s=0",
    "plugins.entry_points=false",
    "market.synthetic.max_bars=0",  # never ends by itself
    "control.connect_timeout_s=2",
    "control.disconnect_timeout_s=2",
)

Events = list[tuple[str, Payload]]


def make_runtime(*sets: str, plugin: types.ModuleType | None = None) -> tuple[Runtime, Events]:
    """An assembled runtime and the list a catch-all tap fills with ``(topic name, payload)``."""
    config = load_config(None, [*BASE, *sets], environ={}, use_default_file=False)
    builtin = [*BUILTIN_PLUGINS, (FAKE_PLUGIN, FAKE_PLUGIN)] if plugin else BUILTIN_PLUGINS
    runtime = Runtime(config, builtin=builtin)
    runtime.assemble()
    events: Events = []

    def tap(topic: Topic[Any], payload: Payload) -> None:
        events.append((topic.name, payload))

    runtime.bus.subscribe_all(tap)
    return runtime, events


@pytest.fixture
def fake_plugin(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """An in-memory plugin module; tests attach hook implementations to it."""
    module = types.ModuleType(FAKE_PLUGIN)
    monkeypatch.setitem(sys.modules, FAKE_PLUGIN, module)
    return module


def handle(runtime: Runtime, plane: str) -> PlaneHandle:
    return runtime.attach(plane)


def states(events: Events) -> list[ControlState]:
    return [p for _, p in events if isinstance(p, ControlState)]


def lifecycles(events: Events) -> list[Lifecycle]:
    seen: list[Lifecycle] = []
    for state in states(events):
        if not seen or seen[-1] is not state.lifecycle:
            seen.append(state.lifecycle)
    return seen


def control_flow(events: Events) -> list[str]:
    """Lifecycle states and market connection traffic, in order (no market data)."""
    flow = []
    for name, payload in events:
        if isinstance(payload, ControlState):
            flow.append(f"state {payload.lifecycle.value}")
        elif name in (
            "state:recovery",
            "market:connect",
            "market:subscribe",
            "market:connected",
            "market:disconnect",
            "market:disconnected",
        ):
            flow.append(name)
    return flow


async def command(runtime: Runtime, name: str, command_id: str, *args: str) -> ControlState:
    """Publish a ``control:command`` as the CLI and return the Orchestrator's answer."""
    cli = handle(runtime, "cli")
    answer: asyncio.Future[ControlState] = asyncio.get_running_loop().create_future()

    def on_state(state: ControlState) -> None:
        if state.reply_to == command_id and not answer.done():
            answer.set_result(state)

    sub = runtime.bus.subscribe(CONTROL_STATE, on_state)
    try:
        cli.publish(CONTROL_COMMAND, ControlCommand(cli.meta(), name, args, command_id))
        return await asyncio.wait_for(answer, 2)
    finally:
        sub.cancel()


def intent(strategy: PlaneHandle, intent_id: str, size: Decimal | None) -> Intent:
    return Intent(
        strategy.meta(f"corr-{intent_id}"),
        intent_id=intent_id,
        scenario_id="sc-1",
        strategy="test",
        symbol="BTCUSDT",
        side=Side.BUY,
        size_hint=size,
    )


def verdicts(events: Events) -> list[ApprovedIntent | RejectedIntent]:
    return [p for _, p in events if isinstance(p, ApprovedIntent | RejectedIntent)]


def tickers(events: Events) -> int:
    return sum(1 for name, _ in events if name == "market:ticker")


# -- boot and shutdown ---------------------------------------------------------------------


async def test_boot_and_shutdown_sequences() -> None:
    runtime, events = make_runtime('market.symbols=["BTCUSDT", "SOLUSDT"]')
    await asyncio.wait_for(runtime.start(), 5)
    assert runtime.lifecycle is Lifecycle.RUNNING
    assert not runtime.paused
    assert control_flow(events) == [
        "state STARTING",
        "state:recovery",  # storage rebuilt the state before the market connects
        "state STARTING",
        "market:connect",
        "market:subscribe",
        "market:connected",
        "state RUNNING",
    ]
    subscribe = next(p for _, p in events if isinstance(p, MarketSubscribeRequest))
    assert subscribe.symbols == ("BTCUSDT", "SOLUSDT")
    assert subscribe.channels == ()  # market.channels is empty: each source streams its own
    connected = next(p for _, p in events if isinstance(p, MarketConnected))
    assert connected.source == "synthetic"
    boot = len(events)

    await asyncio.wait_for(runtime.stop(), 5)
    assert control_flow(events[boot:]) == [
        "state STOPPING",
        "market:disconnect",
        "market:disconnected",
        "state STOPPED",
    ]
    assert lifecycles(events) == [
        Lifecycle.STARTING,
        Lifecycle.RUNNING,
        Lifecycle.STOPPING,
        Lifecycle.STOPPED,
    ]
    assert await runtime.wait_stopped(1)  # the runtime saw STOPPED too
    assert all(s.meta.source.value == "system" for s in states(events))


async def test_no_task_of_ours_is_left_after_stop() -> None:
    before = asyncio.all_tasks()
    runtime, _ = make_runtime()
    await asyncio.wait_for(runtime.start(), 5)
    await asyncio.sleep(0.01)
    assert asyncio.all_tasks() - before  # the generator is running
    await asyncio.wait_for(runtime.stop(), 5)
    assert asyncio.all_tasks() - before == set()
    assert runtime.bus.pending_tasks == 0


async def test_stop_command_stops_and_answers() -> None:
    runtime, events = make_runtime()
    await asyncio.wait_for(runtime.start(), 5)
    answer = await command(runtime, "stop", "c-stop", "operator", "said", "so")
    assert answer.lifecycle is Lifecycle.STOPPING
    assert answer.detail == "operator said so"
    again = await command(runtime, "stop", "c-stop-2")
    assert again.detail == "already stopping"
    assert await runtime.wait_stopped(5)
    await asyncio.wait_for(runtime.stop(), 5)
    assert lifecycles(events)[-2:] == [Lifecycle.STOPPING, Lifecycle.STOPPED]


async def test_end_of_data_stops_a_backtest_by_itself() -> None:
    runtime, events = make_runtime("market.synthetic.max_bars=3", "market.synthetic.tick_ms=20000")
    await asyncio.wait_for(runtime.run(), 5)  # returns without request_stop or a duration
    assert lifecycles(events) == [
        Lifecycle.STARTING,
        Lifecycle.RUNNING,
        Lifecycle.STOPPING,
        Lifecycle.STOPPED,
    ]
    # no stop command: only the Orchestrator's own boot-time "recover" request
    assert [p.name for _, p in events if isinstance(p, ControlCommand)] == ["recover"]
    stopping = next(s for s in states(events) if s.lifecycle is Lifecycle.STOPPING)
    assert stopping.detail == "market data ended"
    reasons = [p.reason for _, p in events if isinstance(p, MarketDisconnected)]
    assert reasons[0] == "end_of_data"


# -- commands ------------------------------------------------------------------------------


async def test_status_answers_with_reply_to_and_info() -> None:
    runtime, _ = make_runtime()
    await asyncio.wait_for(runtime.start(), 5)
    try:
        answer = await command(runtime, "status", "c-status")
        assert answer.lifecycle is Lifecycle.RUNNING
        assert answer.paused is False
        assert answer.reply_to == "c-status"
        assert {
            "mode",
            "market_source",
            "symbols",
            "uptime_s",
            "clock",
            "market_connected",
            "commands",
        } <= set(answer.info)
        assert answer.info["mode"] == "backtest"
        assert answer.info["market_source"] == "synthetic"
        assert answer.info["symbols"] == "BTCUSDT,ETHUSDT"
        assert answer.info["market_connected"] == "true"
        clock = datetime.fromisoformat(answer.info["clock"])
        assert round(clock.timestamp() * 1000) == answer.meta.ts  # data time, not wall time
    finally:
        await asyncio.wait_for(runtime.stop(), 5)


async def test_pause_stops_trading_but_not_monitoring_and_resume_restores_it() -> None:
    runtime, events = make_runtime()
    await asyncio.wait_for(runtime.start(), 5)
    strategy = handle(runtime, "strategy")
    try:
        paused = await command(runtime, "pause", "c-pause")
        assert paused.lifecycle is Lifecycle.PAUSED
        assert paused.paused is True
        assert runtime.paused is True

        strategy.publish(STRATEGY_INTENT, intent(strategy, "i-1", Decimal("0.5")))
        (verdict,) = verdicts(events)
        assert isinstance(verdict, RejectedIntent)
        assert verdict.reason_code == "paused"
        assert verdict.intent.intent_id == "i-1"
        assert verdict.meta.correlation_id == "corr-i-1"
        assert verdict.meta.source.value == "risk"

        seen = tickers(events)
        await asyncio.sleep(0.02)
        assert tickers(events) > seen  # market data keeps flowing while paused

        resumed = await command(runtime, "resume", "c-resume")
        assert resumed.lifecycle is Lifecycle.RUNNING
        assert resumed.paused is False
        strategy.publish(STRATEGY_INTENT, intent(strategy, "i-1", Decimal("0.5")))
        approved = verdicts(events)[-1]
        assert isinstance(approved, ApprovedIntent)
        assert approved.qty == Decimal("0.5")
        assert approved.order_id == "sc-1:i-1"

        strategy.publish(STRATEGY_INTENT, intent(strategy, "i-2", Decimal(0)))
        no_size = verdicts(events)[-1]
        assert isinstance(no_size, RejectedIntent)
        assert no_size.reason_code == "no_size"
    finally:
        await asyncio.wait_for(runtime.stop(), 5)
    assert lifecycles(events) == [
        Lifecycle.STARTING,
        Lifecycle.RUNNING,
        Lifecycle.PAUSED,
        Lifecycle.RUNNING,
        Lifecycle.STOPPING,
        Lifecycle.STOPPED,
    ]


async def test_pause_and_resume_are_refused_in_the_wrong_state() -> None:
    runtime, _ = make_runtime()
    await asyncio.wait_for(runtime.start(), 5)
    try:
        refused = await command(runtime, "resume", "c-1")
        assert refused.lifecycle is Lifecycle.RUNNING
        assert "cannot resume" in refused.detail
        await command(runtime, "pause", "c-2")
        twice = await command(runtime, "pause", "c-3")
        assert twice.lifecycle is Lifecycle.PAUSED
        assert "cannot pause" in twice.detail
        await command(runtime, "stop", "c-4")
        stopping = await command(runtime, "pause", "c-5")
        assert stopping.lifecycle is Lifecycle.STOPPING
        assert "cannot pause" in stopping.detail
    finally:
        await asyncio.wait_for(runtime.stop(), 5)


async def test_intents_are_rejected_while_stopping() -> None:
    runtime, events = make_runtime()
    await asyncio.wait_for(runtime.start(), 5)
    strategy = handle(runtime, "strategy")

    def on_state(state: ControlState) -> None:
        if state.lifecycle is Lifecycle.STOPPING:
            strategy.publish(STRATEGY_INTENT, intent(strategy, "late", Decimal(1)))

    runtime.bus.subscribe(CONTROL_STATE, on_state)
    await asyncio.wait_for(runtime.stop(), 5)
    (verdict,) = verdicts(events)
    assert isinstance(verdict, RejectedIntent)
    assert verdict.reason_code == "lifecycle"
    assert "STOPPING" in verdict.detail


async def test_other_commands_are_left_to_other_planes() -> None:
    runtime, events = make_runtime()
    await asyncio.wait_for(runtime.start(), 5)
    try:
        before = len(states(events))
        cli = handle(runtime, "cli")
        cli.publish(CONTROL_COMMAND, ControlCommand(cli.meta(), "scenario.enable", ("x",), "c"))
        assert len(states(events)) == before
    finally:
        await asyncio.wait_for(runtime.stop(), 5)


# -- failures ------------------------------------------------------------------------------


class FakeSource:
    """A market source whose connect hangs or raises, as the test decides."""

    name = "fake"
    endpoint = "fake://"
    behaviour = "hang"

    def __init__(self, ctx: ComponentContext) -> None:
        self.ctx = ctx

    async def connect(self) -> None:
        if self.behaviour == "hang":
            await asyncio.Event().wait()
        raise ConnectionRefusedError("venue said no")

    async def disconnect(self) -> None:
        return None

    async def subscribe(self, symbols: Sequence[str], channels: Sequence[str]) -> None:
        return None


def add_exchange(plugin: types.ModuleType, behaviour: str) -> None:
    source = type(f"{behaviour.title()}Source", (FakeSource,), {"behaviour": behaviour})

    @hookimpl
    def planes_register_exchanges() -> Sequence[ExchangeSpec]:
        return [ExchangeSpec(name="fake", market_data=source)]

    plugin.planes_register_exchanges = planes_register_exchanges  # type: ignore[attr-defined]


FAST_FAIL = (
    "market.source=fake",
    "control.connect_timeout_s=0.2",
    "control.disconnect_timeout_s=0.2",
)


async def test_a_source_that_never_connects_fails_start_within_the_timeout(
    fake_plugin: types.ModuleType,
) -> None:
    add_exchange(fake_plugin, "hang")
    before = asyncio.all_tasks()
    runtime, events = make_runtime(*FAST_FAIL, plugin=fake_plugin)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(RuntimeStartError, match=r"did not connect within 0\.2s") as info:
        await asyncio.wait_for(runtime.start(), 5)
    assert loop.time() - started < 2
    assert "market source 'fake'" in str(info.value)
    assert "control/orchestrator" in str(info.value)
    assert lifecycles(events)[0] is Lifecycle.STARTING
    assert Lifecycle.RUNNING not in lifecycles(events)
    assert asyncio.all_tasks() - before == set()  # the hanging connect was cancelled


async def test_a_source_whose_connect_raises_reports_the_last_error(
    fake_plugin: types.ModuleType,
) -> None:
    add_exchange(fake_plugin, "raise")
    # A long connect timeout: a connect that raises must fail the boot at once, not after it.
    runtime, events = make_runtime(
        "market.source=fake", "control.connect_timeout_s=30", plugin=fake_plugin
    )
    with pytest.raises(RuntimeStartError, match="failed to connect") as info:
        await asyncio.wait_for(runtime.start(), 5)
    errors = [p for _, p in events if isinstance(p, MarketErrorEvent)]
    assert [(e.source, e.code) for e in errors] == [("fake", "connect_failed")]
    assert "ConnectionRefusedError: venue said no" in errors[0].message
    assert "last error: connect_failed: ConnectionRefusedError: venue said no" in str(info.value)


async def test_an_unknown_source_fails_start_naming_the_known_ones() -> None:
    config = load_config(None, [*BASE, "market.source=nope"], environ={}, use_default_file=False)
    runtime = Runtime(config)
    with pytest.raises(RuntimeStartError, match="'nope'") as info:
        await runtime.start()
    assert "known: bybit, replay, synthetic" in str(info.value)


class Recorder:
    """A component that logs its calls; ``fail`` makes its start raise."""

    def __init__(self, name: str, calls: list[str], *, fail: bool = False) -> None:
        self.name = name
        self.calls = calls
        self.fail = fail

    async def start(self) -> None:
        self.calls.append(f"start {self.name}")
        if self.fail:
            raise OSError("disk on fire")

    async def stop(self) -> None:
        self.calls.append(f"stop {self.name}")


def add_planes(plugin: types.ModuleType, calls: list[str]) -> None:
    def factory(name: str, *, fail: bool = False) -> Callable[[ComponentContext], Recorder]:
        return lambda ctx: Recorder(name, calls, fail=fail)

    @hookimpl
    def planes_register_planes() -> Sequence[PlaneSpec]:
        return [
            PlaneSpec(name="boom", plane="analytics", factory=factory("boom", fail=True)),
            PlaneSpec(name="keeper", plane="storage", factory=factory("keeper")),
            PlaneSpec(name="never", plane="execution", factory=factory("never")),
        ]

    plugin.planes_register_planes = planes_register_planes  # type: ignore[attr-defined]


async def test_a_component_that_fails_to_start_fails_start_up_and_the_rest_are_stopped(
    fake_plugin: types.ModuleType,
) -> None:
    calls: list[str] = []
    add_planes(fake_plugin, calls)
    before = asyncio.all_tasks()
    runtime, events = make_runtime(plugin=fake_plugin)
    with pytest.raises(RuntimeStartError) as info:
        await asyncio.wait_for(runtime.start(), 5)
    message = str(info.value)
    assert "analytics/boom" in message
    assert FAKE_PLUGIN in message
    assert "OSError: disk on fire" in message
    # storage (10) and analytics (30) started; execution (60) and control never did.
    assert calls == ["start keeper", "start boom", "stop boom", "stop keeper"]
    assert states(events) == []
    assert asyncio.all_tasks() - before == set()
