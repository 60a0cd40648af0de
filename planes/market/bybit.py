"""The Bybit V5 public WebSocket source (``market.source = "bybit"``), made for a bad network.

The connection loop is ``planes.wsconn.ReconnectingWebSocket`` (shared with the private
stream): one supervisor task owns the connection and is the only place that cleans up after it.
What this module adds is Bybit's public protocol:

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
import random
import time
from collections.abc import Iterable, Sequence

import structlog

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
from planes.wsconn import Connection, ReconnectingWebSocket, SessionEndedError

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
        self.metrics = FeedMetrics()
        self.normalizer = BybitNormalizer(self._bus.meta, _wall_ms, self.metrics)
        self.topics: set[str] = set()
        self._default_channels = config.market.bybit.channels
        self._req_ids = itertools.count(1)
        self._pending: dict[str, list[str]] = {}
        self._last_incoming = 0.0
        self._log_throttle = Throttle(5.0)
        self._client = ReconnectingWebSocket(
            self.endpoint,
            self._session,
            name="bybit-supervisor",
            open_timeout_s=self.config.open_timeout_s,
            backoff_initial_s=self.config.backoff_initial_s,
            backoff_max_s=self.config.backoff_max_s,
            rng=rng or random.Random(),  # noqa: S311 - jitter, not crypto
            on_connect_failed=self._connect_failed,
            on_session_end=self._disconnected,
        )

    @property
    def backoff_history(self) -> list[float]:
        """The last reconnect delays drawn, oldest first."""
        return self._client.backoff_history

    # -- the MarketDataSource port ---------------------------------------------------------

    async def subscribe(self, symbols: Sequence[str], channels: Sequence[str]) -> None:
        """Add topics to the set; send them now when connected, else on the next connect."""
        wanted = topics_for(symbols, channels or self._default_channels, self.config)
        new = [t for t in wanted if t not in self.topics]
        self.topics.update(new)
        if not new:
            return
        conn = self._client.connection
        if conn is None:
            log.info("bybit.subscribe_stored", topics=new, reason="not connected")
            return
        try:
            await self._send_subscribe(conn, new)
        except SessionEndedError:
            log.info("bybit.subscribe_stored", topics=new, reason="connection lost")

    async def connect(self) -> None:
        """Start the supervisor (once) and wait until the first connection is open."""
        await self._client.start()

    async def disconnect(self) -> None:
        """Stop the supervisor and wait until every task and the socket are gone."""
        await self._client.stop()

    # -- the connection's life (planes.wsconn runs the loop) -------------------------------

    def _disconnected(self, reason: str, healthy: bool) -> None:
        # A connection that delivered data resets the backoff; one that did not counts as a
        # failure (planes.wsconn keeps the count and waits before the next attempt either way).
        del healthy
        self.metrics.reconnects += 1
        failures = self._client.failures
        log.warning("bybit.disconnected", reason=reason, failures=failures, **self._counters())
        bus = self._bus
        bus.publish(
            MARKET_DISCONNECTED,
            MarketDisconnected(bus.meta(), self.name, reason, will_reconnect=True),
        )

    def _connect_failed(self, reason: str) -> None:
        failures = self._client.failures
        self.metrics.connect_failures += 1
        log.warning("bybit.connect_failed", endpoint=self.endpoint, failures=failures, error=reason)
        bus = self._bus
        bus.publish(
            MARKET_ERROR,
            MarketErrorEvent(bus.meta(), self.name, "connect_attempt_failed", reason),
        )
        if failures % self.config.alert_after_failures == 0:
            message = f"{failures} connection attempts to {self.endpoint} failed in a row"
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

    async def _session(self, conn: Connection) -> None:
        """Run one connection to its end; it is healthy when it delivered data."""
        self._pending.clear()
        for topic in self.topics:
            self.normalizer.reset_topic(topic)
        self._last_incoming = time.monotonic()
        data_before = self.metrics.data_messages
        conn.spawn(self._pinger(conn), "bybit-pinger")
        conn.spawn(self._watchdog(conn), "bybit-watchdog")
        try:
            if self.topics:
                await self._send_subscribe(conn, sorted(self.topics))
            self._opened(conn)
            async for raw in conn.ws:
                self._last_incoming = time.monotonic()
                self._on_frame(conn, raw)
        finally:
            conn.healthy = self.metrics.data_messages > data_before

    def _opened(self, conn: Connection) -> None:
        if conn.opened():  # the gateway publishes market:connected for the first one
            log.info("bybit.connected", endpoint=self.endpoint, topics=len(self.topics))
            return
        log.info("bybit.reconnected", endpoint=self.endpoint, topics=len(self.topics))
        bus = self._bus
        bus.publish(
            MARKET_CONNECTED, MarketConnected(bus.meta(), self.name, self.endpoint, reconnect=True)
        )

    async def _pinger(self, conn: Connection) -> None:
        interval = self.config.ping_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await conn.send({"op": "ping", "req_id": f"ping-{next(self._req_ids)}"})
            except SessionEndedError:
                return
            self.metrics.pings_sent += 1

    async def _watchdog(self, conn: Connection) -> None:
        limit = self.config.watchdog_s
        step = min(1.0, limit / 4)
        while True:
            await asyncio.sleep(step)
            silent = time.monotonic() - self._last_incoming
            if silent > limit:
                self.metrics.watchdog_trips += 1
                log.warning("bybit.watchdog", silent_s=round(silent, 1), limit_s=limit)
                # abort(): a half-open socket would never finish a closing handshake.
                conn.abort(f"watchdog: nothing received for {silent:.1f}s (> {limit:g}s)")
                return

    async def _send_subscribe(self, conn: Connection, topics: Sequence[str]) -> None:
        for start in range(0, len(topics), SUBSCRIBE_BATCH):
            batch = list(topics[start : start + SUBSCRIBE_BATCH])
            req_id = f"sub-{next(self._req_ids)}"
            self._pending[req_id] = batch
            await conn.send({"op": "subscribe", "args": batch, "req_id": req_id})

    # -- frames ----------------------------------------------------------------------------

    def _on_frame(self, conn: Connection, raw: str | bytes) -> None:
        try:
            parsed = self.normalizer.handle(raw)
            if parsed.control is not None:
                self._on_control(conn, parsed.control)
            for topic, payload in parsed.events:
                self._bus.publish(topic, payload)
            if parsed.problem is not None:
                self._log_problem(parsed.problem)
            if parsed.resync is not None:
                self._resync(conn, parsed.resync)
        except Exception as exc:  # one frame must never end the stream
            self.metrics.publish_errors += 1
            log.exception("bybit.frame_failed", error=f"{type(exc).__name__}: {exc}")

    def _log_problem(self, problem: str) -> None:
        throttle = self._log_throttle
        if throttle.ready():
            log.warning("bybit.frame_skipped", problem=problem, suppressed=throttle.suppressed)
            throttle.suppressed = 0

    def _on_control(self, conn: Connection, control: Control) -> None:
        if control.op != "subscribe":
            return
        batch = self._pending.pop(control.req_id, None)
        if batch is None or control.success:
            return
        if len(batch) > 1:
            # One bad topic fails the whole request: ask again one by one to find it.
            conn.spawn(self._retry_each(conn, batch), "bybit-retry-subscribe")
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

    async def _retry_each(self, conn: Connection, topics: Sequence[str]) -> None:
        for topic in topics:
            try:
                await self._send_subscribe(conn, [topic])
            except SessionEndedError:
                return

    def _resync(self, conn: Connection, topic: str) -> None:
        """Rebuild a book after a gap: unsubscribe and subscribe again for a fresh snapshot."""
        self.metrics.resyncs += 1

        async def again() -> None:
            request = {"op": "unsubscribe", "args": [topic], "req_id": f"u-{next(self._req_ids)}"}
            try:
                await conn.send(request)
                await self._send_subscribe(conn, [topic])
            except SessionEndedError:
                return

        conn.spawn(again(), "bybit-resync")

    def _counters(self) -> dict[str, int]:
        m = self.metrics
        return {
            "reconnects": m.reconnects,
            "messages": m.messages,
            "malformed": m.malformed,
            "duplicates": m.duplicates,
            "gaps": m.gaps,
        }


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000
