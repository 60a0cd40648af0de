"""The StrategyManager as a ``Stateful`` component, and registry-driven scenario switching.

A ``Desk`` is a StrategyManager on a bare EventBus with the planes around it played by the
test; ``journal`` records every event in bus order, as the storage plane's catch-all
subscription does. The recovery property: after every event the live manager's export equals
what a fresh manager rebuilds by replaying the journal so far (only its ``state_topics``), and
what a manager restored from any earlier export rebuilds by replaying the rest: through the
storage plane's ``replay_rows`` on the events' journal text (position updates from their
``PositionView``, as at boot), and as whole payloads to ``replay_event``.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.control import ControlCommand
from contracts.enums import Side
from contracts.execution import PositionUpdate
from contracts.market import KlineEvent
from contracts.meta import Payload
from contracts.ports import Stateful, StrategySpec
from contracts.rights import rights_for
from contracts.state import RegistryChanged
from contracts.strategy import Intent, IntentDraft, ScenarioDisabled, ScenarioEnabled
from contracts.system import Alert
from contracts.topics import (
    CONTROL_COMMAND,
    MARKET_KLINE,
    PORTFOLIO_POSITION,
    STATE_REGISTRY,
    Topic,
    TopicRegistry,
)
from planes.bus import EventBus
from planes.clock import HistoricalClock
from planes.config import Config, load_config
from planes.runtime import PlaneContext
from planes.strategy.builtin import BUILTIN_STRATEGIES
from planes.strategy.manager import StrategyManager
from tests.fakes.recovery import Views
from tests.fakes.recovery import replay as replay_like_boot

T0 = 1_704_067_200_000
BOOM = Decimal(13)
"""A closing price that makes the ``boom`` strategy raise."""


class Boom:
    """Raises on a bar that closes at ``BOOM``; buys otherwise (test strategy)."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = params

    def on_event(self, topic: Topic[Any], payload: Payload, view: Any) -> Sequence[IntentDraft]:
        if isinstance(payload, KlineEvent):
            if payload.close == BOOM:
                raise ZeroDivisionError("boom")
            return [IntentDraft(Side.BUY, size_hint=Decimal(1))]
        return []


CATALOG = {spec.name: spec for spec in (*BUILTIN_STRATEGIES, StrategySpec("boom", Boom))}
SCENARIOS = (
    'strategy.scenarios=[{id = "a", strategy = "sma_cross", params = {fast = 2, slow = 3}}, '
    '{id = "b", strategy = "boom", symbols = ["BTCUSDT"]}, '
    '{id = "c", strategy = "breakout", symbols = ["ETHUSDT"], enabled = false}]'
)


@functools.cache
def configure(*, storage: bool, extra: tuple[str, ...] = ()) -> Config:
    sets = [
        'market.symbols=["BTCUSDT", "ETHUSDT"]',
        SCENARIOS,
        f"storage.enabled={'true' if storage else 'false'}",
        *extra,
    ]
    return load_config(None, sets, environ={}, use_default_file=False)


class Desk:
    """A StrategyManager on its own bus, with storage, control, execution and market played."""

    def __init__(self, *, storage: bool, extra: tuple[str, ...] = (), start: bool = True) -> None:
        config = configure(storage=storage, extra=extra)
        self.clock = HistoricalClock(T0)
        self.bus = EventBus(TopicRegistry(), now_ms=self.clock.now_ms)
        # The storage plugin registers the topic whenever it is loaded, storage on or off.
        self.bus.register_topic(STATE_REGISTRY, "planes.storage")
        self.journal: list[tuple[str, Payload]] = []
        self.bus.subscribe_all(lambda t, p: self.journal.append((t.name, p)))
        handle = self.bus.handle("strategy", *rights_for("strategy"))
        context = PlaneContext(handle, self.clock, config, {}, {}, CATALOG, {})
        self.manager = StrategyManager(context)
        if start:
            asyncio.run(self.manager.start())
        self.storage = self.bus.handle("storage", *rights_for("storage"))
        self.cli = self.bus.handle("cli", *rights_for("cli"))
        self.execution = self.bus.handle("execution", *rights_for("execution"))
        self.market = self.bus.handle("market", *rights_for("market"))
        self.bars = 0

    def of(self, kind: type[Any]) -> list[Any]:
        return [p for _, p in self.journal if isinstance(p, kind)]

    def registry(  # noqa: PLR0917 - positional in RegistryChanged's field order, as read aloud
        self,
        scenario_id: str,
        action: str,
        status: str,
        version: str = "1",
        strategy: str = "",
        params: Mapping[str, Any] | None = None,
        *,
        regime: str | None = None,
        actor: str = "cli",
        entity: str = "scenario",
    ) -> None:
        self.storage.publish(
            STATE_REGISTRY,
            RegistryChanged(
                self.storage.meta(),
                entity=entity,
                entity_id=scenario_id,
                action=action,
                status=status,
                version=version,
                strategy=strategy,
                params=dict(params or {}),
                regime=regime,
                actor=actor,
            ),
        )

    def command(self, name: str, *args: str) -> None:
        self.cli.publish(CONTROL_COMMAND, ControlCommand(self.cli.meta(), name, args))

    def position(self, symbol: str, qty: Decimal) -> None:
        zero = Decimal(0)
        self.execution.publish(
            PORTFOLIO_POSITION,
            PositionUpdate(self.execution.meta(), symbol, qty, zero, zero, zero, zero, zero, zero),
        )

    def kline(self, symbol: str, close: Decimal) -> None:
        self.bars += 1
        self.clock.advance_to(T0 + self.bars * 60_000)
        end = self.clock.now_ms()
        bar = KlineEvent(
            self.market.meta(), "test", symbol, "1", end - 60_000, end - 1,
            close, close, close, close, Decimal(1), closed=True,
        )  # fmt: skip
        self.market.publish(MARKET_KLINE, bar)


