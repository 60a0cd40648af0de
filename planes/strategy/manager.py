"""StrategyManager: runs the enabled scenarios and turns their drafts into ``strategy:intent``.

A scenario is a strategy name + params + an optional regime condition + a version
(``[[strategy.scenarios]]``). For every enabled scenario and each of its symbols the manager
builds one strategy instance and calls it for the closed ``market:kline`` bars and the
``analytics:features`` of that symbol, with a read-only view (clock time, latest features,
latest regime, position). Each returned ``IntentDraft`` becomes an ``Intent`` stamped with the
causing event's correlation id, a deterministic ``intent_id`` and the scenario.

* While a scenario's regime condition does not hold, its *entries* are dropped (exits pass),
  but the strategy still sees every bar so its indicators stay current.
* A strategy that raises, or returns anything but a sequence of valid ``IntentDraft``s, is
  isolated: its scenario is disabled on every symbol, with ``strategy:scenarioDisabled`` and an
  ``observability:alert`` naming the scenario and what was wrong; the other scenarios go on.
  A return is read as drafts when it is a list, a tuple, another ordered iterable (a
  generator); a falsy one (``[]``, ``None``) is nothing. A draft is valid when ``draft_problem``
  says so (enum fields are the enums, numbers finite ``Decimal``s, a limit or stop order
  carries its price); the drafts of one return are checked before any of them goes out.
* The view is read-only: ``features()`` is a ``MappingProxyType`` over the vector's values, and
  the ``analytics:features`` payload a strategy is handed carries that proxy too, so no strategy
  can change what other subscribers of the vector see.
* A scenario is checked before it runs (``check_scenario``): a non-empty id, symbols within
  ``market.symbols`` (no repeats), a regime condition that is a label ``analytics:context``
  publishes (``REGIMES``) while ``analytics.context`` is on. Config scenarios, enabled or not,
  fail construction (so start-up) with a ``ScenarioError``; the registry, restore and command
  paths refuse the scenario as they refuse an unknown strategy.

Who switches scenarios at run time depends on storage:

* **Registry-driven** (``storage.enabled`` and the ``planes.storage`` plugin loaded): the
  registry owns the scenarios. ``scenario.*`` commands go to the storage plane, which commits
  them and then publishes ``state:registry``; the manager acts only on those events. A
  scenario event whose status is ``enabled`` (seeded, enabled, restored, rolled back) runs the
  scenario at the event's strategy, params, regime and version (rebuilt when that differs from
  what runs; a scenario not in config trades every ``market.symbols``); ``disabled`` and
  ``retired`` stop it. Config scenarios run from construction, silently; the enabled set is
  announced once recovery is complete (``recovered``).
* **Without storage**: ``control:command`` ``scenario.enable ID`` / ``scenario.disable ID``
  switch configured scenarios directly, and the config's enabled scenarios are announced at
  start.

Either way each change is announced with ``strategy:scenarioEnabled`` /
``strategy:scenarioDisabled``.

Recovery (``contracts.ports.Stateful``, key ``strategy.scenarios``): the state is the enabled
scenarios (id, strategy, params, symbols, regime, version) and the last position per symbol.
Replaying ``strategy:scenarioEnabled``/``scenarioDisabled``, ``portfolio:position_update`` (its
``PositionView``: the quantity is all it takes) and (registry-driven) ``state:registry`` rebuilds
it. Restoring builds *new* strategy instances:
their indicator windows start empty and re-warm from the bars that come after the restart, so a
scenario signals again only once its longest window has filled; the built-in strategies treat a
restored position as their own, so they neither double it nor leave it without an exit. The
latest features and regimes are not kept: they come again with the next bars.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from decimal import Decimal
from types import MappingProxyType
from typing import Any, cast

import attrs
import structlog

from contracts.analytics import FeatureVector, MarketContext
from contracts.control import ControlCommand
from contracts.enums import OrderType, ScenarioState, Severity, Side, Trend, VolatilityBucket
from contracts.execution import PositionUpdate, PositionView
from contracts.market import KlineEvent
from contracts.meta import Payload
from contracts.ports import ComponentContext, Strategy, StrategySpec, StrategyView
from contracts.state import RegistryChanged
from contracts.strategy import Intent, IntentDraft, ParamValue, ScenarioDisabled, ScenarioEnabled
from contracts.system import Alert
from contracts.topics import (
    ANALYTICS_CONTEXT,
    ANALYTICS_FEATURES,
    CONTROL_COMMAND,
    MARKET_KLINE,
    OBSERVABILITY_ALERT,
    PORTFOLIO_POSITION,
    STATE_REGISTRY,
    STRATEGY_INTENT,
    STRATEGY_SCENARIO_DISABLED,
    STRATEGY_SCENARIO_ENABLED,
    Topic,
)
from planes.bus import UnknownTopicError
from planes.config import Config, ScenarioSpec
from planes.strategy.builtin import bar_handler

log = structlog.get_logger("planes.strategy")
_ZERO = Decimal(0)
_NO_FEATURES: Mapping[str, float] = MappingProxyType({})
STATE_FORMAT = 1

REGIMES: frozenset[str] = frozenset(f"{t.value}_{v.value}" for t in Trend for v in VolatilityBucket)
"""Every regime label ``analytics:context`` publishes: ``"{trend}_{volatility}"``, as the
MarketContextBuilder makes them (a plane does not import another: a test pins the two sets
together). A regime condition outside it could never hold."""


class ScenarioError(ValueError):
    """A scenario cannot be built or could never act; the message names it and the bad value."""


class _View:
    """The read-only view one strategy instance gets (``contracts.ports.StrategyView``)."""

    __slots__ = ("_manager", "symbol")

    def __init__(self, manager: StrategyManager, symbol: str) -> None:
        self._manager = manager
        self.symbol = symbol

    def now_ms(self) -> int:
        return self._manager.clock_ms()

    def features(self) -> Mapping[str, float]:
        return self._manager.features.get(self.symbol, _NO_FEATURES)

    def regime(self) -> str | None:
        return self._manager.regimes.get(self.symbol)

    def position(self) -> Decimal:
        return self._manager.positions.get(self.symbol, _ZERO)


BarCall = Callable[[KlineEvent, StrategyView], Sequence[IntentDraft]]


@attrs.define
class _Slot:
    """One strategy instance: a scenario on a symbol."""

    scenario: ScenarioSpec
    symbol: str
    strategy: Strategy
    view: _View
    prefix: str
    on_kline: BarCall
    """What a closed bar of the symbol is handed to: ``on_event(MARKET_KLINE, bar, view)``,
    or the strategy's ``on_bar`` when that is all its ``on_event`` would do."""
    drafts: int = 0


