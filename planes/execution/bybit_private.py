"""The Bybit V5 private WebSocket stream: live order updates and fills for ``BybitExecution``.

``BybitPrivateStream`` keeps one authenticated connection to ``/v5/private`` and feeds what it
reads to a ``PrivateSink`` (the venue). The connection loop is
``planes.wsconn.ReconnectingWebSocket`` (shared with the market plane's public source): one
supervisor task owns the connection and is the only place that cleans up after it. What this
module adds is Bybit's private protocol:

* **Auth.** Every connection starts with ``{"op": "auth", "args": [key, expires, signature]}``,
  ``signature = hex(HMAC-SHA256(secret, "GET/realtime" + expires))`` and ``expires`` a few
  seconds ahead (unix ms). A reply with ``success: false`` is a refused key: on the first
  connection ``start()`` raises ``BybitAuthError`` with Bybit's ``ret_msg`` and the stream stops;
  later (a key revoked while running) it is alerted and retried like any failed connection.
* **Subscribe** to ``order``, ``execution``, ``position`` and ``wallet`` (all categories).
  ``order`` and ``execution`` records feed the sink's order book-keeping; ``position`` and
  ``wallet`` records are the venue's view of the account, which the sink compares with the
  portfolio's (it alerts a drift, it never books one). Once Bybit confirms, the sink's
  ``resync()`` runs (HTTP): what happened while no stream was listening (before the first
  connection, during a drop) is fetched from the REST API, retried with backoff until it works
  or the connection ends.
* **Heartbeat.** ``{"op": "ping"}`` every ``ping_interval_s``; a ping not answered by a pong
  within ``pong_timeout_s`` means a dead connection (a half-open socket): it is aborted.
* **Reconnect** after any drop with exponential backoff and full jitter, ``uniform(0,
  min(reconnect_max_s, reconnect_initial_s * 2 ** (n - 1)))`` for the n-th failure in a row; a
  connection that got as far as a confirmed subscription resets n. Every
  ``ALERT_AFTER_FAILURES`` failures in a row the sink gets an alert; it never gives up by itself.
* **Wire input** is checked before the sink sees it: a frame that is not JSON, has an unknown
  topic or no ``data`` list, and a record with missing fields or bad numbers (a position without
  a symbol, a negative size, a size with no side, an unknown ``positionIdx``; a wallet coin
  without a name or a ``walletBalance``; an order record of a filled or cancelled order without
  ``cumExecQty``, or one filled with no positive ``cumExecValue`` or ``avgPrice``) is logged with
  what was wrong
  (``bybit_private.skipped``), counted and skipped. Records are handled one by one, so
  a bad one never takes a good one of the same frame with it, and nothing that goes wrong with
  one frame ends the stream.

The key and secret are kept for re-authentication only: the secret inside a signing closure,
neither in a log line nor in ``repr``.
"""

from __future__ import annotations

import asyncio
import decimal
import hashlib
import hmac
import itertools
import json
import random
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Final, Protocol

import attrs
import structlog

from contracts.enums import Severity
from planes.wsconn import (
    Connection,
    ReconnectingWebSocket,
    SessionEndedError,
    StopReconnectingError,
)

log = structlog.get_logger("planes.execution.bybit_private")

TOPICS: Final = ("order", "execution", "position", "wallet")
AUTH_EXPIRY_MS: Final = 10_000
"""How far ahead of now the auth signature's ``expires`` lies."""
ALERT_AFTER_FAILURES: Final = 5
ORDER_STATUSES: Final = frozenset(
    (
        "New",
        "PartiallyFilled",
        "Untriggered",
        "Triggered",
        "Filled",
        "Cancelled",
        "PartiallyFilledCanceled",
        "Deactivated",
        "Rejected",
    )
)
"""Bybit V5 ``orderStatus`` values; a record with another one is skipped."""
_ORDER_NUMBERS: Final = ("qty", "price", "avgPrice", "cumExecQty", "cumExecValue", "cumExecFee")
_NOT_NEGATIVE: Final = frozenset(("avgPrice", "cumExecQty", "cumExecValue"))
CUMULATIVE_STATUSES: Final = frozenset(
    ("PartiallyFilled", "Filled", "Cancelled", "PartiallyFilledCanceled")
)
"""Statuses whose record must carry ``cumExecQty``: it says what of the order was filled."""
_POSITION_SIDES: Final = {"Buy": 1, "Sell": -1, "": 0, "None": 0}
"""A position record's ``side`` and the sign it gives the size (empty: no position)."""
_POSITION_IDX: Final = frozenset((0, 1, 2))
"""One-way mode (0), hedge mode's buy side (1) and sell side (2)."""
_SNIPPET = 120