def replica(*, storage: bool) -> tuple[StrategyManager, list[Any]]:
    """A manager built like the live one but never started, and what its bus carries."""
    desk = Desk(storage=storage, start=False)
    return desk.manager, desk.journal


def replay(
    manager: StrategyManager, events: Sequence[tuple[str, Payload]], *, views: Views
) -> None:
    """Replay ``events`` into the manager as recovery does (``tests.fakes.recovery``)."""
    replay_like_boot(manager, "strategy", events, views=views)


def test_the_manager_is_stateful_under_its_key() -> None:
    desk = Desk(storage=True)
    assert isinstance(desk.manager, Stateful)
    assert desk.manager.state_key == "strategy.scenarios"
    assert desk.manager.state_topics == {
        "strategy:scenarioEnabled",
        "strategy:scenarioDisabled",
        "portfolio:position_update",
        "state:registry",
    }
    assert "state:registry" not in Desk(storage=False).manager.state_topics


def test_the_export_holds_the_enabled_scenarios_and_positions_as_json() -> None:
    desk = Desk(storage=False)
    desk.position("BTCUSDT", Decimal("0.25"))
    state = desk.manager.export_state()
    assert state == {
        "format": 1,
        "scenarios": [
            {
                "id": "a",
                "strategy": "sma_cross",
                "params": {"fast": 2, "slow": 3},
                "symbols": [],
                "regime": "",
                "version": 1,
            },
            {
                "id": "b",
                "strategy": "boom",
                "params": {},
                "symbols": ["BTCUSDT"],
                "regime": "",
                "version": 1,
            },
        ],
        "positions": {"BTCUSDT": "0.25"},
    }
    assert json.loads(json.dumps(state)) == state


# -- registry-driven mode ----------------------------------------------------------------------


def test_registry_events_switch_scenarios_and_raw_commands_are_ignored() -> None:
    desk = Desk(storage=True)
    manager = desk.manager
    assert manager.registry_driven
    assert desk.of(ScenarioEnabled) == []  # announced once recovery is complete, not at start
    desk.command("scenario.disable", "a")
    desk.command("scenario.enable", "c")
    assert manager.enabled == {"a", "b"}

    desk.registry("c", "enabled", "enabled", "1", "breakout", {"window": 3})
    desk.registry("a", "disabled", "disabled", "1", "sma_cross", {"fast": 2, "slow": 3})
    assert manager.enabled == {"b", "c"}
    (enabled,) = desk.of(ScenarioEnabled)
    assert (enabled.scenario_id, enabled.enabled_by, enabled.params) == ("c", "cli", {"window": 3})
    (disabled,) = desk.of(ScenarioDisabled)
    assert (disabled.scenario_id, disabled.reason) == ("a", "disabled by cli")

    # An id config never named: built from the event, on every market symbol.
    desk.registry(
        "fresh", "enabled", "enabled", "3", "rsi_reversion", {"window": 4}, regime="range_low"
    )
    spec = manager.scenarios["fresh"]
    assert (spec.strategy, spec.version, spec.regime, spec.symbols) == (
        "rsi_reversion",
        3,
        "range_low",
        (),
    )
    desk.kline("ETHUSDT", Decimal(10))  # every symbol has an instance: no error
    assert "fresh" in manager.enabled

    # A rollback rebuilds at the event's version and params, and announces it.
    desk.registry("fresh", "rolled_back", "enabled", "2", "rsi_reversion", {"window": 6})
    assert manager.scenarios["fresh"].version == 2
    assert [(e.scenario_id, e.version) for e in desk.of(ScenarioEnabled)][-1] == ("fresh", 2)
    # The same version again changes nothing and announces nothing.
    before = len(desk.journal)
    desk.registry("fresh", "restored", "enabled", "2", "rsi_reversion", {"window": 6}, actor="")
    assert len(desk.journal) == before + 1  # only the registry event itself

    desk.registry("fresh", "retired", "retired", "2", "rsi_reversion", {"window": 6})
    desk.registry("c", "proposed", "proposed", "2", "breakout", {"window": 5})
    desk.registry("c", "activated", "active", "7", entity="model")
    assert manager.enabled == {"b", "c"}
    assert manager.scenarios["c"].version == 1
    assert desk.of(ScenarioDisabled)[-1].reason == "retired by cli"


