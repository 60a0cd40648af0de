"""Ports: the Protocols that plugins implement or receive, and the specs they register.

A plugin never imports a plane; it receives a ``ComponentContext`` (a bus handle bound to its
plane, the clock, the runtime config and its own settings) and hands back objects that match
these Protocols.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Protocol, TypeVar, runtime_checkable

import attrs

from contracts.meta import EventMeta, Payload, Source
from contracts.strategy import IntentDraft, ParamValue
from contracts.topics import Topic

P = TypeVar("P", bound=Payload)


class Clock(Protocol):
    """Time for every plane: wall time live and paper, data time in backtests.

    ``pace(ts_ms)`` is what a data source calls before emitting an event stamped ``ts_ms``: the
    real-time clock sleeps until then, the historical clock jumps there and wakes due sleepers.
    """

    @property
    def is_realtime(self) -> bool:
        """True when time is the wall clock."""
        ...

    def now_ms(self) -> int:
        """Current time in unix milliseconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...

    async def sleep_until(self, ts_ms: int) -> None:
        """Wait until this clock reads ``ts_ms`` or later."""
        ...

    async def pace(self, ts_ms: int) -> None:
        """Let this clock reach ``ts_ms`` (sleep in real time; advance in historical time)."""
        ...


class Subscription(Protocol):
    """What subscribing returns; ``cancel()`` unsubscribes (idempotent)."""

    def cancel(self) -> None:
        """Stop delivering to this handler."""
        ...


class BusHandle(Protocol):
    """The EventBus as one plane sees it.

    ``meta()`` fills the plane's source; ``publish`` enforces the plane's rights.
    """

    @property
    def source(self) -> Source:
        """The ``EventMeta.source`` of everything this handle publishes."""
        ...

    @property
    def plane(self) -> str:
        """The plane this handle is bound to."""
        ...

    def meta(self, correlation_id: str | None = None) -> EventMeta:
        """A fresh ``EventMeta`` with this plane's source and the clock's time."""
        ...

    def publish(self, topic: Topic[P], payload: P) -> None:
        """Publish, if this plane may publish ``topic``; raises ``PublishDeniedError`` otherwise."""
        ...

    def publish_threadsafe(self, topic: Topic[P], payload: P) -> None:
        """Publish from a thread other than the event loop's."""
        ...

    def subscribe(self, topic: Topic[P], handler: Callable[[P], object]) -> Subscription:
        """Call ``handler(payload)`` for each event on ``topic`` (``async def`` handlers too)."""
        ...

    def subscribe_prefix(
        self, prefix: str, handler: Callable[[Topic[Any], Payload], object]
    ) -> Subscription:
        """Call ``handler(topic, payload)`` for each topic starting with ``prefix``."""
        ...

    def subscribe_all(self, handler: Callable[[Topic[Any], Payload], object]) -> Subscription:
        """Call ``handler(topic, payload)`` for every event."""
        ...

    def published(self) -> Mapping[str, int]:
        """How many events each topic has carried so far, by name (topics with none left out)."""
        ...


class ComponentContext(Protocol):
    """What the runtime gives a component's factory."""

    @property
    def bus(self) -> BusHandle:
        """The bus handle bound to the component's plane."""
        ...

    @property
    def clock(self) -> Clock:
        """The runtime clock (historical in backtests, real time otherwise)."""
        ...

    @property
    def config(self) -> object:
        """The validated runtime configuration (``planes.config.Config``)."""
        ...

    @property
    def settings(self) -> Mapping[str, Any]:
        """The plugin's own table, ``[plugins.settings.<plugin name>]`` (empty when absent)."""
        ...

    @property
    def exchanges(self) -> Mapping[str, ExchangeSpec]:
        """Every registered venue by name."""
        ...

    @property
    def strategies(self) -> Mapping[str, StrategySpec]:
        """Every registered strategy by name."""
        ...

    @property
    def notifiers(self) -> Mapping[str, NotifierSpec]:
        """Every registered notifier by name."""
        ...


@runtime_checkable
class Component(Protocol):
    """A long-lived part of a plane. Subscribe in ``start``; release everything in ``stop``.

    Components start in plane order (observability, storage, market, analytics, execution,
    strategy, risk, research, plugin planes, control last) and stop in the reverse order.
    """

    name: str

    async def start(self) -> None:
        """Subscribe and start background work."""
        ...

    async def stop(self) -> None:
        """Stop background work and release resources; called once, even after a failed start."""
        ...


class MarketDataSource(Protocol):
    """An exchange or data feed owned by the MarketGateway; publishes ``market:*`` data itself.

    ``connect`` and ``disconnect`` are idempotent. ``connect`` returns once the source streams (or
    raises); ``subscribe`` may be called before ``connect`` and is remembered.
    """

    name: str
    endpoint: str

    async def connect(self) -> None:
        """Open the stream."""
        ...

    async def disconnect(self) -> None:
        """Close the stream and every task it started."""
        ...

    async def subscribe(self, symbols: Sequence[str], channels: Sequence[str]) -> None:
        """Stream ``channels`` (empty: the configured ones) for ``symbols``."""
        ...


