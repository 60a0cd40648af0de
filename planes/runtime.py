"""The composition root: config -> plugin manager -> topics -> bus -> planes, and their lifecycle.

``Runtime`` is the one place that knows every plane, and it knows them only through the
built-in plugin list. It starts components in plane order (control last: its Orchestrator runs
the boot sequence), waits for the Orchestrator to reach STOPPED, then stops components in the
reverse order and drains the bus. It talks to the Orchestrator only through the bus.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, TypeVar, cast

import attrs
import structlog

from contracts.control import ControlCommand, ControlState
from contracts.enums import Lifecycle
from contracts.ports import (
    Clock,
    Component,
    ComponentContext,
    ComponentFactory,
    ExchangeSpec,
    NotifierSpec,
    PlaneSpec,
    StrategySpec,
)
from contracts.rights import rights_for
from contracts.state import JournalFailed
from contracts.topics import CONTROL_COMMAND, CONTROL_STATE, STATE_JOURNAL_FAILED, TopicRegistry
from planes import native
from planes.bus import EventBus, PlaneHandle
from planes.clock import HistoricalClock, RealtimeClock
from planes.config import ClockKind, Config, Mode, origin_of
from planes.state import StateError, StateHub
from plugins.builtin import BUILTIN_PLUGINS
from plugins.manager import Catalog, Owned, PluginError, PluginHost

log = structlog.get_logger("planes.runtime")
T = TypeVar("T")

PLANE_ORDER: Mapping[str, int] = {
    "observability": 0,
    "storage": 10,
    "market": 20,
    "analytics": 30,
    "execution": 35,
    "strategy": 40,
    "risk": 50,
    "research": 70,
    "control": 1000,
}
"""Start order of planes (stop order is the reverse); planes not listed start at 500.

