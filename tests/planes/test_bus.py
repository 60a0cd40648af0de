"""The EventBus contract (see the ``planes.bus`` module docstring), one test per promise.

Typing, subscription order across every kind of subscription, FIFO run-to-completion,
isolation of failing handlers, async handlers, cross-thread publishing and plane handles, plus
Hypothesis properties for order, isolation and cascades. Every test builds its own bus.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import threading
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from contracts.analytics import FeatureVector, MarketDriftDetected
from contracts.control import ControlState
from contracts.enums import Lifecycle, OrderStatus, OrderType, Side
from contracts.execution import OrderEvent, PositionUpdate
from contracts.market import TickerEvent, TradeEvent
from contracts.meta import EventMeta, Payload, Source
from contracts.research import ScenarioRejected
from contracts.rights import BUILTIN_RIGHTS, RESERVED, rights_for
from contracts.risk import RejectedIntent
from contracts.strategy import Intent
from contracts.system import ErrorEvent
from contracts.topics import (
    ANALYTICS_DRIFT,
    ANALYTICS_FEATURES,
    CONTROL_COMMAND,
    CONTROL_STATE,
    ERROR_EVENT,
    EXEC_ORDER_EVENT,
    MARKET_CONNECT,
    MARKET_DISCONNECT,
    MARKET_SUBSCRIBE,
    MARKET_TICKER,
    MARKET_TRADE,
    OBSERVABILITY_ALERT,
    PORTFOLIO_POSITION,
    RESEARCH_REJECTED,
    RISK_REJECTED,
    BotEventMap,
    Topic,
    TopicClashError,
)
from planes.bus import (
    BusError,
    EventBus,
    PayloadTypeError,
    PlaneHandle,
    PublishDeniedError,
    UnknownTopicError,
)

# -- payloads and helpers ------------------------------------------------------------------


@attrs.frozen
class DemoPing(Payload):
    """A plugin payload, bound to the plugin topic ``demo:ping``."""

    n: int


DEMO_PING = Topic("demo:ping", DemoPing, "a plugin topic")


@attrs.frozen
class SubTicker(TickerEvent):
    """A subclass of the ticker payload: still not the topic's class."""


@attrs.frozen
class UnusedPayload(Payload):
    """A payload class no built-in topic uses."""


@attrs.frozen
class FakeMeta:
    """Looks like an ``EventMeta`` but is not one."""

    source: Source
    ts: int
    correlation_id: str | None = None


def ticker(n: int = 1, source: Source = Source.MARKET) -> TickerEvent:
    return TickerEvent(
        meta=EventMeta(source, 1),
        exchange="x",
        symbol="BTCUSDT",
        last_price=Decimal("1"),
        exchange_ts=n,
    )


def trade(n: int = 1, source: Source = Source.MARKET) -> TradeEvent:
    return TradeEvent(
        meta=EventMeta(source, 1),
        exchange="x",
        symbol="BTCUSDT",
        trade_id=str(n),
        price=Decimal("1"),
        qty=Decimal("2"),
        side=Side.BUY,
        exchange_ts=n,
    )


def intent(meta: EventMeta) -> Intent:
    return Intent(meta, "i1", "s1", "demo", "BTCUSDT", Side.BUY, size_hint=Decimal("1"))


PAYLOADS: dict[Topic[Any], Callable[[EventMeta], Any]] = {
    MARKET_TICKER: lambda m: attrs.evolve(ticker(), meta=m),
    ANALYTICS_FEATURES: lambda m: FeatureVector(m, "BTCUSDT", "1m", 1, {"rsi": 50.0}),
    ANALYTICS_DRIFT: lambda m: MarketDriftDetected(m, "BTCUSDT", "rsi", "adwin", 1, 0.9),
    CONTROL_STATE: lambda m: ControlState(m, Lifecycle.RUNNING, paused=False),
    RISK_REJECTED: lambda m: RejectedIntent(m, intent(m), "paused"),
    EXEC_ORDER_EVENT: lambda m: OrderEvent(
        meta=m,
        order_id="o1",
        client_order_id="c1",
        venue="paper",
        symbol="BTCUSDT",
        side=Side.BUY,
        order_type=OrderType.MARKET,
        status=OrderStatus.FILLED,
        qty=Decimal(1),
    ),
    PORTFOLIO_POSITION: lambda m: PositionUpdate(
        meta=m,
        symbol="BTCUSDT",
        qty=Decimal(1),
        avg_price=Decimal(1),
        realized_pnl=Decimal(0),
        unrealized_pnl=Decimal(0),
        mark_price=Decimal(1),
        equity=Decimal(1),
        cash=Decimal(0),
    ),
    RESEARCH_REJECTED: lambda m: ScenarioRejected(m, "cand-1", ("too few trades",)),
    ERROR_EVENT: lambda m: ErrorEvent(m, "someone", "market:ticker", "ValueError", "x"),
}
"""One hand-built payload per topic the plane-rights tests publish, given its meta."""


def origin_of(handler: Callable[..., object]) -> str:
    """How the bus names a handler in ``error:event``: ``module.qualname``."""
    return f"{handler.__module__}.{handler.__qualname__}"


def errors_of(bus: EventBus) -> list[ErrorEvent]:
    """Subscribe a recorder to ``error:event`` and return its list."""
    seen: list[ErrorEvent] = []
    bus.subscribe(ERROR_EVENT, seen.append)
    return seen


def everything_on(bus: EventBus) -> list[tuple[str, Payload]]:
    """Subscribe a catch-all recorder and return its list of ``(topic name, payload)``."""
    seen: list[tuple[str, Payload]] = []
    bus.subscribe_all(lambda topic, payload: seen.append((topic.name, payload)))
    return seen


def stack_depth() -> int:
    frame = inspect.currentframe()
    depth = 0
    while frame is not None:
        depth += 1
        frame = frame.f_back
    return depth


