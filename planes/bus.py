"""The EventBus: typed, in-process publish/subscribe on blinker, with a fast dispatch path.

Contract, stated once:

* **Typing.** ``publish(TOPIC, payload)`` requires ``payload`` to be exactly ``TOPIC.payload``
  (not a subclass) with an ``EventMeta`` as ``meta``; anything else raises ``PayloadTypeError``
  naming the topic and the class, and nothing is delivered. The topic must be registered.
* **Order.** Handlers of an event run in subscription order, whatever kind of subscription
  brought them (exact topic, prefix, catch-all). A handler subscribed while an event is being
  delivered first sees the next event.
* **Run to completion.** An event published from inside a handler is queued and delivered after
  the current event has reached all its handlers (FIFO), so causes are seen before effects and
  the stack does not grow with the length of a chain.
* **Isolation.** A handler that raises does not stop the other handlers or the publisher: the
  bus counts the failure, logs it and publishes ``error:event``. A failure while handling
  ``error:event`` is only logged, so errors cannot loop.
* **Async handlers.** An ``async def`` handler is scheduled as a task on the running loop and
  tracked; its failure is reported like a sync one; ``drain()`` awaits what is in flight.
* **Threads.** ``publish`` must run on the loop's thread; other threads use
  ``publish_threadsafe``, which hops over with ``loop.call_soon_threadsafe``.

Every exact subscription is a receiver of a blinker ``NamedSignal`` (one per topic, see
``signal()``); the bus keeps, per topic, a tuple of handlers in subscription order, rebuilt only
when a receiver connects or disconnects, so ``publish`` never asks blinker to resolve receivers.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar, cast

import blinker
import structlog

from contracts.meta import EventMeta, Payload, Source
from contracts.rights import PublishRights
from contracts.system import ErrorEvent
from contracts.topics import ERROR_EVENT, Topic, TopicRegistry
from planes.busparts import (
    AsyncAdapter,
    BusError,
    PayloadTypeError,
    PublishDeniedError,
    UnknownTopicError,
)

__all__ = [
    "BusError",
    "BusSubscription",
    "EventBus",
    "Handler",
    "PayloadTypeError",
    "PlaneHandle",
    "PublishDeniedError",
    "UnknownTopicError",
    "WildcardHandler",
]

P = TypeVar("P", bound=Payload)
Handler = Callable[[Any], object]
WildcardHandler = Callable[[Topic[Any], Payload], object]

log = structlog.get_logger("planes.bus")


def _describe(handler: Callable[..., object]) -> str:
    target = getattr(handler, "__wrapped__", handler)
    module = getattr(target, "__module__", None) or "?"
    name = getattr(target, "__qualname__", None) or type(target).__qualname__
    return f"{module}.{name}"


class _Wildcard:
    """A prefix or catch-all subscription; remembers its per-topic adapters."""

    __slots__ = ("adapters", "handler", "prefix", "seq")

    def __init__(self, prefix: str, handler: Callable[..., object], seq: int) -> None:
        self.prefix = prefix
        self.handler = handler
        self.seq = seq
        self.adapters: dict[str, Handler] = {}

    def adapter(self, topic: Topic[Any]) -> Handler:
        fn = self.adapters.get(topic.name)
        if fn is None:
            # A partial, not a closure: it calls handler(topic, payload) without a Python frame
            # of its own (the journal's tap runs for every event).
            deliver = functools.partial(self.handler, topic)
            functools.update_wrapper(deliver, self.handler)
            fn = self.adapters[topic.name] = deliver
        return fn


class _Route:
    """Where events of one payload class go: their topic and its handlers."""

    __slots__ = ("handlers", "topic")

    def __init__(self, topic: Topic[Any]) -> None:
        self.topic = topic
        self.handlers: tuple[Handler, ...] = ()


class BusSubscription:
    """Returned by the subscribe methods; ``cancel()`` unsubscribes and is idempotent."""

    __slots__ = ("_cancel", "description")

    def __init__(self, cancel: Callable[[], None], description: str) -> None:
        self._cancel: Callable[[], None] | None = cancel
        self.description = description

    def cancel(self) -> None:
        """Stop delivering to this subscription's handler."""
        if self._cancel is not None:
            cancel, self._cancel = self._cancel, None
            cancel()

    def __repr__(self) -> str:
        state = "active" if self._cancel is not None else "cancelled"
        return f"<BusSubscription {self.description} {state}>"