Start order is subscription order, hence delivery order. Execution comes before strategy so that
on a new bar the fills it causes (a next-open fill of the previous bar's order) are queued ahead
of the intents the strategy derives from the same bar: the RiskManager sees the position before
an exit that reduces it.
"""


class RuntimeStartError(RuntimeError):
    """The runtime could not start; the message says which part failed and why."""


class RuntimeFailedError(RuntimeError):
    """The runtime started but had to stop: a part it cannot run without failed (the journal).

    ``Runtime.run`` raises it once the shutdown is done; the message says what failed.
    """


@attrs.frozen
class PlaneContext:
    """What a component's factory receives (implements ``contracts.ports.ComponentContext``)."""

    bus: PlaneHandle
    clock: Clock
    config: Config
    settings: Mapping[str, Any]
    exchanges: Mapping[str, ExchangeSpec]
    strategies: Mapping[str, StrategySpec]
    notifiers: Mapping[str, NotifierSpec]
    state: StateHub = attrs.field(factory=StateHub)
    """The runtime's stateful components (the storage plane snapshots and restores them)."""
    run_id: str = ""
    """The runtime's run id (its logs, the journal's ``run_id``); empty outside a runtime."""


def runtime_config(ctx: ComponentContext) -> Config:
    """The typed ``Config`` inside a component context (built-in planes use this)."""
    config = ctx.config
    if not isinstance(config, Config):
        msg = f"component context carries {type(config).__name__}, not planes.config.Config"
        raise TypeError(msg)
    return config


def make_clock(config: Config) -> Clock:
    """The clock ``config`` asks for: historical in backtests (``auto``), real time otherwise."""
    kind = config.runtime.clock
    if kind is ClockKind.AUTO:
        kind = ClockKind.HISTORICAL if config.runtime.mode is Mode.BACKTEST else ClockKind.REALTIME
    if kind is ClockKind.REALTIME:
        return RealtimeClock()
    start = datetime.fromisoformat(config.runtime.start.replace("Z", "+00:00"))
    return HistoricalClock(start_ms=int(start.timestamp() * 1000))


@attrs.define
class _Running:
    spec: PlaneSpec
    owner: str
    component: Component
    handle: PlaneHandle
    started: bool = False


class Runtime:
    """Assemble and run the planes described by a ``Config``."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        builtin: Sequence[tuple[str, str]] = BUILTIN_PLUGINS,
        entry_point_source: Callable[[], Iterable[EntryPoint]] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or make_clock(config)
        self.run_id = secrets.token_hex(6)
        self.host = PluginHost(
            builtin=builtin,
            entry_points=config.plugins.entry_points,
            modules=config.plugins.modules,
            disabled=config.plugins.disabled,
            optional=config.plugins.optional,
            entry_point_source=entry_point_source,
        )
        self.catalog = Catalog()
        self.bus = EventBus(TopicRegistry(), now_ms=self.clock.now_ms)
        self.lifecycle: Lifecycle | None = None
        self.paused = False
        self._components: list[_Running] = []
        self._stopped = asyncio.Event()
        self._system: PlaneHandle | None = None
        self._assembled = False
        self._stop_requested = False
        self.state = StateHub()
        self.failure: str | None = None
        """Why a run that started could not go on (the journal failed); ``run()`` raises it."""

    @property
    def data_dir(self) -> Path:
        """Where this runtime keeps its files."""
        return Path(self.config.runtime.data_dir)

    @property
    def components(self) -> list[tuple[str, str, Component]]:
        """``(plane, owner plugin, component)`` in start order."""
        return [(r.spec.plane, r.owner, r.component) for r in self._components]

    def assemble(self) -> None:
        """Load plugins, register their topics and build every component (no I/O yet)."""
        if self._assembled:
            return
        self.host.load()
        self.catalog = self.host.collect()
        for topic in self.catalog.topics:
            try:
                self.bus.register_topic(topic.item, topic.owner)
            except (ValueError, TypeError) as exc:
                raise PluginError(f"plugin {topic.owner!r}: {exc}") from exc
        source, rights = rights_for("system", [CONTROL_COMMAND.name])
        self._system = self.bus.handle("system", source, rights)
        self._system.subscribe(CONTROL_STATE, self._on_state)
        if self.bus.topics.get(STATE_JOURNAL_FAILED.name) is not None:  # storage is loaded
            self._system.subscribe(STATE_JOURNAL_FAILED, self._on_journal_failed)
        exchanges = {
            name: attrs.evolve(
                owned.item,
                market_data=self._own_settings(owned.owner, owned.item.market_data),
                execution=self._own_settings(owned.owner, owned.item.execution),
            )
            for name, owned in self.catalog.exchanges.items()
        }
        strategies = {name: owned.item for name, owned in self.catalog.strategies.items()}
        notifiers = {
            name: attrs.evolve(
                owned.item, factory=self._with_settings(owned.owner, owned.item.factory)
            )
            for name, owned in self.catalog.notifiers.items()
        }
        # An exchange's execution adapter is an execution-plane component like the built-in
        # venues (started with them, before the strategy plane): ``execution.venue = <name>``.
        adapters = {
            # What the factory returns is checked like any component's, below.
            PlaneSpec(f"{name}_execution", "execution", cast(ComponentFactory, execution)): (
                name,
                owned.owner,
            )
            for name, owned in self.catalog.exchanges.items()
            if (execution := exchanges[name].execution) is not None
        }
        planes = [
            *self.catalog.planes,
            *(Owned(owner, spec) for spec, (_, owner) in adapters.items()),
        ]
        specs = sorted(
            enumerate(planes),
            key=lambda pair: (PLANE_ORDER.get(pair[1].item.plane, 500), pair[0]),
        )
        seen: dict[tuple[str, str], str] = {}
        for _, owned in specs:
            spec = owned.item
            first = seen.setdefault((spec.plane, spec.name), owned.owner)
            if first != owned.owner or any(
                r.spec.plane == spec.plane and r.spec.name == spec.name for r in self._components
            ):
                msg = (
                    f"component {spec.plane}/{spec.name} from plugin {owned.owner!r} clashes "
                    f"with the one from plugin {first!r}"
                )
                raise PluginError(msg)
            source, rights = rights_for(spec.plane, spec.publishes)
            handle = self.bus.handle(spec.plane, source, rights)
            ctx = PlaneContext(
                bus=handle,
                clock=self.clock,
                config=self.config,
                settings=self.config.plugins.settings.get(owned.owner, {}),
                exchanges=exchanges,
                strategies=strategies,
                notifiers=notifiers,
                state=self.state,
                run_id=self.run_id,
            )
            try:
                component = spec.factory(ctx)
            except Exception as exc:
                msg = (
                    f"plugin {owned.owner!r}: component {spec.name!r} of plane {spec.plane!r} "
                    f"could not be built: {type(exc).__name__}: {exc}"
                )
                raise RuntimeStartError(msg) from exc
            if not isinstance(cast(object, component), Component):  # plugins return anything
                msg = (
                    f"plugin {owned.owner!r}: factory of {spec.name!r} returned "
                    f"{type(component).__name__}, which lacks name/start()/stop()"
                )
                raise RuntimeStartError(msg)
            exchange = adapters.get(spec, ("", ""))[0]
            if exchange and getattr(component, "venue", None) != exchange:
                msg = (
                    f"plugin {owned.owner!r}: the execution adapter of exchange {exchange!r} "
                    f"has venue {getattr(component, 'venue', None)!r}: it must be {exchange!r}, "
                    "the name execution.venue selects it by"
                )
                raise RuntimeStartError(msg)
            self._components.append(_Running(spec, owned.owner, component, handle))
            try:
                self.state.add(component, f"{spec.plane}/{spec.name}")
            except StateError as exc:
                raise RuntimeStartError(f"plugin {owned.owner!r}: {exc}") from exc
        self._check_venue()
        self._assembled = True

    @property
    def venues(self) -> dict[str, str]:
        """The execution venues built: ``venue`` name -> ``plane/component`` that trades it.

        A venue is an execution-plane component with a ``venue`` name (``ExecutionAdapter``):
        the built-in ``paper`` and ``bybit``, and any a plugin registers the same way.
        """
        found: dict[str, str] = {}
        for running in self._components:
            venue = getattr(running.component, "venue", None)
            if running.spec.plane == "execution" and isinstance(venue, str):
                found.setdefault(venue, f"{running.spec.plane}/{running.spec.name}")
        return found

    def _check_venue(self) -> None:
        """Fail when ``execution.venue`` names no venue built: else nothing would ever trade.

        A runtime built without any venue (no execution plane: analytics or research rigs)
        has nothing to check.
        """
        known = self.venues
        venue = self.config.execution.venue
        if not known or venue in known:
            return
        origin = origin_of(self.config, "execution.venue")
        msg = (
            f"execution.venue: {venue!r} is not a registered venue "
            f"(known: {', '.join(sorted(known))})" + (f" (from {origin})" if origin else "")
        )
        raise RuntimeStartError(msg)

    def _own_settings(
        self, owner: str, factory: Callable[[ComponentContext], T] | None
    ) -> Callable[[ComponentContext], T] | None:
        return None if factory is None else self._with_settings(owner, factory)

    def _with_settings(
        self, owner: str, factory: Callable[[ComponentContext], T]
    ) -> Callable[[ComponentContext], T]:
        """Wrap ``factory`` so it sees its own plugin's settings, whoever's context calls it."""
        settings = self.config.plugins.settings.get(owner, {})

        def build(ctx: ComponentContext) -> T:
            if isinstance(ctx, PlaneContext):
                ctx = attrs.evolve(ctx, settings=settings)
            return factory(ctx)

        return build

    def attach(self, plane: str) -> PlaneHandle:
        """A bus handle for a client of the runtime (``cli``, ``telegram``) after ``assemble``."""
        if not self._assembled:
            msg = "attach() needs an assembled runtime: call assemble() first"
            raise RuntimeError(msg)
        source, rights = rights_for(plane)
        return self.bus.handle(plane, source, rights)

    def _on_journal_failed(self, event: JournalFailed) -> None:
        """Nothing more can be stored: stop trading now, and end the run as failed."""
        if self.failure is None:
            self.failure = (
                f"the journal failed: {event.reason}; the run was stopped "
                f"(everything up to seq {event.durable_seq} is stored)"
            )
        log.critical("runtime.failed", reason=self.failure)
        self.request_stop(self.failure)

    def _on_state(self, state: ControlState) -> None:
        self.lifecycle = state.lifecycle
        self.paused = state.paused
        if state.lifecycle is Lifecycle.STOPPED:
            self._stopped.set()

    async def start(self) -> None:
        """Assemble if needed, then start components in plane order (the boot sequence)."""
        self.assemble()
        self.bus.bind_loop(asyncio.get_running_loop())
        log.info(
            "runtime.starting",
            run_id=self.run_id,
            mode=self.config.runtime.mode.value,
            clock="realtime" if self.clock.is_realtime else "historical",
            components=[f"{r.spec.plane}/{r.spec.name}" for r in self._components],
            hot_modules=native.status().describe(),
        )
        for running in self._components:
            try:
                await running.component.start()
            except Exception as exc:
                running.started = True  # stop() still runs: it must release what start took
                await self._stop_components()
                msg = (
                    f"{running.spec.plane}/{running.spec.name} (plugin {running.owner!r}) "
                    f"failed to start: {type(exc).__name__}: {exc}"
                )
                raise RuntimeStartError(msg) from exc
            running.started = True
        if self.failure is not None:  # it came while the control plane was not listening yet
            self._stop_requested = False
            self.request_stop(self.failure)

    def request_stop(self, reason: str = "") -> None:
        """Ask the Orchestrator to stop (a ``control:command stop`` from the system); once."""
        handle = self._system
        stopping = self.lifecycle in (Lifecycle.STOPPING, Lifecycle.STOPPED)
        if handle is None or stopping or self._stop_requested:
            return
        self._stop_requested = True
        log.info("runtime.stop_requested", reason=reason)
        handle.publish(CONTROL_COMMAND, ControlCommand(handle.meta(), "stop", (reason,)))

    async def wait_stopped(self, within_s: float | None = None) -> bool:
        """Wait until the Orchestrator publishes STOPPED; False after ``within_s`` seconds."""
        if self._stopped.is_set():
            return True
        try:
            await asyncio.wait_for(self._stopped.wait(), within_s)
        except TimeoutError:
            return False
        return True

    async def stop(self, reason: str = "shutdown") -> None:
        """Shut down: Orchestrator to STOPPED, components in reverse order, bus drained."""
        if not self._stopped.is_set():
            self.request_stop(reason)
            grace = self.config.control.disconnect_timeout_s + 5
            if not await self.wait_stopped(grace):
                log.warning("runtime.stop_timeout", waited_s=grace)
        await self._stop_components()

    async def _stop_components(self) -> None:
        for running in reversed(self._components):
            if not running.started:
                continue
            running.started = False
            try:
                await running.component.stop()
            except Exception as exc:
                log.exception("runtime.component_stop_failed", component=running.spec.name)
                self.bus.report_error(f"{running.spec.plane}/{running.spec.name}", "stop", exc)
            running.handle.close()
        await self.bus.drain(self.config.control.drain_timeout_s)

    async def run(self, duration_s: float | None = None) -> None:
        """Start, run until stopped (or for ``duration_s`` seconds of wall time), stop."""
        await self.start()
        try:
            if duration_s is None:
                await self._stopped.wait()
            elif not await self.wait_stopped(duration_s):
                self.request_stop(f"duration {duration_s:g}s elapsed")
        finally:
            await self.stop()
        if self.failure is not None:
            raise RuntimeFailedError(self.failure)