def failed_logs(logs: Sequence[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == "bus.handler_failed"]


# -- typed publish -------------------------------------------------------------------------


def test_publish_delivers_the_exact_payload_object() -> None:
    bus = EventBus()
    seen: list[TickerEvent] = []
    bus.subscribe(MARKET_TICKER, seen.append)
    event = ticker()
    bus.publish(MARKET_TICKER, event)
    assert len(seen) == 1
    assert seen[0] is event


@pytest.mark.parametrize(
    ("payload", "names"),
    [
        pytest.param(trade(), ("market:ticker", "TradeEvent"), id="wrong-class"),
        pytest.param(
            SubTicker(EventMeta(Source.MARKET, 1), "x", "BTCUSDT", Decimal(1), 1),
            ("market:ticker", "SubTicker"),
            id="subclass",
        ),
        pytest.param(
            attrs.evolve(ticker(), meta=cast(Any, None)), ("market:ticker", "None"), id="meta-none"
        ),
        pytest.param(
            attrs.evolve(ticker(), meta=cast(Any, FakeMeta(Source.MARKET, 1))),
            ("market:ticker", "FakeMeta"),
            id="meta-not-eventmeta",
        ),
    ],
)
def test_publish_rejects_a_bad_payload_and_delivers_nothing(
    payload: Payload, names: tuple[str, ...]
) -> None:
    bus = EventBus()
    exact: list[object] = []
    bus.subscribe(MARKET_TICKER, exact.append)
    tapped = everything_on(bus)
    with pytest.raises(PayloadTypeError) as info:
        bus.publish(MARKET_TICKER, cast(Any, payload))
    for name in names:
        assert name in str(info.value)
    assert isinstance(info.value, TypeError)
    assert exact == []
    assert tapped == []
    assert not bus.handler_errors


def test_a_rejected_publish_from_a_handler_is_that_handlers_failure() -> None:
    bus = EventBus()
    errors = errors_of(bus)

    def publishes_garbage(_: TickerEvent) -> None:
        bus.publish(MARKET_TRADE, cast(Any, ticker()))

    trades: list[TradeEvent] = []
    bus.subscribe(MARKET_TRADE, trades.append)
    bus.subscribe(MARKET_TICKER, publishes_garbage)
    with capture_logs():
        bus.publish(MARKET_TICKER, ticker())
    assert trades == []
    assert [(e.origin, e.error_type) for e in errors] == [
        (origin_of(publishes_garbage), "PayloadTypeError")
    ]


def test_published_counts_every_accepted_event_queued_ones_too_rejected_ones_not() -> None:
    bus = EventBus()
    market = handle_for(bus, "market")
    assert bus.published() == {}

    def cascade(_: TickerEvent) -> None:
        market.publish(MARKET_TRADE, trade())  # queued: counted when published, not delivered
        assert bus.published()[MARKET_TRADE.name] == 1

    bus.subscribe(MARKET_TICKER, cascade)
    market.publish(MARKET_TICKER, ticker())
    market.publish(MARKET_TRADE, trade())  # nobody subscribed: still carried
    with pytest.raises(PayloadTypeError):
        market.publish(MARKET_TICKER, cast(Any, trade()))
    handle = handle_for(bus, "research")
    with capture_logs(), pytest.raises(PublishDeniedError):
        handle.publish(MARKET_TICKER, ticker(source=Source.RESEARCH))
    counts = {MARKET_TICKER.name: 1, MARKET_TRADE.name: 2, ERROR_EVENT.name: 1}
    assert bus.published() == counts  # the refused publish was reported as error:event
    assert handle.published() == counts
    bus.publish(MARKET_TRADE, trade())  # the bare dispatch path counts nothing
    assert bus.published() == counts


async def test_events_published_from_another_thread_are_counted_once_delivered() -> None:
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    market = handle_for(bus, "market")
    delivered = asyncio.Event()
    bus.subscribe(MARKET_TRADE, lambda _: delivered.set())
    thread = threading.Thread(target=market.publish_threadsafe, args=(MARKET_TRADE, trade()))
    thread.start()
    thread.join()
    await asyncio.wait_for(delivered.wait(), 5)
    assert bus.published() == {MARKET_TRADE.name: 1}


def test_an_equal_topic_object_is_as_good_as_the_constant() -> None:
    bus = EventBus()
    seen: list[tuple[Topic[Any], TickerEvent]] = []
    bus.subscribe_all(lambda topic, payload: seen.append((topic, cast(TickerEvent, payload))))
    copy = Topic("market:ticker", TickerEvent)
    assert copy is not MARKET_TICKER
    event = ticker()
    bus.publish(copy, event)
    assert seen == [(MARKET_TICKER, event)]


def test_publish_needs_a_topic_object() -> None:
    bus = EventBus()
    with pytest.raises(PayloadTypeError, match="needs a Topic"):
        bus.publish(cast(Any, "market:ticker"), ticker())


def test_unregistered_topic_is_refused_for_publish_and_subscribe() -> None:
    bus = EventBus()
    tapped = everything_on(bus)
    with pytest.raises(UnknownTopicError, match="demo:ping"):
        bus.publish(DEMO_PING, DemoPing(EventMeta(Source.SYSTEM, 1), 1))
    with pytest.raises(UnknownTopicError, match="demo:ping"):
        bus.subscribe(DEMO_PING, lambda _: None)
    with pytest.raises(UnknownTopicError):
        bus.signal(DEMO_PING)
    assert tapped == []


def test_a_topic_reusing_a_registered_name_with_another_payload_is_refused() -> None:
    bus = EventBus()
    impostor = Topic("market:ticker", TradeEvent)
    tickers: list[object] = []
    bus.subscribe(MARKET_TICKER, tickers.append)
    tapped = everything_on(bus)
    with pytest.raises(BusError, match="market:ticker"):
        bus.publish(impostor, trade())
    with pytest.raises(BusError, match="market:ticker"):
        bus.subscribe(impostor, lambda _: None)
    assert tickers == []
    assert tapped == []


def test_register_topic_adds_a_plugin_topic() -> None:
    bus = EventBus()
    early: list[tuple[str, Payload]] = []
    bus.subscribe_prefix("demo:*", lambda topic, payload: early.append((topic.name, payload)))
    bus.register_topic(DEMO_PING, "demo-plugin")
    exact: list[DemoPing] = []
    bus.subscribe(DEMO_PING, exact.append)
    ping = DemoPing(EventMeta(Source.SYSTEM, 1), 7)
    bus.publish(DEMO_PING, ping)
    assert exact == [ping]
    assert early == [("demo:ping", ping)], "prefix subscriptions include topics registered later"
    assert bus.topics.owner("demo:ping") == "demo-plugin"


def test_register_topic_name_clash_names_both_owners() -> None:
    bus = EventBus()
    bus.register_topic(DEMO_PING, "first-plugin")
    with pytest.raises(TopicClashError) as info:
        bus.register_topic(Topic("demo:ping", SubTicker), "second-plugin")
    assert "first-plugin" in str(info.value)
    assert "second-plugin" in str(info.value)
    with pytest.raises(TopicClashError) as builtin:
        bus.register_topic(Topic("market:ticker", UnusedPayload), "third-plugin")
    assert "builtin" in str(builtin.value)
    assert "third-plugin" in str(builtin.value)
    # The clashing topics were not half-registered.
    assert bus.topics["demo:ping"] is DEMO_PING
    assert bus.topics["market:ticker"] is MARKET_TICKER


# -- subscription order --------------------------------------------------------------------


def test_order_is_subscription_order_across_every_kind_of_subscription() -> None:
    bus = EventBus()
    calls: list[str] = []

    def exact(name: str) -> Callable[[object], None]:
        def handler(_: object) -> None:
            calls.append(name)

        return handler

    def wild(name: str) -> Callable[[Topic[Any], Payload], None]:
        def handler(_: Topic[Any], __: Payload) -> None:
            calls.append(name)

        return handler

    senders: list[object] = []

    def direct(sender: object) -> None:
        senders.append(sender)
        calls.append("direct")

    def direct_weak(_: object) -> None:
        calls.append("direct_weak")

    signal = bus.signal(MARKET_TICKER)
    e1 = exact("e1")
    all1 = bus.subscribe_all(wild("all"))
    bus.subscribe(MARKET_TICKER, e1)
    signal.connect(direct, weak=False)
    bus.subscribe_prefix("market:*", wild("p_star"))
    bus.subscribe(MARKET_TICKER, exact("e2"))
    signal.connect(direct_weak)  # weak, kept alive by this frame
    bus.subscribe_prefix("market:", wild("p_colon"))
    bus.subscribe_prefix("analytics:*", wild("other_prefix"))
    bus.subscribe(MARKET_TRADE, exact("other_topic"))

    event = ticker()
    bus.publish(MARKET_TICKER, event)
    assert calls == ["all", "e1", "direct", "p_star", "e2", "direct_weak", "p_colon"]
    assert senders == [event], "blinker receivers get the payload as sender"

    # Unsubscribe and resubscribe: the resubscribed ones move to the end, in the new order.
    calls.clear()
    all1.cancel()
    signal.disconnect(direct)
    bus.subscribe(MARKET_TICKER, e1)  # already subscribed: keeps its place
    bus.publish(MARKET_TICKER, ticker())
    assert calls == ["e1", "p_star", "e2", "direct_weak", "p_colon"]

    calls.clear()
    signal.disconnect(e1)  # an exact subscription is a blinker receiver, so this unsubscribes
    signal.connect(direct, weak=False)
    bus.subscribe_all(wild("all"))
    bus.subscribe(MARKET_TICKER, e1)
    bus.publish(MARKET_TICKER, ticker())
    assert calls == ["p_star", "e2", "direct_weak", "p_colon", "direct", "all", "e1"]
    assert len(bus.handlers(MARKET_TICKER)) == 7


def test_subscribing_the_same_handler_twice_delivers_once() -> None:
    bus = EventBus()
    calls: list[str] = []

    def h(_: TickerEvent) -> None:
        calls.append("h")

    def g(_: TickerEvent) -> None:
        calls.append("g")

    class Owner:
        def method(self, _: TickerEvent) -> None:
            calls.append("method")

    owner = Owner()
    bus.subscribe(MARKET_TICKER, h)
    bus.subscribe(MARKET_TICKER, g)
    bus.subscribe(MARKET_TICKER, owner.method)
    bus.subscribe(MARKET_TICKER, h)
    bus.subscribe(MARKET_TICKER, owner.method)  # a new but equal bound method object
    bus.publish(MARKET_TICKER, ticker())
    assert calls == ["h", "g", "method"]


async def test_subscribing_the_same_async_handler_twice_delivers_once() -> None:
    bus = EventBus()
    calls: list[str] = []

    async def handler(_: TickerEvent) -> None:
        calls.append("function")

    class Owner:
        async def method(self, _: TickerEvent) -> None:
            calls.append("method")

    owner = Owner()
    recorder = AsyncRecorder()
    for _ in range(2):
        bus.subscribe(MARKET_TICKER, handler)
        bus.subscribe(MARKET_TICKER, owner.method)  # a new but equal bound method each time
        bus.subscribe(MARKET_TICKER, recorder)
    bus.subscribe(MARKET_TICKER, Owner().method)  # another instance: another handler
    assert len(bus.handlers(MARKET_TICKER)) == 4
    bus.publish(MARKET_TICKER, ticker())
    await bus.drain()
    assert sorted(calls) == ["function", "method", "method"]
    assert len(recorder.seen) == 1


def test_cancel_is_idempotent_and_does_not_touch_a_later_subscription() -> None:
    bus = EventBus()
    calls: list[str] = []

    def h(_: TickerEvent) -> None:
        calls.append("h")

    def w(_: Topic[Any], __: Payload) -> None:
        calls.append("w")

    sub = bus.subscribe(MARKET_TICKER, h)
    wsub = bus.subscribe_prefix("market:*", w)
    assert "active" in repr(sub)
    sub.cancel()
    sub.cancel()
    wsub.cancel()
    wsub.cancel()
    assert "cancelled" in repr(sub)
    bus.publish(MARKET_TICKER, ticker())
    assert calls == []

    bus.subscribe(MARKET_TICKER, h)
    sub.cancel()  # the old subscription is spent: the new one stays
    bus.publish(MARKET_TICKER, ticker())
    assert calls == ["h"]


def test_a_handler_subscribed_during_delivery_first_sees_the_next_event() -> None:
    bus = EventBus()
    late_exact: list[int] = []
    late_all: list[int] = []

    def subscriber(payload: TickerEvent) -> None:
        if payload.exchange_ts == 1:
            bus.subscribe(MARKET_TICKER, lambda p: late_exact.append(p.exchange_ts))
            bus.subscribe_all(lambda _, p: late_all.append(cast(TickerEvent, p).exchange_ts))
            bus.publish(MARKET_TICKER, ticker(2))  # queued: the next event

    bus.subscribe(MARKET_TICKER, subscriber)
    bus.publish(MARKET_TICKER, ticker(1))
    assert late_exact == [2]
    assert late_all == [2]
    bus.publish(MARKET_TICKER, ticker(3))
    assert late_exact == [2, 3]
    assert late_all == [2, 3]


def test_prefix_subscription_rejects_an_empty_prefix() -> None:
    bus = EventBus()
    with pytest.raises(ValueError, match="subscribe_all"):
        bus.subscribe_prefix("*", lambda _, __: None)


# -- FIFO run-to-completion ----------------------------------------------------------------


def test_events_published_from_handlers_are_delivered_fifo_after_the_current_one() -> None:
    bus = EventBus()
    log: list[object] = []

    def first(payload: TickerEvent) -> None:
        log.append(("a", payload.exchange_ts))
        if payload.exchange_ts == 0:
            bus.publish(MARKET_TICKER, ticker(1))
            bus.publish(MARKET_TRADE, trade(2))
            log.append("published")

    def second(payload: TickerEvent) -> None:
        log.append(("b", payload.exchange_ts))

    def on_trade(payload: TradeEvent) -> None:
        log.append(("trade", payload.exchange_ts))
        bus.publish(MARKET_TICKER, ticker(3))

    bus.subscribe(MARKET_TICKER, first)
    bus.subscribe(MARKET_TICKER, second)
    bus.subscribe(MARKET_TRADE, on_trade)
    bus.publish(MARKET_TICKER, ticker(0))
    # All of it happened before the outer publish returned.
    assert log == [
        ("a", 0),
        "published",
        ("b", 0),
        ("a", 1),
        ("b", 1),
        ("trade", 2),
        ("a", 3),
        ("b", 3),
    ]


def test_a_long_publish_chain_does_not_grow_the_stack() -> None:
    bus = EventBus()
    chain = 10_000
    seen: list[int] = []
    depths: list[int] = []

    def relay(payload: TickerEvent) -> None:
        n = payload.exchange_ts
        seen.append(n)
        if n in {0, 1, chain - 1}:
            depths.append(stack_depth())
        if n + 1 < chain:
            bus.publish(MARKET_TICKER, ticker(n + 1))

    bus.subscribe(MARKET_TICKER, relay)
    bus.publish(MARKET_TICKER, ticker(0))
    assert not bus.handler_errors
    assert seen == list(range(chain))
    # The first event runs straight from publish; every later one from the queue drain.
    assert depths[1] == depths[2]
    assert depths[0] <= depths[1] + 1


# -- isolation -----------------------------------------------------------------------------


def test_a_raising_handler_does_not_stop_the_others_and_is_reported() -> None:
    bus = EventBus(now_ms=lambda: 123)
    errors = errors_of(bus)
    calls: list[str] = []

    def before(_: TickerEvent) -> None:
        calls.append("before")

    def broken(_: TickerEvent) -> None:
        calls.append("broken")
        raise ValueError("boom")

    def after(_: TickerEvent) -> None:
        calls.append("after")

    bus.subscribe(MARKET_TICKER, before)
    bus.subscribe(MARKET_TICKER, broken)
    bus.subscribe(MARKET_TICKER, after)
    with capture_logs() as logs:
        bus.publish(MARKET_TICKER, ticker())  # does not raise

    assert calls == ["before", "broken", "after"]
    assert errors == [
        ErrorEvent(
            meta=EventMeta(Source.SYSTEM, 123),
            origin=origin_of(broken),
            topic="market:ticker",
            error_type="ValueError",
            message="boom",
        )
    ]
    assert origin_of(broken).startswith(__name__ + ".")
    assert bus.handler_errors == Counter({origin_of(broken): 1})
    [entry] = failed_logs(logs)
    assert entry["log_level"] == "error"
    assert entry["origin"] == origin_of(broken)
    assert entry["topic"] == "market:ticker"
    assert entry["error_type"] == "ValueError"
    assert entry["error"] == "boom"


def test_a_raising_wildcard_handler_is_reported_under_its_own_name() -> None:
    bus = EventBus()
    errors = errors_of(bus)

    def broken_tap(_: Topic[Any], __: Payload) -> None:
        raise KeyError("nope")

    class BrokenTap:
        def __call__(self, _: Topic[Any], __: Payload) -> None:
            raise LookupError("object")

    bus.subscribe_prefix("market:*", broken_tap)
    bus.subscribe_all(BrokenTap())
    with capture_logs():
        bus.publish(MARKET_TRADE, trade())
    assert [(e.origin, e.topic, e.error_type) for e in errors] == [
        (origin_of(broken_tap), "market:trade", "KeyError"),
        # A callable object is named by its class.
        (f"{__name__}.{BrokenTap.__qualname__}", "market:trade", "LookupError"),
    ]


def test_a_failing_error_event_handler_is_only_logged() -> None:
    bus = EventBus()
    error_calls: list[ErrorEvent] = []
    journal: list[str] = []

    def broken(_: TickerEvent) -> None:
        raise ValueError("first")

    def broken_error_handler(event: ErrorEvent) -> None:
        error_calls.append(event)
        raise RuntimeError("second")

    def broken_journal(topic: Topic[Any], _: Payload) -> None:
        journal.append(topic.name)
        if topic is ERROR_EVENT:
            raise RuntimeError("third")

    bus.subscribe(ERROR_EVENT, broken_error_handler)
    bus.subscribe_all(broken_journal)
    bus.subscribe(MARKET_TICKER, broken)
    with capture_logs() as logs:
        bus.publish(MARKET_TICKER, ticker())

    assert len(error_calls) == 1
    assert journal == ["market:ticker", "error:event"]
    assert [(e["topic"], e["error"]) for e in failed_logs(logs)] == [
        ("market:ticker", "first"),
        ("error:event", "second"),
        ("error:event", "third"),
    ]
    assert bus.handler_errors == Counter(
        {origin_of(broken): 1, origin_of(broken_error_handler): 1, origin_of(broken_journal): 1}
    )


# -- async handlers ------------------------------------------------------------------------


class AsyncRecorder:
    """A handler object with an ``async def __call__``."""

    def __init__(self) -> None:
        self.seen: list[TickerEvent] = []

    async def __call__(self, payload: TickerEvent) -> None:
        await asyncio.sleep(0)
        self.seen.append(payload)


class InheritedAsyncRecorder(AsyncRecorder):
    """Inherits its ``async def __call__``: still an async handler."""


class AsyncBroken:
    """A handler object whose ``async def __call__`` raises."""

    async def __call__(self, payload: TickerEvent) -> None:
        await asyncio.sleep(0)
        raise ValueError(f"bad {payload.exchange_ts}")


async def test_async_handlers_are_scheduled_tracked_and_drained() -> None:
    bus = EventBus()
    seen: list[TickerEvent] = []
    tapped: list[str] = []

    async def handler(payload: TickerEvent) -> None:
        await asyncio.sleep(0)
        seen.append(payload)

    async def tap(topic: Topic[Any], _: Payload) -> None:
        await asyncio.sleep(0)
        tapped.append(topic.name)

    recorder = AsyncRecorder()
    inherited = InheritedAsyncRecorder()
    bus.subscribe(MARKET_TICKER, handler)
    bus.subscribe(MARKET_TICKER, recorder)
    bus.subscribe(MARKET_TICKER, inherited)
    bus.subscribe_prefix("market:*", tap)
    event = ticker()
    bus.publish(MARKET_TICKER, event)
    assert seen == []
    assert recorder.seen == []
    assert bus.pending_tasks == 4
    await bus.drain()
    assert bus.pending_tasks == 0
    assert seen == [event]
    assert recorder.seen == [event]
    assert inherited.seen == [event]
    assert tapped == ["market:ticker"]


async def test_async_handler_failures_are_reported_as_error_events() -> None:
    bus = EventBus()
    errors = errors_of(bus)

    async def failing(_: TickerEvent) -> None:
        await asyncio.sleep(0)
        raise ValueError("async boom")

    async def failing_tap(_: Topic[Any], __: Payload) -> None:
        raise LookupError("tap boom")

    broken_object = AsyncBroken()
    bus.subscribe(MARKET_TICKER, failing)
    bus.subscribe(MARKET_TICKER, broken_object)
    bus.subscribe_prefix("market:", failing_tap)
    with capture_logs() as logs:
        bus.publish(MARKET_TICKER, ticker(5))
        await bus.drain()

    assert len(errors) == 3
    assert {(e.topic, e.message) for e in errors} == {
        ("market:ticker", "async boom"),
        ("market:ticker", "bad 5"),
        ("market:ticker", "tap boom"),
    }
    origins = {e.message: e.origin for e in errors}
    assert origins["async boom"] == origin_of(failing)
    assert origins["tap boom"] == origin_of(failing_tap)
    # A callable object is named by its class, never by its repr (which holds an address).
    assert origins["bad 5"] == f"{__name__}.AsyncBroken"
    assert sum(bus.handler_errors.values()) == 3
    assert len(failed_logs(logs)) == 3
    assert bus.pending_tasks == 0


async def test_drain_with_grace_cancels_a_hanging_handler_and_reports_it() -> None:
    bus = EventBus()
    errors = errors_of(bus)
    cancelled: list[bool] = []
    finished: list[bool] = []

    async def hangs(_: TickerEvent) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def quick(_: TickerEvent) -> None:
        finished.append(True)

    bus.subscribe(MARKET_TICKER, hangs)
    bus.subscribe(MARKET_TICKER, quick)
    bus.publish(MARKET_TICKER, ticker())
    loop = asyncio.get_running_loop()
    started = loop.time()
    with capture_logs():
        await bus.drain(grace_s=0.05)
    assert loop.time() - started < 5
    assert finished == [True]
    assert cancelled == [True]
    assert bus.pending_tasks == 0
    [error] = errors
    assert error.error_type == "TimeoutError"
    assert hangs.__qualname__ in error.origin


def test_an_async_handler_without_a_running_loop_is_reported_without_a_dangling_coroutine() -> None:
    bus = EventBus()
    errors = errors_of(bus)
    ran: list[TickerEvent] = []

    async def handler(payload: TickerEvent) -> None:
        ran.append(payload)

    bus.subscribe(MARKET_TICKER, handler)
    with warnings.catch_warnings(record=True) as caught, capture_logs():
        warnings.simplefilter("always")
        bus.publish(MARKET_TICKER, ticker())
        gc.collect()
    assert [str(w.message) for w in caught] == []
    assert ran == []
    assert bus.pending_tasks == 0
    [error] = errors
    assert error.origin == origin_of(handler)
    assert error.error_type == "RuntimeError"
    assert "running event loop" in error.message


# -- threads -------------------------------------------------------------------------------


def _in_thread(fn: Callable[[], object]) -> tuple[int, object]:
    """Run ``fn`` in a new thread; return that thread's ident and what fn returned or raised."""
    out: dict[str, object] = {}

    def target() -> None:
        out["ident"] = threading.get_ident()
        try:
            out["result"] = fn()
        except Exception as exc:
            out["result"] = exc

    worker = threading.Thread(target=target)
    worker.start()
    worker.join(5)
    return cast(int, out["ident"]), out["result"]


async def test_publish_threadsafe_delivers_on_the_loop_thread() -> None:
    bus = EventBus()
    loop = asyncio.get_running_loop()
    bus.bind_loop(loop)
    delivered = asyncio.Event()
    idents: list[int] = []
    seen: list[TickerEvent] = []

    def handler(payload: TickerEvent) -> None:
        idents.append(threading.get_ident())
        seen.append(payload)
        delivered.set()

    bus.subscribe(MARKET_TICKER, handler)
    event = ticker()
    worker_ident, result = _in_thread(lambda: bus.publish_threadsafe(MARKET_TICKER, event))
    assert result is None
    await asyncio.wait_for(delivered.wait(), 5)
    assert seen == [event]
    assert idents == [threading.get_ident()]
    assert worker_ident != threading.get_ident()


async def test_publish_threadsafe_raises_type_errors_in_the_calling_thread() -> None:
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    tapped = everything_on(bus)
    _, wrong = _in_thread(lambda: bus.publish_threadsafe(MARKET_TICKER, cast(Any, trade())))
    _, unknown = _in_thread(
        lambda: bus.publish_threadsafe(DEMO_PING, DemoPing(EventMeta(Source.SYSTEM, 1), 1))
    )
    assert isinstance(wrong, PayloadTypeError)
    assert "TradeEvent" in str(wrong)
    assert isinstance(unknown, UnknownTopicError)
    await asyncio.sleep(0.01)
    assert tapped == []


def test_publish_threadsafe_without_a_bound_loop_raises() -> None:
    bus = EventBus()
    tapped = everything_on(bus)
    with pytest.raises(RuntimeError, match="bind_loop"):
        bus.publish_threadsafe(MARKET_TICKER, ticker())
    assert tapped == []


# -- plane handles -------------------------------------------------------------------------


def handle_for(bus: EventBus, plane: str, declared: tuple[str, ...] = ()) -> PlaneHandle:
    source, rights = rights_for(plane, declared)
    return bus.handle(plane, source, rights)


def test_handle_meta_fills_source_and_clock() -> None:
    bus = EventBus(now_ms=lambda: 123)
    market = handle_for(bus, "market")
    assert market.plane == "market"
    assert market.meta() == EventMeta(Source.MARKET, 123)
    assert market.meta("corr-1") == EventMeta(Source.MARKET, 123, "corr-1")
    assert handle_for(bus, "research").meta().source is Source.RESEARCH
    assert handle_for(bus, "execution").meta().source is Source.TRADING


def test_research_may_publish_research_topics_and_drift_only() -> None:
    bus = EventBus()
    research = handle_for(bus, "research")
    allowed = {name for name in BotEventMap if research.may_publish(BotEventMap[name])}
    expected = {name for name in BotEventMap if name.startswith("research:")}
    assert allowed == expected | {"analytics:marketDriftDetected"}

    tapped = everything_on(bus)
    for topic in (RESEARCH_REJECTED, ANALYTICS_DRIFT):
        research.publish(topic, PAYLOADS[topic](research.meta()))
    assert [name for name, _ in tapped] == [RESEARCH_REJECTED.name, ANALYTICS_DRIFT.name]


@pytest.mark.parametrize(
    "topic", [MARKET_TICKER, ANALYTICS_FEATURES, CONTROL_STATE, ERROR_EVENT, RISK_REJECTED]
)
def test_research_publishing_anything_else_raises_and_is_reported(topic: Topic[Any]) -> None:
    bus = EventBus()
    research = handle_for(bus, "research")
    errors = errors_of(bus)
    delivered: list[object] = []
    bus.subscribe(topic, delivered.append)
    with capture_logs() as logs, pytest.raises(PublishDeniedError, match=topic.name):
        research.publish(topic, PAYLOADS[topic](research.meta()))
    assert [e for e in delivered if e not in errors] == []
    assert [(e["origin"], e["topic"]) for e in failed_logs(logs)] == [
        ("plane:research", topic.name)
    ]
    assert bus.handler_errors == Counter({"plane:research": 1})
    if topic is ERROR_EVENT:
        # A failure about error:event is only logged, like a failing error:event handler.
        assert errors == []
    else:
        assert [(e.origin, e.topic, e.error_type) for e in errors] == [
            ("plane:research", topic.name, "PublishDeniedError")
        ]


PLUGIN_DECLARED = ("risk:*", "control:state", "demo:*", "exec:*", "portfolio:*")


@pytest.mark.parametrize("plane", [*BUILTIN_RIGHTS, "myplane"])
def test_reserved_topics_belong_to_one_plane_whatever_is_declared(plane: str) -> None:
    bus = EventBus()
    handle = handle_for(bus, plane, PLUGIN_DECLARED)
    for name, topic in BotEventMap.items():
        may = handle.may_publish(topic)
        if name == "control:state":
            assert may is (plane == "control"), name
        elif name.startswith("risk:"):
            assert may is (plane == "risk"), name
        elif name.startswith(("exec:", "portfolio:")):
            assert may is (plane == "execution"), name
        elif name in {"error:event", "observability:alert"}:
            assert may is (plane != "research"), name
    assert set(RESERVED.values()) == {"control", "risk", "execution"}


def test_builtin_planes_publish_their_own_topics() -> None:
    bus = EventBus()
    assert handle_for(bus, "market").may_publish(MARKET_TICKER)
    assert not handle_for(bus, "market").may_publish(CONTROL_COMMAND)
    control = handle_for(bus, "control")
    assert control.may_publish(CONTROL_STATE)
    assert control.may_publish(CONTROL_COMMAND)
    assert control.may_publish(MARKET_CONNECT)
    assert not control.may_publish(MARKET_TICKER)
    assert handle_for(bus, "risk").may_publish(RISK_REJECTED)
    assert handle_for(bus, "execution").may_publish(EXEC_ORDER_EVENT)
    assert handle_for(bus, "execution").may_publish(PORTFOLIO_POSITION)
    assert handle_for(bus, "cli").may_publish(CONTROL_COMMAND)
    assert not handle_for(bus, "cli").may_publish(CONTROL_STATE)
    assert handle_for(bus, "observability").may_publish(OBSERVABILITY_ALERT)


@pytest.mark.parametrize(
    ("plane", "topic"),
    [
        ("control", CONTROL_STATE),
        ("risk", RISK_REJECTED),
        ("execution", EXEC_ORDER_EVENT),
        ("execution", PORTFOLIO_POSITION),
    ],
)
def test_reserved_topics_are_published_by_their_owner(plane: str, topic: Topic[Any]) -> None:
    bus = EventBus()
    owner = handle_for(bus, plane)
    seen: list[object] = []
    bus.subscribe(topic, seen.append)
    payload = PAYLOADS[topic](owner.meta())
    owner.publish(topic, payload)
    assert seen == [payload]


@pytest.mark.parametrize(
    "topic", [CONTROL_STATE, RISK_REJECTED, EXEC_ORDER_EVENT, PORTFOLIO_POSITION]
)
def test_a_plugin_plane_is_refused_reserved_topics_but_gets_its_own(topic: Topic[Any]) -> None:
    bus = EventBus()
    bus.register_topic(DEMO_PING, "myplugin")
    plugin = handle_for(bus, "myplane", ("risk:*", "control:state", "demo:*"))
    errors = errors_of(bus)
    delivered: list[object] = []
    bus.subscribe(topic, delivered.append)
    with capture_logs(), pytest.raises(PublishDeniedError, match="myplane"):
        plugin.publish(topic, PAYLOADS[topic](plugin.meta()))
    assert delivered == []
    assert [(e.origin, e.topic) for e in errors] == [("plane:myplane", topic.name)]

    pings: list[DemoPing] = []
    bus.subscribe(DEMO_PING, pings.append)
    plugin.publish(DEMO_PING, DemoPing(plugin.meta(), 1))
    assert len(pings) == 1
    plugin.publish(ERROR_EVENT, PAYLOADS[ERROR_EVENT](plugin.meta()))


def test_a_payload_claiming_another_source_is_refused() -> None:
    bus = EventBus()
    market = handle_for(bus, "market")
    errors = errors_of(bus)
    tickers: list[TickerEvent] = []
    bus.subscribe(MARKET_TICKER, tickers.append)
    with capture_logs(), pytest.raises(PublishDeniedError, match="analytics"):
        market.publish(MARKET_TICKER, ticker(source=Source.ANALYTICS))
    assert tickers == []
    assert [(e.origin, e.topic, e.error_type) for e in errors] == [
        ("plane:market", "market:ticker", "PublishDeniedError")
    ]
    market.publish(MARKET_TICKER, ticker(source=Source.MARKET))
    assert len(tickers) == 1


def test_a_handle_still_type_checks_the_payload() -> None:
    bus = EventBus()
    market = handle_for(bus, "market")
    with pytest.raises(PayloadTypeError):
        market.publish(MARKET_TICKER, attrs.evolve(ticker(), meta=cast(Any, None)))
    with pytest.raises(PayloadTypeError):
        market.publish(MARKET_TICKER, cast(Any, trade()))


def test_handle_publish_threadsafe_checks_rights_in_the_calling_thread() -> None:
    bus = EventBus()
    research = handle_for(bus, "research")
    with capture_logs(), pytest.raises(PublishDeniedError):
        research.publish_threadsafe(MARKET_TICKER, ticker(source=Source.RESEARCH))


def test_handle_close_cancels_its_subscriptions() -> None:
    bus = EventBus()
    market = handle_for(bus, "market")
    mine: list[str] = []
    others: list[str] = []
    market.subscribe(MARKET_TICKER, lambda _: mine.append("exact"))
    market.subscribe_prefix("market:*", lambda _, __: mine.append("prefix"))
    market.subscribe_all(lambda _, __: mine.append("all"))
    bus.subscribe(MARKET_TICKER, lambda _: others.append("exact"))
    market.publish(MARKET_TICKER, ticker())
    assert mine == ["exact", "prefix", "all"]
    market.close()
    market.close()
    mine.clear()
    market.publish(MARKET_TICKER, ticker())
    assert mine == []
    assert others == ["exact", "exact"]


# -- properties ----------------------------------------------------------------------------

SUB_KINDS = ("exact", "prefix_star", "prefix_colon", "all", "blinker", "other_prefix", "other")
"""Subscription kinds the order property mixes; the last two never match ``market:ticker``."""

order_ops = st.lists(
    st.one_of(
        st.tuples(st.just("sub"), st.sampled_from(SUB_KINDS)),
        st.tuples(st.just("cancel"), st.integers(0, 63)),
        st.tuples(st.just("resub"), st.integers(0, 63)),
        st.tuples(st.just("publish"), st.just(0)),
    ),
    max_size=40,
)


@dataclass
class _Sub:
    label: int
    kind: str
    handler: Callable[..., None]
    cancel: Callable[[], None]
    active: bool = True


@given(order_ops)
def test_property_delivery_order_is_subscription_order(ops: list[tuple[str, Any]]) -> None:
    bus = EventBus()
    signal = bus.signal(MARKET_TICKER)
    calls: list[int] = []
    subs: list[_Sub] = []

    def subscribe(label: int, kind: str, handler: Any = None) -> _Sub:
        if handler is None:
            if kind in {"exact", "blinker", "other"}:

                def handler(_: object) -> None:
                    calls.append(label)

            else:

                def handler(_: object, __: object) -> None:
                    calls.append(label)

        if kind == "exact":
            cancel = bus.subscribe(MARKET_TICKER, handler).cancel
        elif kind == "other":
            cancel = bus.subscribe(MARKET_TRADE, handler).cancel
        elif kind == "blinker":
            signal.connect(handler, weak=False)

            def cancel(fn: Callable[..., None] = handler) -> None:
                signal.disconnect(fn)

        else:
            prefix = {"prefix_star": "market:*", "prefix_colon": "market:", "all": None}.get(
                kind, "analytics:*"
            )
            sub = (
                bus.subscribe_all(handler)
                if prefix is None
                else bus.subscribe_prefix(prefix, handler)
            )
            cancel = sub.cancel
        return _Sub(label, kind, handler, cancel)

    def check() -> None:
        calls.clear()
        bus.publish(MARKET_TICKER, ticker())
        expected = [s.label for s in subs if s.active and s.kind not in {"other", "other_prefix"}]
        assert calls == expected

    for op, arg in ops:
        if op == "sub":
            subs.append(subscribe(len(subs), arg))
        elif op == "cancel" and subs:
            target = subs[arg % len(subs)]
            # BusSubscription.cancel is idempotent; blinker's disconnect is not a subscription.
            if target.active or target.kind != "blinker":
                target.cancel()
                target.active = False
        elif op == "resub" and subs:
            old = subs[arg % len(subs)]
            live = any(s.active and s.handler is old.handler for s in subs)
            if not live and old.kind in {"exact", "blinker"}:
                # The same function again: it takes a new, last place.
                subs.append(subscribe(old.label, old.kind, old.handler))
        elif op == "publish":
            check()
    check()


@given(
    handlers=st.lists(
        st.tuples(st.sampled_from(("exact", "prefix", "all")), st.booleans()),
        min_size=1,
        max_size=8,
    ),
    n_events=st.integers(1, 4),
)
def test_property_raising_handlers_never_disturb_the_others(
    handlers: list[tuple[str, bool]], n_events: int
) -> None:
    bus = EventBus()
    received: dict[int, list[tuple[str, int]]] = {i: [] for i in range(len(handlers))}
    errors = errors_of(bus)

    for i, (kind, raises) in enumerate(handlers):

        def record(topic_name: str, payload: Payload, i: int = i, raises: bool = raises) -> None:
            ts = payload.exchange_ts if isinstance(payload, TickerEvent) else -1
            received[i].append((topic_name, ts))
            if raises:
                raise RuntimeError(f"handler {i}")

        def exact(payload: TickerEvent, record: Callable[[str, Payload], None] = record) -> None:
            record("market:ticker", payload)

        def wild(
            topic: Topic[Any], payload: Payload, record: Callable[[str, Payload], None] = record
        ) -> None:
            record(topic.name, payload)

        if kind == "exact":
            bus.subscribe(MARKET_TICKER, exact)
        elif kind == "prefix":
            bus.subscribe_prefix("market:*", wild)
        else:
            bus.subscribe_all(wild)

    with capture_logs() as logs:
        for n in range(n_events):
            bus.publish(MARKET_TICKER, ticker(n))  # never raises

    raising = sum(raises for _, raises in handlers)
    raising_all = sum(raises for kind, raises in handlers if kind == "all")
    assert len(errors) == raising * n_events
    # A catch-all handler that raises on error:event is logged and counted, but not republished.
    assert sum(bus.handler_errors.values()) == raising * n_events + len(errors) * raising_all
    assert len(failed_logs(logs)) == sum(bus.handler_errors.values())
    for i, (kind, _) in enumerate(handlers):
        tickers = [ts for name, ts in received[i] if name == "market:ticker"]
        assert tickers == list(range(n_events)), "every event exactly once, in order"
        errors_seen = [name for name, _ in received[i] if name == "error:event"]
        assert len(errors_seen) == (len(errors) if kind == "all" else 0)


def _trees() -> st.SearchStrategy[Any]:
    leaf = st.tuples(st.sampled_from((0, 1)), st.just(()))
    return st.recursive(
        leaf,
        lambda kids: st.tuples(st.sampled_from((0, 1)), st.lists(kids, max_size=4).map(tuple)),
        max_leaves=40,
    )


@dataclass
class _Node:
    ident: int
    on_trade: bool
    children: list[_Node] = field(default_factory=list)


def _number(tree: Any, nodes: dict[int, _Node]) -> _Node:
    """Give every node of ``(kind, children)`` a depth-first id, so FIFO order differs."""
    node = _Node(len(nodes), bool(tree[0]))
    nodes[node.ident] = node
    node.children = [_number(child, nodes) for child in tree[1]]
    return node


def _walk(root: _Node) -> Iterator[_Node]:
    queue = deque([root])
    while queue:
        node = queue.popleft()
        yield node
        queue.extend(node.children)


@given(_trees())
def test_property_cascades_are_delivered_breadth_first(tree: Any) -> None:
    bus = EventBus()
    nodes: dict[int, _Node] = {}
    root = _number(tree, nodes)
    delivered: list[tuple[str, int]] = []

    def publish(node: _Node) -> None:
        if node.on_trade:
            bus.publish(MARKET_TRADE, trade(node.ident))
        else:
            bus.publish(MARKET_TICKER, ticker(node.ident))

    def cascade(payload: TickerEvent | TradeEvent) -> None:
        for child in nodes[payload.exchange_ts].children:
            publish(child)

    def record(topic: Topic[Any], payload: Payload) -> None:
        delivered.append((topic.name, cast(TickerEvent, payload).exchange_ts))

    bus.subscribe_all(record)
    bus.subscribe(MARKET_TICKER, cascade)
    bus.subscribe(MARKET_TRADE, cascade)
    bus.subscribe_prefix("market:*", record)
    publish(root)

    model = [
        ("market:trade" if node.on_trade else "market:ticker", node.ident) for node in _walk(root)
    ]
    # Each event reaches the catch-all, then the cascade, then the prefix tap before the next.
    assert delivered == [entry for entry in model for _ in range(2)]
    assert not bus.handler_errors


async def test_an_interrupted_delivery_keeps_fifo_order_on_the_next_loop_turn() -> None:
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    seen: list[int] = []

    def on_ticker(payload: TickerEvent) -> None:
        seen.append(payload.exchange_ts)
        if payload.exchange_ts == 1:
            bus.publish(MARKET_TICKER, ticker(2))
            raise KeyboardInterrupt  # a BaseException escapes isolation on purpose

    bus.subscribe(MARKET_TICKER, on_ticker)
    with pytest.raises(KeyboardInterrupt):
        bus.publish(MARKET_TICKER, ticker(1))
    bus.publish(MARKET_TICKER, ticker(3))  # queued behind the leftover 2, not before it
    assert seen == [1]
    await asyncio.sleep(0)
    assert seen == [1, 2, 3]
    bus.publish(MARKET_TICKER, ticker(4))
    assert seen == [1, 2, 3, 4]


def test_only_control_may_request_market_connections() -> None:
    bus = EventBus()
    source, rights = rights_for("market")
    market = bus.handle("market", source, rights)
    assert market.may_publish(MARKET_TICKER)
    for topic in (MARKET_CONNECT, MARKET_DISCONNECT, MARKET_SUBSCRIBE):
        assert not market.may_publish(topic)
        assert bus.handle("control", *rights_for("control")).may_publish(topic)