def test_a_registry_scenario_that_cannot_be_built_raises_an_alert() -> None:
    desk = Desk(storage=True)
    desk.registry("x", "enabled", "enabled", "1", "no_such_strategy")
    desk.registry("a", "rolled_back", "enabled", "2", "sma_cross", {"fast": 9, "slow": 3})
    desk.registry("y", "enabled", "enabled", "v2", "breakout")
    codes = [(a.code, a.labels.get("scenario")) for a in desk.of(Alert)]
    assert codes == [("scenario_enable_failed", s) for s in ("x", "a", "y")]
    assert desk.manager.enabled == {"a", "b"}
    assert desk.manager.scenarios["a"].version == 1  # the failed rollback left v1 running


def test_registry_mode_announces_the_enabled_set_once_recovery_is_complete() -> None:
    desk = Desk(storage=True)
    desk.registry("c", "restored", "enabled", "1", "breakout", {"window": 3}, actor="")
    desk.registry("b", "restored", "disabled", "1", "boom", actor="")
    desk.manager.recovered()
    announced = [(e.scenario_id, e.enabled_by) for e in desk.of(ScenarioEnabled)]
    assert announced == [("c", "registry restored"), ("a", "recovery")]
    assert [d.reason for d in desk.of(ScenarioDisabled)] == ["restored by the registry"]


@pytest.mark.parametrize(
    "extra", [(), ('plugins.disabled=["planes.storage"]', "storage.enabled=true")]
)
def test_without_storage_commands_switch_scenarios_and_registry_events_are_ignored(
    extra: tuple[str, ...],
) -> None:
    desk = Desk(storage=False, extra=extra)
    manager = desk.manager
    assert not manager.registry_driven
    assert [e.scenario_id for e in desk.of(ScenarioEnabled)] == ["a", "b"]  # at start
    desk.registry("a", "disabled", "disabled", "1", "sma_cross")
    desk.registry("c", "enabled", "enabled", "1", "breakout")
    assert manager.enabled == {"a", "b"}
    desk.command("scenario.enable", "c")
    desk.command("scenario.disable", "a")
    assert manager.enabled == {"b", "c"}
    assert desk.of(ScenarioEnabled)[-1].enabled_by == "cli"
    assert [d.reason for d in desk.of(ScenarioDisabled)] == ["disabled by cli"]


def test_registry_mode_without_the_registry_topic_falls_back_to_commands() -> None:
    config = configure(storage=True)
    clock = HistoricalClock(T0)
    bus = EventBus(TopicRegistry(), now_ms=clock.now_ms)  # state:registry never registered
    handle = bus.handle("strategy", *rights_for("strategy"))
    manager = StrategyManager(PlaneContext(handle, clock, config, {}, {}, CATALOG, {}))
    asyncio.run(manager.start())
    assert not manager.registry_driven
    cli = bus.handle("cli", *rights_for("cli"))
    cli.publish(CONTROL_COMMAND, ControlCommand(cli.meta(), "scenario.disable", ("a",)))
    assert manager.enabled == {"b"}


# -- restore -------------------------------------------------------------------------------------


def test_a_restored_position_is_not_doubled_by_a_new_instance() -> None:
    live = Desk(storage=True)
    live.position("BTCUSDT", Decimal("0.5"))
    state = json.loads(json.dumps(live.manager.export_state()))
    # The restart: new instances (empty indicator windows) and the position from the snapshot.
    desk = Desk(storage=True)
    desk.manager.restore_state(state)
    desk.manager.disable("b", "keep the test to sma_cross")
    for close in (12, 11, 10, 14, 16, 9):  # an upward cross at the 4th bar, downward at the 6th
        desk.kline("BTCUSDT", Decimal(close))
    intents = [(i.side, i.size_hint, i.reduce_only) for i in desk.of(Intent)]
    assert intents == [(Side.SELL, Decimal("0.5"), True)]