class BybitAuthError(Exception):
    """Bybit refused the private stream's authentication (bad key, signature or permissions)."""


@attrs.frozen
class Execution:
    """One trade of an order: a checked ``execution`` record with ``execType`` ``Trade``."""

    exec_id: str
    order_id: str
    order_link_id: str
    """Empty for an order placed without one (never one of ours)."""
    symbol: str
    qty: Decimal
    price: Decimal
    fee: Decimal
    fee_currency: str
    """The coin the fee was charged in, when the record says (spot); else empty."""
    leaves_qty: Decimal
    """What was left of the order after this trade."""
    order_qty: Decimal | None
    exec_time: int | None


@attrs.frozen
class VenuePositionRecord:
    """One checked ``position`` record: Bybit's size of a symbol on one ``positionIdx``."""

    category: str
    """``linear``, ``inverse``, ``option`` (empty when the record does not say)."""
    symbol: str
    position_idx: int
    qty: Decimal
    """Signed: negative for ``side = Sell``; 0 when the position is closed."""
    mark_price: Decimal | None
    updated_ms: int | None


@attrs.frozen
class WalletRecord:
    """One checked ``wallet`` record: ``walletBalance`` per coin of one account."""

    account_type: str
    balances: Mapping[str, Decimal]


class PrivateSink(Protocol):
    """What the stream feeds: ``BybitExecution``."""

    def apply_order_update(self, record: Mapping[str, Any]) -> bool:
        """Apply one checked ``order`` record; False when it is not an order being followed."""
        ...

    def apply_execution(self, fill: Execution) -> bool:
        """Book one trade; False when it was not booked (duplicate, covered, foreign)."""
        ...

    def apply_position(self, record: VenuePositionRecord) -> None:
        """Take Bybit's view of one position (compared with the portfolio's, never booked)."""
        ...

    def apply_wallet(self, record: WalletRecord) -> None:
        """Take Bybit's view of the wallet (compared with the portfolio's, never booked)."""
        ...

    async def resync(self) -> int:
        """Bring every unfinished order up to date over HTTP; raise when Bybit cannot be asked.

        :return: the number of order events it published.
        """
        ...

    def stream_alert(self, severity: Severity, code: str, message: str) -> None:
        """Publish an alert about the stream."""
        ...


@attrs.define
class StreamMetrics:
    """Counters of the private stream."""

    connects: int = 0
    connect_failures: int = 0
    auth_failures: int = 0
    subscribed: int = 0
    """Connections whose subscription Bybit confirmed."""
    drops: int = 0
    """Connections that ended (dropped, aborted, closed), subscribed or not."""
    pings_sent: int = 0
    pongs: int = 0
    heartbeat_timeouts: int = 0
    orders: int = 0
    executions: int = 0
    positions: int = 0
    wallets: int = 0
    skipped: int = 0
    """Frames and records that were not usable (each logged with the reason)."""
    record_errors: int = 0
    """Records whose handling raised (a bug; logged with the traceback)."""
    resyncs: int = 0
    resync_failures: int = 0


class _AuthRejectedError(Exception):
    """Bybit answered the auth request with ``success: false``."""


def sign(secret: str, expires_ms: int) -> str:
    """The private stream's auth signature: hex HMAC-SHA256 of ``GET/realtime{expires}``."""
    payload = f"GET/realtime{expires_ms}".encode()
    return hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