def check_scenario(scenario: ScenarioSpec, symbols: Sequence[str], *, context: bool) -> None:
    """Refuse a scenario that could never act, naming it and the bad value.

    ``symbols`` are ``market.symbols``; ``context`` is whether ``analytics:context`` is published.
    """
    if not scenario.id.strip():
        raise ScenarioError(f"a scenario of strategy {scenario.strategy!r} has an empty id")
    name = f"scenario {scenario.id!r}"
    unknown = [s for s in scenario.symbols if s not in symbols]
    if unknown:
        raise ScenarioError(
            f"{name} trades {unknown}, not in market.symbols {list(symbols)}: "
            "no bars would ever reach it"
        )
    if len(set(scenario.symbols)) != len(scenario.symbols):
        raise ScenarioError(f"{name} lists a symbol twice: {list(scenario.symbols)}")
    regime = scenario.regime
    if regime:
        if regime not in REGIMES:
            known = ", ".join(sorted(REGIMES))
            raise ScenarioError(
                f"{name} has regime {regime!r}, which analytics:context never publishes "
                f"(known: {known})"
            )
        if not context:
            raise ScenarioError(
                f"{name} has regime {regime!r} but analytics.context is off: "
                "the condition could never hold"
            )


def _short(value: object) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a plugin's __repr__ must not break its own isolation
        return f"<{type(value).__name__} whose repr raises>"
    return text if len(text) <= 120 else f"{text[:117]}..."