def test_restore_replaces_the_enabled_set_and_reports_what_cannot_run() -> None:
    desk = Desk(storage=True)
    state = desk.manager.export_state()
    gone = {**state["scenarios"][0], "id": "old", "strategy": "retired_plugin"}
    desk.manager.restore_state({**state, "scenarios": [state["scenarios"][1], gone]})
    assert desk.manager.enabled == {"b"}
    assert desk.of(Alert) == []  # nothing is published while the state is restored
    desk.manager.recovered()
    (alert,) = desk.of(Alert)
    assert alert.code == "scenario_not_restored"
    assert "old" in alert.message
    assert "retired_plugin" in alert.message


def test_an_unknown_state_format_is_refused() -> None:
    desk = Desk(storage=True)
    with pytest.raises(ValueError, match="format"):
        desk.manager.restore_state({"format": 99, "scenarios": [], "positions": {}})


# -- the recovery property ---------------------------------------------------------------------

IDS = st.sampled_from(("a", "b", "c", "d"))
PARAMS = st.sampled_from(
    ({}, {"fast": 2, "slow": 5}, {"window": 4}, {"fast": 9, "slow": 3}, {"qty": 1})
)
registry_events = st.tuples(
    st.just("registry"),
    st.sampled_from(("scenario", "scenario", "scenario", "model")),
    IDS,
    st.sampled_from(("enabled", "disabled", "retired", "rolled_back", "restored", "proposed")),
    st.sampled_from(("enabled", "enabled", "disabled", "retired", "proposed")),
    st.sampled_from(("1", "2", "3", "x")),
    st.sampled_from(("sma_cross", "breakout", "rsi_reversion", "boom", "nope", "")),
    PARAMS,
    st.sampled_from((None, "up_low")),
)
commands = st.tuples(
    st.just("command"), st.sampled_from(("scenario.enable", "scenario.disable")), IDS
)
positions = st.tuples(
    st.just("position"),
    st.sampled_from(("BTCUSDT", "ETHUSDT")),
    st.integers(-3, 3).map(lambda n: Decimal(n) / 4),
)
klines = st.tuples(
    st.just("kline"),
    st.sampled_from(("BTCUSDT", "ETHUSDT")),
    st.sampled_from((Decimal(10), Decimal(11), Decimal(12), BOOM)),
)
events = st.lists(
    st.one_of(registry_events, commands, positions, klines, st.just(("recovered",))),
    max_size=25,
)


def play(desk: Desk, event: tuple[Any, ...]) -> None:
    kind = event[0]
    if kind == "registry":
        _, entity, sid, action, status, version, strategy, params, regime = event
        desk.registry(sid, action, status, version, strategy, params, regime=regime, entity=entity)
    elif kind == "command":
        desk.command(event[1], event[2])
    elif kind == "position":
        desk.position(event[1], event[2])
    elif kind == "kline":
        desk.kline(event[1], event[2])
    else:
        desk.manager.recovered()


@pytest.mark.parametrize("views", [True, "groups", False], ids=["views", "groups", "payloads"])
@pytest.mark.parametrize("storage", [True, False], ids=["registry", "commands"])
@given(script=events)
def test_replay_and_restore_rebuild_the_live_state_after_every_event(
    storage: bool, views: Views, script: list[tuple[Any, ...]]
) -> None:
    live = Desk(storage=storage)
    states = [live.manager.export_state()]
    marks = [len(live.journal)]
    for event in script:
        play(live, event)
        states.append(live.manager.export_state())
        marks.append(len(live.journal))
    for state in states:
        assert json.loads(json.dumps(state)) == state

    fresh, published = replica(storage=storage)
    replay(fresh, live.journal[: marks[0]], views=views)
    assert fresh.export_state() == states[0]
    for k in range(1, len(states)):
        replay(fresh, live.journal[marks[k - 1] : marks[k]], views=views)
        assert fresh.export_state() == states[k], f"replay up to event {k}"
    assert published == []

    for j, snapshot in enumerate(states):
        restored, published = replica(storage=storage)
        restored.restore_state(json.loads(json.dumps(snapshot)))
        assert restored.export_state() == snapshot
        for k in range(j + 1, len(states)):
            replay(restored, live.journal[marks[k - 1] : marks[k]], views=views)
            assert restored.export_state() == states[k], f"restore {j} + replay up to {k}"
        assert published == []