class StrategyView(Protocol):
    """The read-only world a strategy sees: time from the clock, features, regime, positions."""

    @property
    def symbol(self) -> str:
        """The symbol this strategy instance trades."""
        ...

    def now_ms(self) -> int:
        """Current time of the runtime clock (never the wall clock)."""
        ...

    def features(self) -> Mapping[str, float]:
        """The latest ``analytics:features`` values of the symbol (empty when none yet)."""
        ...

    def regime(self) -> str | None:
        """The latest ``analytics:context`` regime label of the symbol, or None."""
        ...

    def position(self) -> Decimal:
        """The current position quantity of the symbol (signed; zero when flat)."""
        ...


class Strategy(Protocol):
    """Turns events into intent drafts. No I/O, no wall clock, no exchange access of its own.

    One instance serves one scenario on one symbol. It is called for the closed
    ``market:kline`` bars of its symbol and for its symbol's ``analytics:features``; it keeps
    whatever state it needs between calls and returns what it wants now (often nothing).
    """

    def on_event(
        self, topic: Topic[Any], payload: Payload, view: StrategyView
    ) -> Sequence[IntentDraft]:
        """Return the intent drafts this event causes."""
        ...


class Notifier(Protocol):
    """Delivers a text to people (Telegram ...); raises on failure so the outbox retries."""

    async def send(self, text: str, *, dedupe_key: str) -> None:
        """Deliver ``text`` once per ``dedupe_key``."""
        ...


@runtime_checkable
class Stateful(Protocol):
    """A component whose in-memory state must survive a restart (positions, orders, scenarios).

    The storage plane snapshots ``export_state()`` (plain JSON: Decimals as strings) under
    ``state_key``. At boot it hands the last snapshot's section to ``restore_state`` and then
    every journaled event after that snapshot whose topic is in ``state_topics`` to
    ``replay_event``, in journal order, which must rebuild exactly the state the live handlers
    built from the same events -- and publish nothing. ``recovered()`` runs once the state is
    whole, before market data flows: the place to publish what others must learn (positions).
    """

    state_key: str
    state_topics: frozenset[str]

    def export_state(self) -> dict[str, Any]:
        """The state as JSON-able data."""
        ...

    def restore_state(self, state: Mapping[str, Any]) -> None:
        """Replace the state with an exported one."""
        ...

    def replay_event(self, topic: str, payload: Any) -> None:
        """Apply one journaled event to the state, as the live handler would; publish nothing."""
        ...

    def recovered(self) -> None:
        """Recovery is complete: announce what needs announcing."""
        ...


@runtime_checkable
class ViewReplaying(Protocol):
    """A ``Stateful`` component that rebuilds its state from a few fields of some topics' events.

    ``replay_views`` maps a topic of ``state_topics`` to a *view*: an attrs class whose fields
    are fields of the topic's payload (same names and types; ``contracts.converter.check_view``).
    When every component that replays a topic names the same view for it, recovery reads only
    those fields of each event (``contracts.converter.load_view``: the payload is not built)
    and calls ``replay_view`` with the view and ``load``, which decodes the whole payload: for
    the few events the component keeps (a venue's last bar per symbol). Otherwise the topic's
    events go to ``replay_event`` as usual, which must therefore still take them.

    The view path must rebuild exactly the state ``replay_event(topic, load())`` would; it may
    call ``load`` later (when its state is exported or recovery ends), never after
    ``restore_state``. ``load`` raises what decoding the payload raises.
    """

    replay_views: Mapping[str, type]

    def replay_view(self, topic: str, view: Any, load: Callable[[], Any]) -> None:
        """Apply one journaled event from its ``view`` (``load()`` decodes it); publish nothing."""
        ...


@runtime_checkable
class Reconciling(Protocol):
    """A venue that can compare the recovered state with what the exchange reports."""

    async def reconcile(self, policy: str) -> list[str]:
        """Check open orders and positions against the venue; return one line per action.

        ``policy`` says what to do with an open order the venue has and the state does not:
        ``adopt`` it, ``cancel`` it, or only ``alert``. A fill is never invented.
        """
        ...


ComponentFactory = Callable[[ComponentContext], Component]
SourceFactory = Callable[[ComponentContext], MarketDataSource]


@attrs.frozen
class PlaneSpec:
    """A component a plugin adds to a plane.

    ``plane`` is a built-in plane name (the component then has that plane's source and publish
    rights) or a new one; a new plane may publish only the topic names or ``prefix:*`` patterns
    in ``publishes`` (never ``control:state``, ``risk:*``, ``exec:*`` or ``portfolio:*``).
    """

    name: str
    plane: str
    factory: ComponentFactory
    publishes: tuple[str, ...] = ()


@attrs.frozen
class ExchangeSpec:
    """A venue: its market-data source and (optionally) its execution adapter, by name.

    ``market.source = "<name>"`` selects the source; ``execution.venue = "<name>"`` the adapter,
    which the runtime builds as the execution-plane component ``<name>_execution`` (a
    ``Component`` whose ``venue`` is ``name``; docs/plugins.md).
    """

    name: str
    market_data: SourceFactory | None = None
    execution: Callable[[ComponentContext], object] | None = None


@attrs.frozen
class StrategySpec:
    """A strategy by name; ``factory(params)`` builds one instance per scenario."""

    name: str
    factory: Callable[[Mapping[str, ParamValue]], Strategy]
    description: str = ""


@attrs.frozen
class NotifierSpec:
    """A notifier by name."""

    name: str
    factory: Callable[[ComponentContext], Notifier]
