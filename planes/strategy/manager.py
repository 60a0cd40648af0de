"""StrategyManager: runs the enabled scenarios and turns their drafts into ``strategy:intent``.

A scenario is a strategy name + params + an optional regime condition + a version
(``[[strategy.scenarios]]``). For every enabled scenario and each of its symbols the manager
builds one strategy instance and calls it for the closed ``market:kline`` bars and the
``analytics:features`` of that symbol, with a read-only view (clock time, latest features,
latest regime, position). Each returned ``IntentDraft`` becomes an ``Intent`` stamped with the
causing event's correlation id, a deterministic ``intent_id`` and the scenario.

* While a scenario's regime condition does not hold, its *entries* are dropped (exits pass),
  but the strategy still sees every bar so its indicators stay current.
* A strategy that raises (or returns something that is not an ``IntentDraft``) is isolated:
  its scenario is disabled on every symbol, with ``strategy:scenarioDisabled`` and an
  ``observability:alert``; the other scenarios go on.
* ``control:command`` ``scenario.enable ID`` / ``scenario.disable ID`` switch scenarios at run
  time (``strategy:scenarioEnabled`` / ``strategy:scenarioDisabled``); ``scenarios`` lists them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, cast

import attrs
import structlog

from contracts.analytics import FeatureVector, MarketContext
from contracts.control import ControlCommand
from contracts.enums import Severity
from contracts.execution import PositionUpdate
from contracts.market import KlineEvent
from contracts.meta import Payload
from contracts.ports import ComponentContext, Strategy, StrategySpec
from contracts.strategy import Intent, IntentDraft, ParamValue, ScenarioDisabled, ScenarioEnabled
from contracts.system import Alert
from contracts.topics import (
    ANALYTICS_CONTEXT,
    ANALYTICS_FEATURES,
    CONTROL_COMMAND,
    MARKET_KLINE,
    OBSERVABILITY_ALERT,
    PORTFOLIO_POSITION,
    STRATEGY_INTENT,
    STRATEGY_SCENARIO_DISABLED,
    STRATEGY_SCENARIO_ENABLED,
    Topic,
)
from planes.config import Config, ScenarioSpec

log = structlog.get_logger("planes.strategy")
_ZERO = Decimal(0)


class ScenarioError(ValueError):
    """A scenario cannot be built (unknown strategy, bad params); the message names it."""


class _View:
    """The read-only view one strategy instance gets (``contracts.ports.StrategyView``)."""

    __slots__ = ("_manager", "symbol")

    def __init__(self, manager: StrategyManager, symbol: str) -> None:
        self._manager = manager
        self.symbol = symbol

    def now_ms(self) -> int:
        return self._manager.clock_ms()

    def features(self) -> Mapping[str, float]:
        return self._manager.features.get(self.symbol, {})

    def regime(self) -> str | None:
        return self._manager.regimes.get(self.symbol)

    def position(self) -> Decimal:
        return self._manager.positions.get(self.symbol, _ZERO)


@attrs.define
class _Slot:
    """One strategy instance: a scenario on a symbol."""

    scenario: ScenarioSpec
    symbol: str
    strategy: Strategy
    view: _View
    prefix: str
    drafts: int = 0


def load_class_path(entry: str) -> StrategySpec:
    """``"name = pkg.module:Class"`` (or ``"pkg.module:Class"``) as a ``StrategySpec``."""
    name, sep, target = entry.partition("=")
    if not sep:
        name, target = entry.rpartition(":")[2], entry
    module_name, _, attr = target.strip().partition(":")
    if not module_name or not attr:
        raise ScenarioError(f"strategy class path {entry!r} is not 'name = pkg.module:Class'")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ScenarioError(f"strategy class path {entry!r}: {type(exc).__name__}: {exc}") from exc
    if not callable(obj):
        raise ScenarioError(f"strategy class path {entry!r} does not name a class")
    return StrategySpec(name.strip(), obj, f"from {target.strip()}")


class StrategyManager:
    """See the module docstring."""

    name = "strategy_manager"

    def __init__(self, ctx: ComponentContext) -> None:
        config = ctx.config
        if not isinstance(config, Config):
            msg = "the StrategyManager needs planes.config.Config"
            raise TypeError(msg)
        self._bus = ctx.bus
        self.clock_ms: Callable[[], int] = ctx.clock.now_ms
        self._symbols = config.market.symbols
        self.catalog: dict[str, StrategySpec] = dict(ctx.strategies)
        for entry in config.strategy.class_paths:
            spec = load_class_path(entry)
            if spec.name in self.catalog:
                raise ScenarioError(f"strategy {spec.name!r} from {entry!r} is already registered")
            self.catalog[spec.name] = spec
        self.scenarios: dict[str, ScenarioSpec] = {}
        for scenario in config.strategy.scenarios:
            if scenario.id in self.scenarios:
                raise ScenarioError(f"scenario id {scenario.id!r} is used twice")
            self.scenarios[scenario.id] = scenario
        self.enabled: set[str] = set()
        self.features: dict[str, Mapping[str, float]] = {}
        self.regimes: dict[str, str] = {}
        self.positions: dict[str, Decimal] = {}
        self._slots: dict[str, list[_Slot]] = {}
        for scenario in self.scenarios.values():
            if scenario.enabled:
                self._enable(scenario, publish=False)

    # -- scenarios ---------------------------------------------------------------------------

    def _build(self, scenario: ScenarioSpec) -> list[_Slot]:
        spec = self.catalog.get(scenario.strategy)
        if spec is None:
            known = ", ".join(sorted(self.catalog))
            raise ScenarioError(
                f"scenario {scenario.id!r} names strategy {scenario.strategy!r}, "
                f"which is not registered (known: {known})"
            )
        symbols = scenario.symbols or self._symbols
        slots = []
        for symbol in symbols:
            try:
                strategy = spec.factory(dict(scenario.params))
            except Exception as exc:
                raise ScenarioError(
                    f"scenario {scenario.id!r} ({scenario.strategy}): {type(exc).__name__}: {exc}"
                ) from exc
            prefix = f"{scenario.id}-v{scenario.version}:{symbol}"
            slots.append(_Slot(scenario, symbol, strategy, _View(self, symbol), prefix))
        return slots

    def _enable(self, scenario: ScenarioSpec, *, publish: bool = True) -> None:
        for slot in self._build(scenario):
            self._slots.setdefault(slot.symbol, []).append(slot)
        self.enabled.add(scenario.id)
        if publish:
            self._announce_enabled(scenario)

    def _announce_enabled(self, scenario: ScenarioSpec, by: str = "config") -> None:
        bus = self._bus
        params: dict[str, ParamValue] = dict(scenario.params)
        bus.publish(
            STRATEGY_SCENARIO_ENABLED,
            ScenarioEnabled(
                bus.meta(),
                scenario_id=scenario.id,
                strategy=scenario.strategy,
                version=scenario.version,
                params=params,
                regime=scenario.regime or None,
                enabled_by=by,
            ),
        )

    def disable(self, scenario_id: str, reason: str) -> bool:
        """Stop a scenario on every symbol; False when it was not enabled."""
        if scenario_id not in self.enabled:
            return False
        self.enabled.discard(scenario_id)
        for symbol, slots in self._slots.items():
            self._slots[symbol] = [s for s in slots if s.scenario.id != scenario_id]
        scenario = self.scenarios[scenario_id]
        log.warning("strategy.scenario_disabled", scenario=scenario_id, reason=reason)
        bus = self._bus
        bus.publish(
            STRATEGY_SCENARIO_DISABLED,
            ScenarioDisabled(bus.meta(), scenario_id, scenario.version, reason),
        )
        return True

    # -- component ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe, and announce the scenarios enabled by config."""
        bus = self._bus
        bus.subscribe(MARKET_KLINE, self._on_kline)
        bus.subscribe(ANALYTICS_FEATURES, self._on_features)
        bus.subscribe(ANALYTICS_CONTEXT, self._on_context)
        bus.subscribe(PORTFOLIO_POSITION, self._on_position)
        bus.subscribe(CONTROL_COMMAND, self._on_command)
        for scenario_id in sorted(self.enabled):
            self._announce_enabled(self.scenarios[scenario_id])

    async def stop(self) -> None:
        """Nothing to release: subscriptions end with the plane handle."""

    # -- events ------------------------------------------------------------------------------

    def _on_kline(self, bar: KlineEvent) -> None:
        if bar.closed:
            slots = self._slots.get(bar.symbol)
            if slots:
                self._run(slots, MARKET_KLINE, bar, bar.end_ts)

    def _on_features(self, vector: FeatureVector) -> None:
        self.features[vector.symbol] = vector.values
        slots = self._slots.get(vector.symbol)
        if slots:
            self._run(slots, ANALYTICS_FEATURES, vector, vector.ts)

    def _on_context(self, context: MarketContext) -> None:
        self.regimes[context.symbol] = context.regime

    def _on_position(self, update: PositionUpdate) -> None:
        self.positions[update.symbol] = update.qty

    def _run(self, slots: list[_Slot], topic: Topic[Any], payload: Payload, ts: int) -> None:
        for slot in tuple(slots):
            try:
                drafts = slot.strategy.on_event(topic, payload, slot.view)
            except Exception as exc:  # noqa: BLE001 - a failing strategy is isolated
                self._failed(slot, exc)
                continue
            if drafts:
                self._emit(slot, drafts, payload, ts)

    def _emit(self, slot: _Slot, drafts: Sequence[IntentDraft], cause: Payload, ts: int) -> None:
        bus = self._bus
        scenario = slot.scenario
        regime_ok = not scenario.regime or self.regimes.get(slot.symbol) == scenario.regime
        for draft in drafts:
            if not isinstance(cast(object, draft), IntentDraft):  # plugins return anything
                self._failed(slot, TypeError(f"returned {draft!r}, not an IntentDraft"))
                return
            if not regime_ok and not draft.reduce_only:
                continue
            slot.drafts += 1
            bus.publish(
                STRATEGY_INTENT,
                Intent(
                    bus.meta(cause.meta.correlation_id),
                    intent_id=f"{slot.prefix}:{ts}:{slot.drafts}",
                    scenario_id=scenario.id,
                    strategy=scenario.strategy,
                    symbol=slot.symbol,
                    side=draft.side,
                    size_hint=draft.size_hint,
                    target_exposure=draft.target_exposure,
                    order_type=draft.order_type,
                    limit_price=draft.limit_price,
                    stop_price=draft.stop_price,
                    reduce_only=draft.reduce_only,
                    reason=draft.reason,
                ),
            )

    def _failed(self, slot: _Slot, exc: Exception) -> None:
        scenario = slot.scenario
        reason = f"strategy {scenario.strategy} raised {type(exc).__name__}: {exc}"
        log.error("strategy.failed", scenario=scenario.id, symbol=slot.symbol, error=reason)
        if self.disable(scenario.id, reason):
            bus = self._bus
            bus.publish(
                OBSERVABILITY_ALERT,
                Alert(
                    bus.meta(),
                    Severity.CRITICAL,
                    "scenario_failed",
                    f"scenario {scenario.id} disabled: {reason}",
                    {"scenario": scenario.id, "symbol": slot.symbol},
                ),
            )

    def _on_command(self, command: ControlCommand) -> None:
        if command.name not in ("scenario.enable", "scenario.disable"):
            return
        if len(command.args) != 1:
            log.warning("strategy.command_usage", command=command.name, args=command.args)
            return
        scenario_id = command.args[0]
        scenario = self.scenarios.get(scenario_id)
        if scenario is None:
            log.warning("strategy.unknown_scenario", scenario=scenario_id)
            return
        if command.name == "scenario.disable":
            self.disable(scenario_id, f"disabled by {command.meta.source.value}")
        elif scenario_id not in self.enabled:
            try:
                self._enable(scenario, publish=False)
            except ScenarioError as exc:
                log.error("strategy.enable_failed", scenario=scenario_id, error=str(exc))  # noqa: TRY400 - the message is the point
                return
            self._announce_enabled(scenario, by=command.meta.source.value)