class EventBus:
    """The one in-process bus; see the module docstring for the delivery contract."""

    def __init__(
        self,
        topics: TopicRegistry | None = None,
        *,
        now_ms: Callable[[], int] | None = None,
    ) -> None:
        self.topics = topics if topics is not None else TopicRegistry()
        self._now_ms = now_ms or _wall_ms
        self._namespace = blinker.Namespace()
        self._signals: dict[str, blinker.NamedSignal] = {}
        # Keyed by payload class (the registry binds each to one topic): publish finds the
        # handlers and checks the topic with one lookup and one identity test.
        self._routes: dict[type[Payload], _Route] = {}
        self._counts: dict[str, int] = {}
        """Events per topic name (see ``published``)."""
        self._seq: dict[tuple[str, object], int] = {}
        self._next_seq = 0
        self._wildcards: list[_Wildcard] = []
        self._queue: deque[tuple[_Route, Payload]] = deque()
        self._dispatching = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._async_adapters: weakref.WeakSet[AsyncAdapter] = weakref.WeakSet()
        self.handler_errors: Counter[str] = Counter()
        """Failures per handler (``module.qualname``), for metrics."""
        for name in self.topics:
            self._add_signal(self.topics[name])

    # -- topics --------------------------------------------------------------------------

    def register_topic(self, topic: Topic[Any], owner: str) -> None:
        """Add a plugin topic; a name clash raises ``TopicClashError`` naming both owners."""
        self.topics.add(topic, owner)
        self._add_signal(topic)

    def _add_signal(self, topic: Topic[Any]) -> None:
        signal = self._namespace.signal(topic.name, doc=topic.description or None)
        self._signals[topic.name] = signal
        signal.receiver_connected.connect(self._on_receiver_connected, weak=False)
        signal.receiver_disconnected.connect(self._on_receiver_disconnected, weak=False)
        self._rebuild(topic.name)

    def signal(self, topic: Topic[Any]) -> blinker.NamedSignal:
        """The blinker signal behind ``topic``.

        Receivers connected to it directly are called with the payload as blinker's ``sender``
        and take part in subscription order.
        """
        self._require(topic)
        return self._signals[topic.name]

    def _require(self, topic: Topic[Any]) -> None:
        known = self.topics.get(topic.name)
        if known is None:
            msg = f"topic {topic.name!r} is not registered (plugins add topics through a hook)"
            raise UnknownTopicError(msg)
        if known.payload is not topic.payload:
            msg = (
                f"topic {topic.name!r} is registered with payload {known.payload.__qualname__}, "
                f"not {topic.payload.__qualname__}"
            )
            raise PayloadTypeError(msg)

    # -- subscribing ---------------------------------------------------------------------

    def subscribe(self, topic: Topic[P], handler: Callable[[P], object]) -> BusSubscription:
        """Call ``handler(payload)`` for every event on ``topic``, in subscription order.

        Subscribing the same handler twice to one topic keeps the first subscription.
        """
        self._require(topic)
        receiver = self._adapt(handler, topic.name)
        signal = self._signals[topic.name]
        if receiver is not handler:  # async: the adapter is new, find the one already connected
            receiver = self._connected_adapter(signal, handler) or receiver
        signal.connect(receiver, weak=False)

        def cancel() -> None:
            signal.disconnect(receiver)

        return BusSubscription(cancel, f"{topic.name} -> {_describe(handler)}")

    def _connected_adapter(
        self, signal: blinker.NamedSignal, handler: Callable[..., object]
    ) -> Handler | None:
        for held in signal.receivers.values():
            fn = held() if isinstance(held, weakref.ref) else held
            if fn in self._async_adapters and _same(getattr(fn, "__wrapped__", None), handler):
                return cast(Handler, fn)
        return None

    def subscribe_prefix(self, prefix: str, handler: WildcardHandler) -> BusSubscription:
        """Call ``handler(topic, payload)`` for every topic whose name starts with ``prefix``.

        ``"market:*"`` and ``"market:"`` mean the same; topics registered later are included.
        """
        prefix = prefix.removesuffix("*")
        if not prefix:
            msg = "an empty prefix matches everything: use subscribe_all()"
            raise ValueError(msg)
        return self._subscribe_wildcard(prefix, handler)

    def subscribe_all(self, handler: WildcardHandler) -> BusSubscription:
        """Call ``handler(topic, payload)`` for every event on every topic (the journal's tap)."""
        return self._subscribe_wildcard("", handler)

    def _subscribe_wildcard(self, prefix: str, handler: WildcardHandler) -> BusSubscription:
        sub = _Wildcard(prefix, self._adapt(handler, prefix + "*"), self._take_seq())
        self._wildcards.append(sub)
        self._rebuild_all()

        def cancel() -> None:
            self._wildcards.remove(sub)
            self._rebuild_all()

        return BusSubscription(cancel, f"{prefix or ''}* -> {_describe(handler)}")

    def _take_seq(self) -> int:
        self._next_seq += 1
        return self._next_seq

    def _adapt(self, handler: Callable[..., object], where: str) -> Handler:
        # An object with an ``async def __call__`` (its own or inherited); B004 is about
        # callable() checks, and this looks the method up on purpose.
        call = getattr(type(handler), "__call__", None)  # noqa: B004
        if not inspect.iscoroutinefunction(handler) and not inspect.iscoroutinefunction(call):
            return handler
        return self._async_adapter(handler, where)

    def _async_adapter(self, handler: Callable[..., Any], where: str) -> Handler:
        adapter = AsyncAdapter(self, handler, where, _describe(handler))
        self._async_adapters.add(adapter)
        return adapter

    def _on_receiver_connected(self, signal: blinker.NamedSignal, **kw: Any) -> None:
        receiver = kw["receiver"]
        for receiver_id, held in signal.receivers.items():
            fn = held() if isinstance(held, weakref.ref) else held
            key = (signal.name, receiver_id)
            if fn == receiver and key not in self._seq:
                self._seq[key] = self._take_seq()
        self._rebuild(signal.name)

    def _on_receiver_disconnected(self, signal: blinker.NamedSignal, **_: Any) -> None:
        live = signal.receivers
        for key in [k for k in self._seq if k[0] == signal.name and k[1] not in live]:
            del self._seq[key]
        self._rebuild(signal.name)

    def _rebuild_all(self) -> None:
        for name in self._signals:
            self._rebuild(name)

    def _rebuild(self, name: str) -> None:
        topic = self.topics[name]
        entries: list[tuple[int, Handler]] = []
        for receiver_id, receiver in self._signals[name].receivers.items():
            fn = receiver() if isinstance(receiver, weakref.ref) else receiver
            if fn is not None:
                entries.append((self._seq.get((name, receiver_id), 0), fn))
        entries.extend(
            (sub.seq, sub.adapter(topic)) for sub in self._wildcards if name.startswith(sub.prefix)
        )
        entries.sort(key=lambda entry: entry[0])
        route = self._routes.get(topic.payload)
        if route is None:
            route = self._routes[topic.payload] = _Route(topic)
        route.handlers = tuple(fn for _, fn in entries)

    def handlers(self, topic: Topic[Any]) -> tuple[Handler, ...]:
        """The handlers ``topic`` is delivered to, in order (adapters for wildcard ones)."""
        self._require(topic)
        return self._routes[topic.payload].handlers

    def published(self) -> dict[str, int]:
        """How many events each topic has carried, by topic name; topics with none left out.

        Counted where the runtime's events come from: every plane handle counts what it
        publishes once the bus has accepted it, and the bus counts the ``error:event`` it
        publishes itself. ``EventBus.publish`` called directly is not counted, so the bare
        dispatch path pays nothing for it (``benchmarks/bench_bus.py`` measures that path).
        A component that wants counts reads them here instead of subscribing to everything.
        """
        return dict(self._counts)

    # -- publishing ----------------------------------------------------------------------

    def publish(self, topic: Topic[P], payload: P) -> None:
        """Deliver ``payload`` to the handlers of ``topic`` (see the module docstring)."""
        try:
            route = self._routes[payload.__class__]
        except KeyError:
            self._reject(topic, payload)
        if (route.topic is not topic and route.topic != topic) or (
            payload.meta.__class__ is not EventMeta
        ):
            self._reject(topic, payload)
        if self._dispatching:
            self._queue.append((route, payload))
            return
        self._dispatching = True
        try:
            for handler in route.handlers:
                try:
                    handler(payload)
                except Exception as exc:  # noqa: BLE001 - isolation is the contract
                    self._handler_failed(handler, topic, exc)
            if self._queue:
                self._drain_queue()
        except BaseException:
            self._interrupted()
            raise
        self._dispatching = False

    def _interrupted(self) -> None:
        """A BaseException (KeyboardInterrupt, cancellation) escaped a handler mid-delivery.

        Events still queued are not dropped: with a loop bound, the bus stays "dispatching" so
        later publishes queue behind them, and the rest of the queue is delivered on the next
        loop turn (FIFO kept). Without a loop they wait for the next ``publish`` to drain them.
        """
        loop = self._loop
        if self._queue and loop is not None and not loop.is_closed():
            loop.call_soon(self._resume)
        else:
            self._dispatching = False

    def _resume(self) -> None:
        try:
            self._drain_queue()
        except BaseException:
            self._interrupted()
            raise
        self._dispatching = False

    def _drain_queue(self) -> None:
        queue = self._queue
        while queue:
            route, payload = queue.popleft()
            for handler in route.handlers:  # read now: a handler subscribed since sees it
                try:
                    handler(payload)
                except Exception as exc:  # noqa: BLE001 - isolation is the contract
                    self._handler_failed(handler, route.topic, exc)

    def _reject(self, topic: Topic[Any], payload: object) -> NoReturn:
        cls = type(payload).__qualname__
        if not isinstance(cast(object, topic), Topic):
            msg = f"publish() needs a Topic, got {topic!r}"
            raise PayloadTypeError(msg)
        self._require(topic)
        if topic.payload not in self._routes:
            raise UnknownTopicError(topic.name)
        if not isinstance(payload, topic.payload) or type(payload) is not topic.payload:
            msg = (
                f"topic {topic.name!r} carries {topic.payload.__qualname__}, "
                f"got {cls}: nothing was delivered"
            )
        else:
            meta = getattr(payload, "meta", None)
            msg = (
                f"topic {topic.name!r}: payload {cls} has meta {meta!r}, "
                "not an EventMeta: nothing was delivered"
            )
        raise PayloadTypeError(msg)

    def _handler_failed(self, handler: Handler, topic: Topic[Any], exc: Exception) -> None:
        self._report(_describe(handler), topic.name, exc)

    def _report(self, origin: str, topic_name: str, exc: BaseException) -> None:
        self.handler_errors[origin] += 1
        log.error(
            "bus.handler_failed",
            origin=origin,
            topic=topic_name,
            error_type=type(exc).__name__,
            error=str(exc),
            exc_info=exc,
        )
        if topic_name == ERROR_EVENT.name:
            return
        event = ErrorEvent(
            meta=EventMeta(Source.SYSTEM, self._now_ms()),
            origin=origin,
            topic=topic_name,
            error_type=type(exc).__name__,
            message=str(exc),
        )
        self.publish(ERROR_EVENT, event)
        self._count(ERROR_EVENT.name)

    def report_error(self, origin: str, topic_name: str, exc: BaseException) -> None:
        """Count, log and publish ``error:event`` for a failure found outside a handler."""
        self._report(origin, topic_name, exc)

    # -- threads and the loop ------------------------------------------------------------

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run async handlers and ``publish_threadsafe`` on ``loop`` (the runtime's loop).

        Call it from the loop's own thread: that thread becomes the one ``publish`` runs on.
        """
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def publish_threadsafe(self, topic: Topic[P], payload: P) -> None:
        """Publish from any thread: type-check here, deliver on the bound loop's thread."""
        if payload.__class__ is not topic.payload or payload.meta.__class__ is not EventMeta:
            self._reject(topic, payload)
        self._require(topic)
        loop = self._loop
        if loop is None:
            msg = "publish_threadsafe() needs a loop: call bind_loop() first"
            raise RuntimeError(msg)
        if threading.get_ident() == self._loop_thread:
            self._publish_counted(topic, payload)
        else:
            loop.call_soon_threadsafe(self._publish_counted, topic, payload)

    def _publish_counted(self, topic: Topic[Any], payload: Payload) -> None:
        """``publish`` and count it (what arrives from another thread; see ``published``)."""
        self.publish(topic, payload)
        self._count(topic.name)

    def _count(self, name: str) -> None:
        """Count one event of topic ``name`` that the bus itself accepted (see ``published``).

        ``PlaneHandle.publish`` does the same in line: it runs for every event.
        """
        self._counts[name] = self._counts.get(name, 0) + 1

    @property
    def bound_loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop ``bind_loop`` bound, if any."""
        return self._loop

    @property
    def handler_tasks(self) -> set[asyncio.Task[object]]:
        """The async handler tasks in flight (the set itself: adapters add and discard)."""
        return self._tasks

    @property
    def pending_tasks(self) -> int:
        """Async handler tasks still running."""
        return len(self._tasks)

    async def drain(self, grace_s: float | None = None) -> None:
        """Wait for in-flight async handler tasks and the tasks they cause.

        After ``grace_s`` seconds the rest are cancelled, each reported as ``error:event``.
        """
        loop = asyncio.get_running_loop()
        deadline = None if grace_s is None else loop.time() + grace_s
        while self._tasks:
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            _, pending = await asyncio.wait(set(self._tasks), timeout=remaining)
            if pending and deadline is not None and loop.time() >= deadline:
                for task in pending:
                    task.cancel()
                    exc = TimeoutError("cancelled at shutdown")
                    self._report(task.get_name(), "bus:drain", exc)
                await asyncio.gather(*pending, return_exceptions=True)
                self._tasks.difference_update(pending)
                return

    # -- plane handles -------------------------------------------------------------------

    def handle(self, plane: str, source: Source, rights: PublishRights) -> PlaneHandle:
        """A handle bound to ``plane``: it stamps ``source`` and enforces ``rights``."""
        return PlaneHandle(self, plane, source, rights)


def _same(a: object, b: object) -> bool:
    """Whether blinker would see ``a`` and ``b`` as one receiver (equal bound methods too)."""
    if inspect.ismethod(a) and inspect.ismethod(b):
        return a.__self__ is b.__self__ and a.__func__ is b.__func__
    return a is b


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class PlaneHandle:
    """The bus as one plane sees it; see ``contracts.ports.BusHandle``."""

    __slots__ = (
        "_allowed",
        "_bus",
        "_counts",
        "_deliver",
        "_now_ms",
        "_rights",
        "_subscriptions",
        "plane",
        "source",
    )

    def __init__(self, bus: EventBus, plane: str, source: Source, rights: PublishRights) -> None:
        self._bus = bus
        self._deliver = bus.publish
        self._counts = bus._counts
        self._now_ms = bus._now_ms
        self.plane = plane
        self.source = source
        self._rights = rights
        self._allowed: dict[str, bool] = {}
        self._subscriptions: list[BusSubscription] = []

    def meta(self, correlation_id: str | None = None) -> EventMeta:
        """A fresh ``EventMeta`` with this plane's source and the bus clock's time."""
        return EventMeta(self.source, self._now_ms(), correlation_id)

    def may_publish(self, topic: Topic[Any]) -> bool:
        """True when this plane may publish ``topic``."""
        allowed = self._allowed.get(topic.name)
        if allowed is None:
            allowed = self._allowed[topic.name] = self._rights.allows(topic.name)
        return allowed

    def published(self) -> dict[str, int]:
        """How many events each topic has carried, by topic name (see ``EventBus.published``)."""
        return self._bus.published()

    def publish(self, topic: Topic[P], payload: P) -> None:
        """Publish through the bus after checking this plane's rights and the payload's source."""
        # The usual case in two look-ups; anything unusual gets the full check and its error.
        try:
            usual = self._allowed[topic.name] and payload.meta.source is self.source
        except (KeyError, AttributeError):  # a topic not asked about yet, a payload without meta
            usual = False
        if not usual:
            self._check(topic, payload)
        self._deliver(topic, payload)
        counts, name = self._counts, topic.name  # counted once the bus has accepted it
        counts[name] = counts.get(name, 0) + 1

    def publish_threadsafe(self, topic: Topic[P], payload: P) -> None:
        """``publish`` from a thread other than the loop's."""
        self._check(topic, payload)
        self._bus.publish_threadsafe(topic, payload)

    def _check(self, topic: Topic[Any], payload: Payload) -> None:
        if not self.may_publish(topic):
            exc = PublishDeniedError(f"plane {self.plane!r} may not publish {topic.name!r}")
        elif getattr(payload, "meta", None) is not None and payload.meta.source is not self.source:
            claimed = getattr(payload.meta.source, "value", payload.meta.source)
            exc = PublishDeniedError(
                f"plane {self.plane!r} publishes as {self.source.value!r}, but the payload on "
                f"{topic.name!r} claims source {claimed!r}"
            )
        else:
            return
        self._bus.report_error(f"plane:{self.plane}", topic.name, exc)
        raise exc

    def subscribe(self, topic: Topic[P], handler: Callable[[P], object]) -> BusSubscription:
        """Subscribe ``handler`` to ``topic``; ``close()`` cancels it."""
        sub = self._bus.subscribe(topic, handler)
        self._subscriptions.append(sub)
        return sub

    def subscribe_prefix(self, prefix: str, handler: WildcardHandler) -> BusSubscription:
        """Subscribe ``handler`` to every topic starting with ``prefix``."""
        sub = self._bus.subscribe_prefix(prefix, handler)
        self._subscriptions.append(sub)
        return sub

    def subscribe_all(self, handler: WildcardHandler) -> BusSubscription:
        """Subscribe ``handler`` to every topic."""
        sub = self._bus.subscribe_all(handler)
        self._subscriptions.append(sub)
        return sub

    def close(self) -> None:
        """Cancel every subscription made through this handle."""
        while self._subscriptions:
            self._subscriptions.pop().cancel()