class BybitPrivateStream:
    """See the module docstring."""

    def __init__(
        self,
        sink: PrivateSink,
        *,
        url: str,
        api_key: str,
        api_secret: str,
        ping_interval_s: float,
        pong_timeout_s: float,
        reply_timeout_s: float,
        reconnect_initial_s: float,
        reconnect_max_s: float,
        rng: random.Random | None = None,
        wall_ms: Callable[[], int] | None = None,
    ) -> None:
        self.url = url
        self.metrics = StreamMetrics()
        self._sink = sink
        self._api_key = api_key
        self._sign: Callable[[int], str] = lambda expires: sign(api_secret, expires)
        self._ping_interval_s = ping_interval_s
        self._pong_timeout_s = pong_timeout_s
        self._reply_timeout_s = reply_timeout_s
        self._reconnect_initial_s = reconnect_initial_s
        self._reconnect_max_s = reconnect_max_s
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
        self._wall_ms = wall_ms or (lambda: int(time.time() * 1000))
        self._req_ids = itertools.count(1)
        self._pong = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._client = ReconnectingWebSocket(
            url,
            self._session,
            name="bybit-private",
            open_timeout_s=reply_timeout_s,
            backoff_initial_s=reconnect_initial_s,
            backoff_max_s=reconnect_max_s,
            rng=self._rng,
            on_connect_failed=self._connect_failed,
            on_session_end=self._disconnected,
        )

    def __repr__(self) -> str:
        return f"BybitPrivateStream(url={self.url!r})"

    @property
    def running(self) -> bool:
        """The supervisor is alive (connected or reconnecting)."""
        return self._client.running

    @property
    def backoff_history(self) -> list[float]:
        """The last reconnect delays drawn, oldest first."""
        return self._client.backoff_history

    async def start(self) -> None:
        """Start the supervisor (once) and wait for the first connection attempt's outcome.

        Returns once Bybit confirmed the subscription, or after the first attempt failed for a
        network reason (it keeps trying in the background: the venue still works over HTTP).
        Raises ``BybitAuthError`` when Bybit refused the key; the stream is stopped then.
        """
        if self.running:
            return
        try:
            await self._client.start()
        except BybitAuthError:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop the supervisor and wait until the socket and every helper task are gone."""
        await self._client.stop()

    # -- the connection's life (planes.wsconn runs the loop) -----------------------------

    def _connect_failed(self, reason: str) -> None:
        self.metrics.connect_failures += 1
        self._failed(f"connect failed: {reason}")

    def _disconnected(self, reason: str, healthy: bool) -> None:
        self.metrics.drops += 1
        if healthy:
            log.warning("bybit_private.disconnected", reason=reason)
        else:  # it never got as far as streaming: a failed attempt
            self._failed(reason)

    def _failed(self, reason: str) -> None:
        """Log a failed attempt (already counted); alert every ``ALERT_AFTER_FAILURES``."""
        failures = self._client.failures
        log.warning("bybit_private.attempt_failed", url=self.url, failures=failures, error=reason)
        self._client.settle_first()
        if failures % ALERT_AFTER_FAILURES == 0:
            message = (
                f"the Bybit private stream failed {failures} times in a row "
                f"(last: {reason}); fills come only from poll() meanwhile; still retrying"
            )
            self._sink.stream_alert(Severity.WARNING, "bybit_private_unreachable", message)

    async def _session(self, conn: Connection) -> None:
        """Run one connection: sign in, subscribe, then read until it ends."""
        self.metrics.connects += 1
        self._pong = asyncio.Event()
        self._subscribed = asyncio.Event()
        try:
            await self._authenticate(conn)
        except _AuthRejectedError as rejected:
            self.metrics.auth_failures += 1
            message = f"Bybit refused the private stream's API key: {rejected}"
            if self._client.first_pending:
                # Bybit's answer is the point here, not a traceback.
                log.error("bybit_private.auth_failed", ret_msg=str(rejected))  # noqa: TRY400
                raise StopReconnectingError(BybitAuthError(message)) from None
            self._sink.stream_alert(Severity.CRITICAL, "bybit_private_auth_failed", message)
            raise SessionEndedError(message) from None
        request = {"op": "subscribe", "req_id": f"sub-{next(self._req_ids)}", "args": [*TOPICS]}
        await conn.send(request)
        conn.spawn(self._expect_subscribed(conn), "bybit-private-subscribe")
        conn.spawn(self._heartbeat(conn), "bybit-private-heartbeat")
        async for raw in conn.ws:
            self._on_frame(conn, raw)

    async def _authenticate(self, conn: Connection) -> None:
        expires = self._wall_ms() + AUTH_EXPIRY_MS
        req_id = f"auth-{next(self._req_ids)}"
        args = [self._api_key, expires, self._sign(expires)]
        await conn.send({"op": "auth", "req_id": req_id, "args": args})
        deadline = asyncio.get_running_loop().time() + self._reply_timeout_s
        while True:
            left = deadline - asyncio.get_running_loop().time()
            try:
                raw = await asyncio.wait_for(conn.ws.recv(), max(left, 0.0))
            except TimeoutError:
                raise SessionEndedError(
                    f"no auth reply within {self._reply_timeout_s:g} s"
                ) from None
            message = _json_object(raw)
            if message is None or message.get("op") != "auth":
                self._on_frame(conn, raw)  # whatever came first is still looked at
                continue
            if message.get("success") is not True:
                raise _AuthRejectedError(str(message.get("ret_msg") or "auth refused"))
            log.info("bybit_private.authenticated", url=self.url)
            return

    async def _expect_subscribed(self, conn: Connection) -> None:
        try:
            await asyncio.wait_for(self._subscribed.wait(), self._reply_timeout_s)
        except TimeoutError:
            self._abort(conn, f"no subscribe reply within {self._reply_timeout_s:g} s")

    async def _heartbeat(self, conn: Connection) -> None:
        while True:
            await asyncio.sleep(self._ping_interval_s)
            self._pong.clear()
            try:
                await conn.send({"op": "ping", "req_id": f"ping-{next(self._req_ids)}"})
            except SessionEndedError:
                return
            self.metrics.pings_sent += 1
            try:
                await asyncio.wait_for(self._pong.wait(), self._pong_timeout_s)
            except TimeoutError:
                self.metrics.heartbeat_timeouts += 1
                self._abort(conn, f"heartbeat: no pong within {self._pong_timeout_s:g} s")
                return

    def _abort(self, conn: Connection, reason: str) -> None:
        """End a connection that cannot be trusted (no closing handshake: it may be half-open)."""
        log.warning("bybit_private.abort", reason=reason)
        conn.abort(reason)

    async def _resync(self) -> None:
        """Run the sink's HTTP resync; retry with backoff until it works (or the session ends)."""
        attempt = 0
        while True:
            try:
                published = await self._sink.resync()
            except Exception as exc:  # noqa: BLE001 - a failed resync must not end the stream
                attempt += 1
                self.metrics.resync_failures += 1
                ceiling = min(self._reconnect_max_s, self._reconnect_initial_s * 2 ** (attempt - 1))
                log.warning(
                    "bybit_private.resync_failed",
                    attempt=attempt,
                    error=f"{type(exc).__name__}: {exc}",
                )
                await asyncio.sleep(self._rng.uniform(0, ceiling))
                continue
            self.metrics.resyncs += 1
            log.info("bybit_private.resynced", events=published)
            return

    # -- frames --------------------------------------------------------------------------

    def _on_frame(self, conn: Connection, raw: str | bytes) -> None:
        try:
            self._dispatch(conn, raw)
        except Exception as exc:  # one frame must never end the stream
            self.metrics.record_errors += 1
            log.exception("bybit_private.frame_failed", error=f"{type(exc).__name__}: {exc}")

    def _dispatch(self, conn: Connection, raw: str | bytes) -> None:
        message = _json_object(raw)
        if message is None:
            self._skip("not a JSON object", raw)
            return
        op = message.get("op")
        if op is not None:
            self._on_control(conn, message)
            return
        topic = message.get("topic")
        if not isinstance(topic, str):
            self._skip("neither an op nor a topic", raw)
            return
        kind = topic.split(".", 1)[0]  # "order" or a category's "order.spot" ...
        if kind not in TOPICS:
            self._skip(f"unknown topic {topic!r}", raw)
            return
        data = message.get("data")
        if not isinstance(data, list):
            self._skip(f"{topic}: data is not a list", raw)
            return
        for record in data:
            self._on_record(kind, record)

    def _on_control(self, conn: Connection, message: Mapping[str, Any]) -> None:
        op = message.get("op")
        if op == "pong" or (op == "ping" and message.get("ret_msg") == "pong"):
            self.metrics.pongs += 1
            self._pong.set()
        elif op == "subscribe":
            if message.get("success") is True:
                if not self._subscribed.is_set():
                    self._subscribed.set()
                    self._on_subscribed(conn)
                return
            ret_msg = str(message.get("ret_msg") or "refused")
            log.error("bybit_private.subscribe_refused", topics=list(TOPICS), ret_msg=ret_msg)
            self._sink.stream_alert(
                Severity.CRITICAL,
                "bybit_private_subscribe_refused",
                f"Bybit refused the private stream's subscription to {', '.join(TOPICS)}: "
                f"{ret_msg}; reconnecting",
            )
            self._abort(conn, f"subscription refused: {ret_msg}")
        elif op != "auth":
            log.debug("bybit_private.control_ignored", op=op)

    def _on_subscribed(self, conn: Connection) -> None:
        self.metrics.subscribed += 1
        conn.healthy = True  # streaming: its end resets the reconnect backoff
        log.info("bybit_private.subscribed", topics=list(TOPICS))
        conn.opened()
        conn.spawn(self._resync(), "bybit-private-resync")

    def _on_record(self, kind: str, record: object) -> None:
        metrics, sink = self.metrics, self._sink
        try:
            if kind == "order":
                checked = check_order(record)
                metrics.orders += 1
                sink.apply_order_update(checked)
            elif kind == "execution":
                fill = parse_execution(record)
                if fill is not None:
                    metrics.executions += 1
                    sink.apply_execution(fill)
            elif kind == "position":
                position = parse_position(record)
                metrics.positions += 1
                sink.apply_position(position)
            else:
                wallet = parse_wallet(record)
                metrics.wallets += 1
                sink.apply_wallet(wallet)
        except BadRecordError as bad:
            self._skip(f"{kind} record: {bad}", record)
        except Exception as exc:  # one record must never end the stream or take others along
            self.metrics.record_errors += 1
            log.exception("bybit_private.record_failed", error=f"{type(exc).__name__}: {exc}")

    def _skip(self, problem: str, what: object) -> None:
        self.metrics.skipped += 1
        log.warning("bybit_private.skipped", problem=problem, frame=_snippet(what))