def _positive(value: object) -> bool:
    return isinstance(value, Decimal) and value.is_finite() and value > 0


def draft_problem(draft: object) -> str | None:
    """What keeps a strategy's returned draft from becoming an ``Intent``; None when nothing.

    ``side`` and ``order_type`` must be the ``Side`` / ``OrderType`` enums (not their strings);
    ``size_hint``, ``limit_price`` and ``stop_price`` are None or a finite ``Decimal`` > 0,
    ``target_exposure`` None or a finite ``Decimal``; a limit order needs ``limit_price``, a
    stop order ``stop_price``; ``reduce_only`` is a bool and ``reason`` a str.
    """
    if not isinstance(draft, IntentDraft):
        return f"returned {_short(draft)} ({type(draft).__name__}) among its drafts"
    # Typed fields, but nothing stops a plugin from filling them with anything: test as objects
    # (read untyped: compiled, a typed read of a str or bool field would raise TypeError first).
    side, order_type = _raw(draft, "side"), _raw(draft, "order_type")
    if not isinstance(side, Side):
        return _bad_field("side", side, "a contracts.enums.Side")
    if not isinstance(order_type, OrderType):
        return _bad_field("order_type", order_type, "a contracts.enums.OrderType")
    reduce_only, reason = _raw(draft, "reduce_only"), _raw(draft, "reason")
    if not isinstance(reduce_only, bool):
        return _bad_field("reduce_only", reduce_only, "a bool")
    if not isinstance(reason, str):
        return _bad_field("reason", reason, "a str")
    return _amounts_problem(draft, order_type)


def _raw(draft: IntentDraft, name: str) -> object:
    """A draft's field as whatever object it holds."""
    return cast(object, getattr(draft, name))


def _amounts_problem(draft: IntentDraft, order_type: OrderType) -> str | None:
    size = _raw(draft, "size_hint")
    if size is not None and not _positive(size):
        return _bad_field("size_hint", size, "None or a finite Decimal > 0")
    target = _raw(draft, "target_exposure")
    if target is not None and not (isinstance(target, Decimal) and target.is_finite()):
        return _bad_field("target_exposure", target, "None or a finite Decimal")
    limit, stop = _raw(draft, "limit_price"), _raw(draft, "stop_price")
    return _price_problem("limit_price", limit, order_type, OrderType.LIMIT) or (
        _price_problem("stop_price", stop, order_type, OrderType.STOP)
    )


def _price_problem(
    field: str, price: object, order_type: OrderType, needs_it: OrderType
) -> str | None:
    if price is None:
        if order_type is needs_it:
            return _bad_field(field, price, f"a finite Decimal > 0 on a {needs_it.value} order")
        return None
    return None if _positive(price) else _bad_field(field, price, "None or a finite Decimal > 0")


