"""The Bybit V5 public WebSocket source (``market.source = "bybit"``), made for a bad network.

One supervisor task owns the connection and is the only place that cleans up after it:

* ``connect()`` starts the supervisor and returns once the first connection is open and every
  stored topic was re-sent; it is idempotent. ``disconnect()`` stops the supervisor and waits
  until the socket, the pinger and the watchdog are gone; it is idempotent too.
* Topics live in a set. ``subscribe()`` while disconnected stores them (and logs it); on every
  (re)connect all of them are sent again, at most 10 per request (Bybit's spot limit, applied to
  linear too). A request answered ``success: false`` is retried topic by topic, so one bad topic
  becomes a ``market:error`` naming it (and is dropped) while the others stream.
* ``{"op": "ping"}`` goes out every ``ping_interval_s``. A watchdog watches *incoming* traffic of
  any kind (data, acks, pongs) and aborts the connection when nothing arrived for
  ``watchdog_s``: that is how a half-open socket is caught.
* Reconnection uses exponential backoff with full jitter, ``uniform(0, min(backoff_max_s,
  backoff_initial_s * 2 ** (n - 1)))`` for the n-th failure in a row; a connection that delivered
  data resets n. After every ``alert_after_failures`` failures in a row an alert and a
  ``market:error`` go out; it never stops retrying by itself.
* Frames are read by ``BybitNormalizer`` (merged tickers, local books, trades, klines;
  duplicates, gaps and malformed frames counted and skipped). An exception raised by a bus
  subscriber is isolated by the bus; anything else going wrong with one frame is counted and
  logged (throttled), never allowed to end the read loop.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from contracts.enums import Severity
from contracts.market import MarketConnected, MarketDisconnected, MarketErrorEvent
from contracts.ports import BusHandle, Clock, ComponentContext
from contracts.system import Alert
from contracts.topics import (
    MARKET_CONNECTED,
    MARKET_DISCONNECTED,
    MARKET_ERROR,
    OBSERVABILITY_ALERT,
)
from planes.config import BybitSection, Config
from planes.market.bybit_parse import BybitNormalizer, Control, FeedMetrics
from planes.tasks import cancel_and_wait

log = structlog.get_logger("planes.market.bybit")

SUBSCRIBE_BATCH = 10
CHANNEL_PREFIX = {"tickers": "tickers", "trades": "publicTrade", "kline": "kline"}


def topics_for(symbols: Iterable[str], channels: Iterable[str], config: BybitSection) -> list[str]:
    """Bybit topic names for ``symbols`` x ``channels`` (``tickers``, ``trades``, ...)."""
    names = []
    for channel in channels:
        for symbol in symbols:
            if channel == "tickers":
                names.append(f"tickers.{symbol}")
            elif channel == "trades":
                names.append(f"publicTrade.{symbol}")
            elif channel == "orderbook":
                names.append(f"orderbook.{config.orderbook_depth}.{symbol}")
            elif channel == "kline":
                names.append(f"kline.{config.kline_interval}.{symbol}")
            else:
                msg = f"unknown channel {channel!r} (tickers, trades, orderbook, kline)"
                raise ValueError(msg)
    return names


class Throttle:
    """Let one log line through per ``every_s``; count what it held back."""

    __slots__ = ("_every", "_next", "suppressed")

    def __init__(self, every_s: float) -> None:
        self._every = every_s
        self._next = 0.0
        self.suppressed = 0

    def ready(self) -> bool:
        """True when a line may be logged now (then ``suppressed`` is reset by the caller)."""
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self._every
            return True
        self.suppressed += 1
        return False


class _SessionEndedError(Exception):
    """The current connection is over (closed, aborted by the watchdog, failed to send)."""


class BybitPublicSource:
    """See the module docstring."""

    name = "bybit"

    def __init__(
        self,
        ctx: ComponentContext,
        *,
        rng: random.Random | None = None,
    ) -> None:
        config = ctx.config
        if not isinstance(config, Config):
            msg = "the Bybit source needs planes.config.Config"
            raise TypeError(msg)
        self.config = config.market.bybit
        self.endpoint = self.config.ws_url
        self._bus: BusHandle = ctx.bus
        self._clock: Clock = ctx.clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
        self.metrics = FeedMetrics()
        self.normalizer = BybitNormalizer(self._bus.meta, _wall_ms, self.metrics)
        self.topics: set[str] = set()
        self.backoff_history: list[float] = []
        self._default_channels = config.market.bybit.channels
        self._req_ids = itertools.count(1)
        self._pending: dict[str, list[str]] = {}
        self._ws: ClientConnection | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._first_open: asyncio.Future[None] | None = None
        self._last_incoming = 0.0
        self._failures = 0
        self._sessions = 0
        self._log_throttle = Throttle(5.0)
        self._session_tasks: set[asyncio.Task[None]] = set()
        self._end_reason: str | None = None

    # -- the MarketDataSource port ---------------------------------------------------------

    async def subscribe(self, symbols: Sequence[str], channels: Sequence[str]) -> None:
        """Add topics to the set; send them now when connected, else on the next connect."""
        wanted = topics_for(symbols, channels or self._default_channels, self.config)
        new = [t for t in wanted if t not in self.topics]
        self.topics.update(new)
        if not new:
            return
        ws = self._ws
        if ws is None:
            log.info("bybit.subscribe_stored", topics=new, reason="not connected")
            return
        try:
            await self._send_subscribe(ws, new)
        except _SessionEndedError:
            log.info("bybit.subscribe_stored", topics=new, reason="connection lost")

    async def connect(self) -> None:
        """Start the supervisor (once) and wait until the first connection is open."""
        loop = asyncio.get_running_loop()
        if self._supervisor is None or self._supervisor.done():
            self._first_open = loop.create_future()
            self._supervisor = loop.create_task(self._supervise(), name="bybit-supervisor")
        assert self._first_open is not None  # noqa: S101 - set with the supervisor
        await asyncio.shield(self._first_open)

    async def disconnect(self) -> None:
        """Stop the supervisor and wait until every task and the socket are gone."""
        task, self._supervisor = self._supervisor, None
        if task is None:
            return
        await cancel_and_wait(task)
        first = self._first_open
        if first is not None and not first.done():
            first.cancel()

    # -- the connection loop ---------------------------------------------------------------

    async def _supervise(self) -> None:
        while True:
            try:
                ws = await connect(
                    self.endpoint,
                    open_timeout=self.config.open_timeout_s,
                    ping_interval=None,  # Bybit wants its own {"op":"ping"}; see _pinger
                    close_timeout=1.0,
                    max_size=2**22,
                )
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                await self._connect_failed(exc)
                continue
            reason, healthy = await self._session(ws)
            self.metrics.reconnects += 1
            # A connection that delivered data resets the backoff; one that did not counts as
            # a failure. Either way the next attempt waits (at least up to backoff_initial_s),
            # so a server that accepts and drops at once cannot make us spin.
            self._failures = 0 if healthy else self._failures + 1
            log.warning(
                "bybit.disconnected", reason=reason, failures=self._failures, **self._counters()
            )
            bus = self._bus
            bus.publish(
                MARKET_DISCONNECTED,
                MarketDisconnected(bus.meta(), self.name, reason, will_reconnect=True),
            )
            await self._backoff()

    async def _connect_failed(self, exc: BaseException) -> None:
        self._failures += 1
        self.metrics.connect_failures += 1
        reason = f"{type(exc).__name__}: {exc}"
        log.warning(
            "bybit.connect_failed", endpoint=self.endpoint, failures=self._failures, error=reason
        )
        bus = self._bus
        bus.publish(
            MARKET_ERROR,
            MarketErrorEvent(bus.meta(), self.name, "connect_attempt_failed", reason),
        )
        if self._failures % self.config.alert_after_failures == 0:
            message = f"{self._failures} connection attempts to {self.endpoint} failed in a row"
            bus.publish(
                OBSERVABILITY_ALERT,
                Alert(
                    bus.meta(),
                    Severity.CRITICAL,
                    "market_unreachable",
                    message,
                    {"source": self.name, "last_error": reason},
                ),
            )
            bus.publish(
                MARKET_ERROR,
                MarketErrorEvent(
                    bus.meta(), self.name, "unreachable", f"{message}; still retrying"
                ),
            )
        await self._backoff()

    async def _backoff(self) -> None:
        ceiling = min(
            self.config.backoff_max_s,
            self.config.backoff_initial_s * 2 ** max(0, self._failures - 1),
        )
        delay = self._rng.uniform(0, ceiling)
        self.backoff_history.append(delay)
        del self.backoff_history[:-1000]
        await asyncio.sleep(delay)

    async def _session(self, ws: ClientConnection) -> tuple[str, bool]:
        """Run one connection to its end; the only owner of its cleanup. Returns (why, healthy)."""
        self._sessions += 1
        self._ws = ws
        self._pending.clear()
        for topic in self.topics:
            self.normalizer.reset_topic(topic)
        self._last_incoming = time.monotonic()
        self._end_reason = None
        data_before = self.metrics.data_messages
        self._spawn(self._pinger(ws), "bybit-pinger")
        self._spawn(self._watchdog(ws), "bybit-watchdog")
        reason = "closed"
        try:
            if self.topics:
                await self._send_subscribe(ws, sorted(self.topics))
            self._opened()
            async for raw in ws:
                self._last_incoming = time.monotonic()
                self._on_frame(ws, raw)
        except _SessionEndedError as exc:
            reason = str(exc)
        except ConnectionClosed as exc:
            reason = f"connection closed: {exc}"
        else:
            reason = "connection closed by the server"
        finally:
            self._ws = None
            helpers = list(self._session_tasks)
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await _quietly_close(ws)
        return self._end_reason or reason, self.metrics.data_messages > data_before

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coro`` for the current connection only: it is cancelled when that ends."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._session_tasks.add(task)
        task.add_done_callback(self._session_tasks.discard)

    def _opened(self) -> None:
        bus = self._bus
        first = self._first_open
        if first is not None and not first.done():
            first.set_result(None)  # the gateway publishes market:connected for the first one
            log.info("bybit.connected", endpoint=self.endpoint, topics=len(self.topics))
            return
        log.info("bybit.reconnected", endpoint=self.endpoint, topics=len(self.topics))
        bus.publish(
            MARKET_CONNECTED, MarketConnected(bus.meta(), self.name, self.endpoint, reconnect=True)
        )

    async def _pinger(self, ws: ClientConnection) -> None:
        interval = self.config.ping_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await ws.send(json.dumps({"op": "ping", "req_id": f"ping-{next(self._req_ids)}"}))
            except ConnectionClosed:
                return
            self.metrics.pings_sent += 1

    async def _watchdog(self, ws: ClientConnection) -> None:
        limit = self.config.watchdog_s
        step = min(1.0, limit / 4)
        while True:
            await asyncio.sleep(step)
            silent = time.monotonic() - self._last_incoming
            if silent > limit:
                self.metrics.watchdog_trips += 1
                self._end_reason = f"watchdog: nothing received for {silent:.1f}s (> {limit:g}s)"
                log.warning("bybit.watchdog", silent_s=round(silent, 1), limit_s=limit)
                # abort(): a half-open socket would never finish a closing handshake.
                if ws.transport is not None:
                    ws.transport.abort()
                return

    async def _send(self, ws: ClientConnection, message: dict[str, Any]) -> None:
        try:
            await ws.send(json.dumps(message))
        except ConnectionClosed as exc:
            raise _SessionEndedError(f"connection closed while sending: {exc}") from None

    async def _send_subscribe(self, ws: ClientConnection, topics: Sequence[str]) -> None:
        for start in range(0, len(topics), SUBSCRIBE_BATCH):
            batch = list(topics[start : start + SUBSCRIBE_BATCH])
            req_id = f"sub-{next(self._req_ids)}"
            self._pending[req_id] = batch
            await self._send(ws, {"op": "subscribe", "args": batch, "req_id": req_id})

    # -- frames ----------------------------------------------------------------------------

    def _on_frame(self, ws: ClientConnection, raw: str | bytes) -> None:
        try:
            parsed = self.normalizer.handle(raw)
            if parsed.control is not None:
                self._on_control(ws, parsed.control)
            for topic, payload in parsed.events:
                self._bus.publish(topic, payload)
            if parsed.problem is not None:
                self._log_problem(parsed.problem)
            if parsed.resync is not None:
                self._resync(ws, parsed.resync)
        except Exception as exc:  # one frame must never end the stream
            self.metrics.publish_errors += 1
            log.exception("bybit.frame_failed", error=f"{type(exc).__name__}: {exc}")

    def _log_problem(self, problem: str) -> None:
        throttle = self._log_throttle
        if throttle.ready():
            log.warning("bybit.frame_skipped", problem=problem, suppressed=throttle.suppressed)
            throttle.suppressed = 0

    def _on_control(self, ws: ClientConnection, control: Control) -> None:
        if control.op != "subscribe":
            return
        batch = self._pending.pop(control.req_id, None)
        if batch is None or control.success:
            return
        if len(batch) > 1:
            # One bad topic fails the whole request: ask again one by one to find it.
            self._spawn(self._retry_each(ws, batch), "bybit-retry-subscribe")
            return
        topic = batch[0]
        self.topics.discard(topic)
        self.metrics.subscribe_rejected += 1
        log.warning("bybit.subscribe_rejected", topic=topic, ret_msg=control.ret_msg)
        bus = self._bus
        bus.publish(
            MARKET_ERROR,
            MarketErrorEvent(
                bus.meta(), self.name, "subscribe_rejected", control.ret_msg or "rejected", topic
            ),
        )

    async def _retry_each(self, ws: ClientConnection, topics: Sequence[str]) -> None:
        for topic in topics:
            if self._ws is not ws:
                return
            try:
                await self._send_subscribe(ws, [topic])
            except _SessionEndedError:
                return

    def _resync(self, ws: ClientConnection, topic: str) -> None:
        """Rebuild a book after a gap: unsubscribe and subscribe again for a fresh snapshot."""
        self.metrics.resyncs += 1

        async def again() -> None:
            request = {"op": "unsubscribe", "args": [topic], "req_id": f"u-{next(self._req_ids)}"}
            try:
                await self._send(ws, request)
                await self._send_subscribe(ws, [topic])
            except _SessionEndedError:
                return

        self._spawn(again(), "bybit-resync")

    def _counters(self) -> dict[str, int]:
        m = self.metrics
        return {
            "reconnects": m.reconnects,
            "messages": m.messages,
            "malformed": m.malformed,
            "duplicates": m.duplicates,
            "gaps": m.gaps,
        }


async def _quietly_close(ws: ClientConnection) -> None:
    try:
        await asyncio.wait_for(ws.close(), 1.0)
    except (TimeoutError, ConnectionClosed, OSError):
        return


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000