# -- checking wire records -------------------------------------------------------------------


class BadRecordError(ValueError):
    """A wire record that cannot be used; the message says what is wrong with it."""


def check_order(raw: object) -> Mapping[str, Any]:
    """``raw`` when it is a usable ``order`` record, else ``BadRecordError``.

    Besides the ids, the status and the numbers, the fill figures must hold together: a
    ``PartiallyFilled``, ``Filled`` or cancelled record carries ``cumExecQty``, and a record
    that says something was filled says at what price (a positive ``cumExecValue`` or
    ``avgPrice``). The venue applies the same check to its REST records.
    """
    record = _mapping(raw)
    for key in ("orderId", "orderLinkId", "orderStatus"):
        if not isinstance(record.get(key), str):
            raise BadRecordError(f"{key} missing or not a string")
    if not record["orderId"]:
        raise BadRecordError("orderId is empty")
    status = record["orderStatus"]
    if status not in ORDER_STATUSES:
        raise BadRecordError(f"unknown orderStatus {status!r}")
    numbers: dict[str, Decimal] = {}
    for key in _ORDER_NUMBERS:
        value = record.get(key)
        if value is None or value == "":
            continue
        number = _decimal(value)
        if number is None:
            raise BadRecordError(f"{key} is not a number: {value!r}")
        if key in _NOT_NEGATIVE and number < 0:
            raise BadRecordError(f"{key} is negative: {value!r}")
        numbers[key] = number
    filled = numbers.get("cumExecQty")
    if filled is None and status in CUMULATIVE_STATUSES:
        raise BadRecordError(f"cumExecQty missing on a {status} record")
    if filled and not (numbers.get("cumExecValue", 0) > 0 or numbers.get("avgPrice", 0) > 0):
        raise BadRecordError(
            f"cumExecQty {record['cumExecQty']} with no positive cumExecValue or avgPrice "
            f"(cumExecValue {record.get('cumExecValue')!r}, avgPrice {record.get('avgPrice')!r})"
        )
    return record