def _bad_field(field: str, value: object, rule: str) -> str:
    return (
        f"returned an IntentDraft whose {field} is {_short(value)} "
        f"({type(value).__name__}), not {rule}"
    )


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
    state_key = "strategy.scenarios"

    def __init__(self, ctx: ComponentContext) -> None:
        config = ctx.config
        if not isinstance(config, Config):
            msg = "the StrategyManager needs planes.config.Config"
            raise TypeError(msg)
        self._bus = ctx.bus
        self.clock_ms: Callable[[], int] = ctx.clock.now_ms
        self._symbols = config.market.symbols
        self._context = config.analytics.context
        self.registry_driven = config.storage_on
        """True when ``state:registry`` (not ``control:command``) switches scenarios."""
        topics = {
            STRATEGY_SCENARIO_ENABLED.name,
            STRATEGY_SCENARIO_DISABLED.name,
            PORTFOLIO_POSITION.name,
        }
        if self.registry_driven:
            topics.add(STATE_REGISTRY.name)
        self.state_topics = frozenset(topics)
        self.replay_views: Mapping[str, type] = {PORTFOLIO_POSITION.name: PositionView}
        self.catalog: dict[str, StrategySpec] = dict(ctx.strategies)
        for entry in config.strategy.class_paths:
            spec = load_class_path(entry)
            if spec.name in self.catalog:
                raise ScenarioError(f"strategy {spec.name!r} from {entry!r} is already registered")
            self.catalog[spec.name] = spec
        self.scenarios: dict[str, ScenarioSpec] = {}
        """Every scenario known by id (config, then registry and restore): the spec it runs or
        last ran with."""
        for scenario in config.strategy.scenarios:
            check_scenario(scenario, self._symbols, context=self._context)
            if scenario.id in self.scenarios:
                raise ScenarioError(f"scenario id {scenario.id!r} is used twice")
            self.scenarios[scenario.id] = scenario
        self.enabled: set[str] = set()
        self.features: dict[str, Mapping[str, float]] = {}
        self.regimes: dict[str, str] = {}
        self.positions: dict[str, Decimal] = {}
        # Tuples, replaced whole on a change: delivery iterates them while a failing strategy
        # may drop its scenario's slots.
        self._slots: dict[str, tuple[_Slot, ...]] = {}
        self._announced: set[str] = set()
        self._unrestored: list[str] = []
        for scenario in self.scenarios.values():
            if scenario.enabled:
                self._run_scenario(scenario)

    # -- scenarios ---------------------------------------------------------------------------

    def _build(self, scenario: ScenarioSpec) -> list[_Slot]:
        check_scenario(scenario, self._symbols, context=self._context)
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
            on_kline = bar_handler(strategy) or functools.partial(strategy.on_event, MARKET_KLINE)
            slots.append(_Slot(scenario, symbol, strategy, _View(self, symbol), prefix, on_kline))
        return slots

    def _run_scenario(self, scenario: ScenarioSpec) -> bool:
        """Run ``scenario``, replacing another spec of its id; False when it already runs so.

        Raises ``ScenarioError`` (changing nothing) when it cannot be built.
        """
        running = self.scenarios.get(scenario.id) if scenario.id in self.enabled else None
        if running is not None and _same(running, scenario):
            return False
        slots = self._build(scenario)
        self._drop_slots(scenario.id)
        for slot in slots:
            self._slots[slot.symbol] = (*self._slots.get(slot.symbol, ()), slot)
        self.scenarios[scenario.id] = scenario
        self.enabled.add(scenario.id)
        return True

    def _stop_scenario(self, scenario_id: str) -> bool:
        """Stop a scenario on every symbol; False when it was not enabled."""
        if scenario_id not in self.enabled:
            return False
        self.enabled.discard(scenario_id)
        self._announced.discard(scenario_id)
        self._drop_slots(scenario_id)
        return True

    def _drop_slots(self, scenario_id: str) -> None:
        for symbol, slots in self._slots.items():
            self._slots[symbol] = tuple(s for s in slots if s.scenario.id != scenario_id)

    def _spec_for(
        self,
        scenario_id: str,
        strategy: str,
        params: Mapping[str, ParamValue],
        regime: str | None,
        version: int,
    ) -> ScenarioSpec:
        """The spec an announcement or a registry event describes (symbols from what is known)."""
        known = self.scenarios.get(scenario_id)
        if known is None:
            return ScenarioSpec(scenario_id, strategy, dict(params), (), regime or "", version)
        return attrs.evolve(
            known,
            strategy=strategy or known.strategy,
            params=dict(params),
            regime=regime or "",
            version=version,
        )

    def _announce_enabled(self, scenario: ScenarioSpec, by: str = "config") -> None:
        bus = self._bus
        params: dict[str, ParamValue] = dict(scenario.params)
        self._announced.add(scenario.id)
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
        if not self._stop_scenario(scenario_id):
            return False
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
        """Subscribe; without storage, announce the scenarios enabled by config."""
        bus = self._bus
        bus.subscribe(MARKET_KLINE, self._on_kline)
        bus.subscribe(ANALYTICS_FEATURES, self._on_features)
        bus.subscribe(ANALYTICS_CONTEXT, self._on_context)
        bus.subscribe(PORTFOLIO_POSITION, self._on_position)
        if self.registry_driven:
            try:
                bus.subscribe(STATE_REGISTRY, self._on_registry)
            except UnknownTopicError:
                # The storage plugin failed to load as optional: nobody would ever switch.
                log.warning("strategy.no_registry", detail="scenario commands handled directly")
                self.registry_driven = False
        if not self.registry_driven:
            bus.subscribe(CONTROL_COMMAND, self._on_command)
            for scenario_id in sorted(self.enabled):
                self._announce_enabled(self.scenarios[scenario_id])

    async def stop(self) -> None:
        """Nothing to release: subscriptions end with the plane handle."""

    # -- recovery (contracts.ports.Stateful) -------------------------------------------------

    def export_state(self) -> dict[str, Any]:
        """The enabled scenarios (by id) and the last position per symbol."""
        scenarios = [
            {
                "id": spec.id,
                "strategy": spec.strategy,
                "params": dict(spec.params),
                "symbols": list(spec.symbols),
                "regime": spec.regime,
                "version": spec.version,
            }
            for spec in (self.scenarios[sid] for sid in sorted(self.enabled))
        ]
        positions = {symbol: str(qty) for symbol, qty in sorted(self.positions.items())}
        return {"format": STATE_FORMAT, "scenarios": scenarios, "positions": positions}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        """Run exactly the exported scenarios (new instances) and take its positions.

        A scenario that can no longer be built (its strategy is gone) is skipped and reported
        by an alert once recovery is complete.
        """
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"unknown strategy state format {state.get('format')!r}")
        for scenario_id in sorted(self.enabled):
            self._stop_scenario(scenario_id)
        self.positions = {symbol: Decimal(qty) for symbol, qty in state["positions"].items()}
        for entry in state["scenarios"]:
            spec = ScenarioSpec(
                id=entry["id"],
                strategy=entry["strategy"],
                params=dict(entry["params"]),
                symbols=tuple(entry["symbols"]),
                regime=entry["regime"],
                version=int(entry["version"]),
            )
            try:
                self._run_scenario(spec)
            except ScenarioError as exc:
                log.error("strategy.restore_failed", scenario=spec.id, error=str(exc))  # noqa: TRY400 - the message is the point
                self._unrestored.append(f"scenario {spec.id} v{spec.version} not restored: {exc}")

    def replay_event(self, topic: str, payload: Any) -> None:
        """Apply a journaled announcement, registry change or position; publish nothing."""
        if topic == STRATEGY_SCENARIO_ENABLED.name and isinstance(payload, ScenarioEnabled):
            spec = self._spec_for(
                payload.scenario_id,
                payload.strategy,
                payload.params,
                payload.regime,
                payload.version,
            )
            try:
                self._run_scenario(spec)
            except ScenarioError as exc:
                log.error("strategy.replay_failed", scenario=spec.id, error=str(exc))  # noqa: TRY400 - the message is the point
        elif topic == STRATEGY_SCENARIO_DISABLED.name and isinstance(payload, ScenarioDisabled):
            self._stop_scenario(payload.scenario_id)
        elif topic == PORTFOLIO_POSITION.name and isinstance(payload, PositionUpdate):
            self._on_position(payload)
        elif (
            topic == STATE_REGISTRY.name
            and self.registry_driven
            and isinstance(payload, RegistryChanged)
        ):
            self._apply_registry(payload, live=False)

    def replay_view(self, topic: str, view: Any, load: Callable[[], Any]) -> None:
        """Take a journaled position's quantity from its view, as ``replay_event`` takes it."""
        if topic == PORTFOLIO_POSITION.name and isinstance(view, PositionView):
            self.positions[view.symbol] = view.qty

    def recovered(self) -> None:
        """Alert about scenarios that could not be restored; announce the enabled set."""
        bus = self._bus
        for problem in self._unrestored:
            bus.publish(
                OBSERVABILITY_ALERT,
                Alert(bus.meta(), Severity.CRITICAL, "scenario_not_restored", problem),
            )
        self._unrestored.clear()
        if self.registry_driven:
            for scenario_id in sorted(self.enabled - self._announced):
                self._announce_enabled(self.scenarios[scenario_id], by="recovery")

    # -- events ------------------------------------------------------------------------------

    def _on_kline(self, bar: KlineEvent) -> None:
        if not bar.closed:
            return
        slots = self._slots.get(bar.symbol)
        if not slots:
            return
        for slot in slots:  # _run, with each slot's bar call (one call less a bar)
            try:
                drafts = slot.on_kline(bar, slot.view)
                if not drafts:  # inside the try: a return's truth test is strategy code too
                    continue
            except Exception as exc:  # noqa: BLE001 - a failing strategy is isolated
                self._failed(slot, exc)
                continue
            self._emit(slot, drafts, bar, bar.end_ts)

    def _on_features(self, vector: FeatureVector) -> None:
        # Strategies read the values but must not change what the vector's other subscribers
        # see: the FeatureEngine publishes them read-only; anything else is sealed here.
        values = vector.values
        if type(values) is not MappingProxyType:
            values = MappingProxyType(dict(values))
            vector = attrs.evolve(vector, values=values)
        self.features[vector.symbol] = values
        slots = self._slots.get(vector.symbol)
        if slots:
            self._run(slots, ANALYTICS_FEATURES, vector, vector.ts)

    def _on_context(self, context: MarketContext) -> None:
        self.regimes[context.symbol] = context.regime

    def _on_position(self, update: PositionUpdate) -> None:
        self.positions[update.symbol] = update.qty

    def _run(self, slots: tuple[_Slot, ...], topic: Topic[Any], payload: Payload, ts: int) -> None:
        for slot in slots:
            try:
                drafts = slot.strategy.on_event(topic, payload, slot.view)
                if not drafts:
                    continue
            except Exception as exc:  # noqa: BLE001 - a failing strategy is isolated
                self._failed(slot, exc)
                continue
            self._emit(slot, drafts, payload, ts)

    def _emit(self, slot: _Slot, returned: object, cause: Payload, ts: int) -> None:
        """Publish the intents of a strategy's (truthy) return, or isolate it when it is bad."""
        drafts: Sequence[Any] | None
        if type(returned) is list or type(returned) is tuple:
            drafts = returned
        else:
            drafts = self._collect(slot, returned)
            if drafts is None:
                return
        for draft in drafts:  # all checked before any goes out: a bad return sends nothing
            problem = draft_problem(draft)
            if problem is not None:
                self._isolate(slot, f"strategy {slot.scenario.strategy} {problem}")
                return
        bus = self._bus
        scenario = slot.scenario
        regime_ok = not scenario.regime or self.regimes.get(slot.symbol) == scenario.regime
        for draft in drafts:
            if not regime_ok and not draft.reduce_only:
                continue
            slot.drafts += 1
            bus.publish(
                STRATEGY_INTENT,
                Intent(  # positional, in Intent's field order
                    bus.meta(cause.meta.correlation_id),
                    f"{slot.prefix}:{ts}:{slot.drafts}",  # intent_id
                    scenario.id,  # scenario_id
                    scenario.strategy,  # strategy
                    slot.symbol,  # symbol
                    draft.side,  # side
                    draft.size_hint,  # size_hint
                    draft.target_exposure,  # target_exposure
                    draft.order_type,  # order_type
                    draft.limit_price,  # limit_price
                    draft.stop_price,  # stop_price
                    draft.reduce_only,  # reduce_only
                    draft.reason,  # reason
                ),
            )

    def _collect(self, slot: _Slot, returned: object) -> list[Any] | None:
        """The drafts of a return that is not a list or tuple; None once it is isolated."""
        strategy = slot.scenario.strategy
        if isinstance(returned, IntentDraft):
            problem = f"returned a single IntentDraft, not a sequence of them: {_short(returned)}"
        elif isinstance(returned, str | bytes | Mapping | AbstractSet) or not isinstance(
            returned, Iterable
        ):  # a set or a mapping has no order: the intent ids would not be deterministic
            kind = type(returned).__name__
            problem = f"returned {_short(returned)} ({kind}), not a sequence of IntentDrafts"
        else:
            try:
                return list(returned)  # a generator runs the strategy's code here
            except Exception as exc:  # noqa: BLE001 - a failing strategy is isolated
                self._failed(slot, exc)
                return None
        self._isolate(slot, f"strategy {strategy} {problem}")
        return None

    def _failed(self, slot: _Slot, exc: Exception) -> None:
        reason = f"strategy {slot.scenario.strategy} raised {type(exc).__name__}: {exc}"
        self._isolate(slot, reason)

    def _isolate(self, slot: _Slot, reason: str) -> None:
        """Disable the slot's scenario on every symbol, with an alert saying ``reason``."""
        scenario = slot.scenario
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
        """``scenario.enable|disable ID`` without storage (with it, the registry decides).

        A command that cannot be followed is answered as the storage plane answers one: a
        WARNING alert ``command_usage`` or ``command_refused`` (the shell prints those).
        """
        if command.name in ("scenario.retire", "scenario.rollback"):
            message = f"{command.name} needs the registry: storage.enabled is false"
            self._refuse("command_refused", message)
            return
        if command.name not in ("scenario.enable", "scenario.disable"):
            return
        if len(command.args) != 1:
            log.warning("strategy.command_usage", command=command.name, args=command.args)
            self._refuse("command_usage", f"usage: {command.name} SCENARIO_ID")
            return
        scenario_id = command.args[0]
        scenario = self.scenarios.get(scenario_id)
        if scenario is None:
            log.warning("strategy.unknown_scenario", scenario=scenario_id)
            known = ", ".join(sorted(self.scenarios)) or "none"
            message = f"{command.name}: no scenario {scenario_id!r} (known: {known})"
            self._refuse("command_refused", message)
            return
        if command.name == "scenario.disable":
            self.disable(scenario_id, f"disabled by {command.meta.source.value}")
        elif scenario_id not in self.enabled:
            try:
                self._run_scenario(scenario)
            except ScenarioError as exc:
                log.error("strategy.enable_failed", scenario=scenario_id, error=str(exc))  # noqa: TRY400 - the message is the point
                self._refuse("command_refused", f"{command.name} {scenario_id}: {exc}")
                return
            self._announce_enabled(scenario, by=command.meta.source.value)

    def _refuse(self, code: str, message: str) -> None:
        bus = self._bus
        bus.publish(OBSERVABILITY_ALERT, Alert(bus.meta(), Severity.WARNING, code, message))

    def _on_registry(self, change: RegistryChanged) -> None:
        self._apply_registry(change, live=True)

    def _apply_registry(self, change: RegistryChanged, *, live: bool) -> None:
        """Follow a committed registry change; ``live`` announces and alerts, replay does not."""
        if change.entity != "scenario":
            return
        scenario_id = change.entity_id
        actor = change.actor or "the registry"
        if change.status in (ScenarioState.DISABLED, ScenarioState.RETIRED):
            if live:
                self.disable(scenario_id, f"{change.action} by {actor}")
            else:
                self._stop_scenario(scenario_id)
            return
        if change.status != ScenarioState.ENABLED:
            return  # proposed: nothing runs yet
        try:
            version = int(change.version)
            spec = self._spec_for(
                scenario_id, change.strategy, change.params, change.regime, version
            )
            changed = self._run_scenario(spec)
        except (ScenarioError, ValueError) as exc:
            reason = f"registry {change.action} of scenario {scenario_id}: {exc}"
            log.error("strategy.enable_failed", scenario=scenario_id, error=reason)  # noqa: TRY400 - the message is the point
            if live:
                bus = self._bus
                bus.publish(
                    OBSERVABILITY_ALERT,
                    Alert(
                        bus.meta(),
                        Severity.CRITICAL,
                        "scenario_enable_failed",
                        reason,
                        {"scenario": scenario_id},
                    ),
                )
            return
        if changed and live:
            self._announce_enabled(spec, by=change.actor or f"registry {change.action}")


def _same(a: ScenarioSpec, b: ScenarioSpec) -> bool:
    """True when two specs of one id build the same instances."""
    return (a.strategy, a.params, a.symbols, a.regime, a.version) == (
        b.strategy,
        b.params,
        b.symbols,
        b.regime,
        b.version,
    )