def parse_execution(raw: object) -> Execution | None:
    """An ``execution`` record as an ``Execution``; None for a non-trade (funding, settlement).

    Raises ``BadRecordError`` saying what is wrong with an unusable record.
    """
    record = _mapping(raw)
    kind = record.get("execType")
    if not isinstance(kind, str):
        raise BadRecordError("execType missing or not a string")
    if kind != "Trade":
        return None
    texts = {key: _text(record, key) for key in ("execId", "orderId", "orderLinkId", "symbol")}
    if not texts["execId"]:
        raise BadRecordError("execId is empty")
    qty, price, fee, leaves = (
        _number(record, key) for key in ("execQty", "execPrice", "execFee", "leavesQty")
    )
    if qty <= 0 or price <= 0:
        raise BadRecordError(f"execQty and execPrice must be > 0, got {qty} at {price}")
    if leaves < 0:
        raise BadRecordError(f"leavesQty is negative: {leaves}")
    order_qty = _decimal(record.get("orderQty"))
    exec_time = _decimal(record.get("execTime"))
    fee_currency = record.get("feeCurrency")
    return Execution(
        exec_id=texts["execId"],
        order_id=texts["orderId"],
        order_link_id=texts["orderLinkId"],
        symbol=texts["symbol"],
        qty=qty,
        price=price,
        fee=fee,
        fee_currency=fee_currency if isinstance(fee_currency, str) else "",
        leaves_qty=leaves,
        order_qty=order_qty if order_qty is not None and order_qty > 0 else None,
        exec_time=None if exec_time is None else int(exec_time),
    )


def parse_position(raw: object) -> VenuePositionRecord:
    """A ``position`` record as a ``VenuePositionRecord``.

    Raises ``BadRecordError`` saying what is wrong with an unusable record.
    """
    record = _mapping(raw)
    symbol = _text(record, "symbol")
    if not symbol:
        raise BadRecordError("symbol is empty")
    side = record.get("side", "")
    if side not in _POSITION_SIDES:
        raise BadRecordError(f"unknown side {side!r}")
    size = _number(record, "size")
    if size < 0:
        raise BadRecordError(f"size is negative: {size}")
    sign = _POSITION_SIDES[side]
    if size and not sign:
        raise BadRecordError(f"a size of {size} with no side")
    idx = record.get("positionIdx", 0)
    if isinstance(idx, bool) or idx not in _POSITION_IDX:
        raise BadRecordError(f"unknown positionIdx {idx!r}")
    category = record.get("category", "")
    updated = _decimal(record.get("updatedTime"))
    return VenuePositionRecord(
        category=category if isinstance(category, str) else "",
        symbol=symbol,
        position_idx=int(idx),
        qty=size * sign,
        mark_price=_decimal(record.get("markPrice")),
        updated_ms=None if updated is None else int(updated),
    )


def parse_wallet(raw: object) -> WalletRecord:
    """A ``wallet`` record as a ``WalletRecord``.

    Raises ``BadRecordError`` saying what is wrong with an unusable record.
    """
    record = _mapping(raw)
    account_type = _text(record, "accountType")
    coins = record.get("coin")
    if not isinstance(coins, list):
        raise BadRecordError("coin missing or not a list")
    balances: dict[str, Decimal] = {}
    for n, item in enumerate(coins):
        if not isinstance(item, Mapping):
            raise BadRecordError(f"coin[{n}] is not an object")
        coin = item.get("coin")
        if not (isinstance(coin, str) and coin):
            raise BadRecordError(f"coin[{n}].coin missing or empty")
        value = item.get("walletBalance")
        balance = _decimal(value)
        if balance is None:
            raise BadRecordError(f"coin[{n}] ({coin}) walletBalance is not a number: {value!r}")
        balances[coin.upper()] = balance
    return WalletRecord(account_type, balances)


def _mapping(raw: object) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise BadRecordError(f"not an object: {type(raw).__name__}")
    return raw


def _text(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise BadRecordError(f"{key} missing or not a string")
    return value


def _number(record: Mapping[str, Any], key: str) -> Decimal:
    value = record.get(key)
    number = _decimal(value)
    if number is None:
        raise BadRecordError(f"{key} missing or not a number: {value!r}")
    return number


def _decimal(value: object) -> Decimal | None:
    """A Bybit number (a string, or a JSON number) as a finite Decimal; None when it is not."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    try:
        number = Decimal(str(value))
    except decimal.InvalidOperation:
        return None
    return number if number.is_finite() else None


def _json_object(raw: str | bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return message if isinstance(message, dict) else None


def _snippet(what: object) -> str:
    text = what.decode(errors="replace") if isinstance(what, bytes) else str(what)
    return text if len(text) <= _SNIPPET else text[:_SNIPPET] + "..."
