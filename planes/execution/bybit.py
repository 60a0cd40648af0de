"""BybitExecution: the Bybit V5 venue (``execution.venue = "bybit"``), orders over pybit HTTP.

It takes ``risk:approved_intent`` (the only way orders come in) and reports every order's life on
``exec:order_event`` (``venue="bybit"``); the PositionManager books the fills. With another venue
it stays idle and reads no keys. ``docs/execution.md`` has the full story; in short:

* **Idempotent orders.** Every order carries ``orderLinkId = client_order_id(scenario, intent)``
  (the paper venue's id, 36 characters), so resubmitting it can never make a second order: Bybit
  answers a known ``orderLinkId`` with retCode 110072 (or 10001 "OrderLinkedID is duplicate"),
  which counts as *accepted*. A second approval with an id this venue has seen is ignored.
* **Lifecycle.** ``submitted``, then ``accepted`` once Bybit took the order, or ``rejected``
  with Bybit's ``retMsg`` (``venue_rejected: ...``). Fills are not pushed by Bybit's REST API:
  ``poll()`` asks for every unfinished order and publishes the fills (and the cancellations) not
  published yet; ``apply_order_update()`` does the same for one order record.
* **Live fills** (``private_stream = true``): ``BybitPrivateStream``
  (``planes/execution/bybit_private.py``) feeds ``order`` records to ``apply_order_update()``
  and ``execution`` trades to ``apply_execution()``, and calls ``resync()`` (``poll()``) after
  every (re)connect. A trade is booked once: by ``execId`` (the recent ones are remembered and
  exported), and by its place in the order (``orderQty - leavesQty``) against what cumulative
  records already booked, so an order record and its trade give the same state in either order.
* **Drift.** The stream's ``position`` and ``wallet`` records are Bybit's view of the account
  (on ``spot`` a symbol's position is its base coin's wallet balance), and so is the listing
  each resync asks the REST API for (every position, or every coin balance): a symbol it leaves
  out, and after it one Bybit never reports, is flat on Bybit. A ``DriftWatch``
  (``planes/execution/drift.py``) compares them with the portfolio's
  (``portfolio:position_update``) and publishes a warning ``observability:alert``
  (``bybit_position_drift``, ``bybit_wallet_drift``) when they disagree for
  ``drift_grace_s``, and an info one when that drift ends (``..._resolved``). Nothing is ever
  booked from them. The wallet is compared by change since a baseline: Bybit's REST wallet
  after each resync. With storage on, the boot's first resync comes before recovery (the
  stream connects inside ``start()``): nothing is compared until ``state:recovery``, and the
  wallet comparison starts there, from the recovered books.
* **Bad records are refused whole.** An order record (REST or stream) or a trade whose figures
  cannot be booked (a fill with no price, more filled than the order's quantity, a missing
  ``cumExecQty``) and a REST wallet balance that is not a number change nothing; they are
  logged and alerted (``bybit_record_refused``) and the next good record is booked. An answer
  that is not Bybit's envelope (no ``retCode`` 0, not an object, a listing without ``list``, a
  placed order without ``orderId``) is unreadable: transient and ambiguous.
* **Rebates.** A negative ``execFee`` (or a falling ``cumExecFee``) is a maker rebate: the fill
  event carries it as a negative ``fee`` and the ledger books it as one.
* **Retries** with exponential backoff and full jitter, only on transient failures: timeouts and
  connection errors, HTTP 429 and 5xx, and the retCodes in ``TRANSIENT_RET_CODES``. Business
  rejections (insufficient balance, bad quantity ...) are never retried. pybit's own retries are
  off (``max_retries=1``, an empty ``retry_codes``, no ``force_retry``): they sleep in the
  calling thread and hide the retCode.
* **Timeout after accept.** When a place request may have reached Bybit (a timeout, a broken
  connection, a 5xx, an ambiguous retCode), the order is looked up by ``orderLinkId`` before
  trying again: found means accepted, and nothing is placed again.
* **Circuit breakers**, one per endpoint group: ``orders`` (place, cancel) and ``account``
  (open orders, order history, positions, wallet). ``breaker_failures`` failures in a row open
  it for ``breaker_reset_s``: calls then fail fast with ``CircuitOpenError`` and one
  ``observability:alert`` is published; after the pause one call is let through (half-open),
  and its outcome closes the breaker or opens it again.
* **Never blocking the loop.** Every pybit call runs in a worker thread (``asyncio.to_thread``),
  bounded by ``timeout_s``.

Keys come from the environment variables named by ``api_key_env`` / ``api_secret_env``, read at
construction; a missing one fails start-up naming the variable. They are handed to pybit (and
to the private stream, which signs its logins with them) only, never kept on this object or
logged.

**Recovery** (``contracts.ports.Stateful``, key ``execution.bybit``): the state is every
unfinished order (ids, symbol, side, type, quantity, price, status, cumulative fill figures),
the last ``CLIENT_IDS_KEPT`` client order ids seen, and the last ``EXEC_IDS_KEPT`` execIds of
the private stream.
Apart from those ids it changes only where the venue publishes, so it is rebuilt from its own
``exec:order_event`` alone: ``submitted`` tracks an order and its id, ``accepted`` of an order
never submitted here adopts it, fills advance the cumulative figures (skipped when not ahead of
them), and ``rejected`` / ``cancelled`` / ``filled`` end it. What no event carries is not kept:
``reduce_only`` (only placing needs it, and a restored order is never placed again), a pending
cancel request, the exact cumulative value (the replay sums the published fills, each priced to
28 digits), and the execIds seen after the snapshot (a re-sent trade is still caught by its
place in the order, see ``apply_execution``).

**Reconciliation** (``contracts.ports.Reconciling``), after recovery and before market data:
Bybit's open orders are compared with the state. A known order has its missed fills and end
state published as ``poll()`` would (they are Bybit's fills, not invented ones). An unknown
order is adopted (tracked from then on; fills Bybit reports for it are published), cancelled,
or only reported, by policy. A tracked order Bybit does not list as open is looked up: its
fills and end are published, an unconfirmed one Bybit has no record of is rejected, a confirmed
one is reported and kept. Then Bybit's positions (linear) are compared with the portfolio's,
which the venue follows on ``portfolio:position_update``; a difference is reported, never
booked. Every action is a line of the answer, and one ``observability:alert`` lists them.
"""

from __future__ import annotations

import asyncio
import decimal
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

import attrs
import structlog

from contracts.enums import OrderStatus, OrderType, Severity, Side
from contracts.execution import OrderEvent, PositionUpdate
from contracts.ports import BusHandle, ComponentContext
from contracts.risk import ApprovedIntent
from contracts.state import StateRecovered
from contracts.system import Alert
from contracts.topics import (
    EXEC_ORDER_EVENT,
    OBSERVABILITY_ALERT,
    PORTFOLIO_POSITION,
    RISK_APPROVED,
    STATE_RECOVERY,
)
from planes.config import BybitCategory, BybitExecutionSection, Config, ReconcilePolicy
from planes.execution.adapter import OrderReason, OrderRequest, VenuePosition, Wallet, remember
from planes.execution.bybit_private import (
    BadRecordError,
    BybitPrivateStream,
    Execution,
    VenuePositionRecord,
    WalletRecord,
    check_order,
    parse_position,
    parse_wallet,
)
from planes.execution.drift import DriftWatch

log = structlog.get_logger("planes.execution.bybit")

VENUE: Final = "bybit"
STATE_KEY: Final = "execution.bybit"
ORDERS: Final = "orders"
ACCOUNT: Final = "account"

TRANSIENT_RET_CODES: Final[Mapping[int, str]] = {
    10000: "server timeout",
    10002: "request time outside recv_window (re-signed with a fresh timestamp)",
    10006: "too many visits: API rate limit",
    10016: "server error / service restarting",
    10018: "IP rate limit",
    10429: "system-level frequency protection",
    170146: "spot: order creation timeout",
    170147: "spot: order cancellation timeout",
}
"""Bybit retCodes worth another try (Bybit V5 error table). pybit's default ``retry_codes`` add
legacy V3 codes (30034, 30035, 130035, 130150) that V5 endpoints do not return."""
AMBIGUOUS_RET_CODES: Final = frozenset((10000, 10016, 170146, 170147))
"""Transient codes after which the request may still have been executed."""
RATE_LIMIT_RET_CODES: Final = frozenset((10006, 10018, 10429))
AUTH_RET_CODES: Final = frozenset((10003, 10004, 10005, 10007, 10009, 10010))
"""Key, signature, permission or IP problems: not retried, but counted by the breaker."""
DUPLICATE_LINK_ID: Final = 110072
ORDER_GONE_RET_CODES: Final = frozenset((110001, 110008, 170213))
"""Cancel of an order Bybit no longer has working (filled, cancelled, unknown)."""
RATE_LIMIT_RESET_HEADER: Final = "X-Bapi-Limit-Reset-Timestamp"
QUERY_PAGE: Final = 50
MAX_PAGES: Final = 20
CLIENT_IDS_KEPT: Final = 10_000
"""How many of the latest client order ids the duplicate check remembers (and snapshots)."""
EXEC_IDS_KEPT: Final = 2000
"""How many recent execIds are remembered (and exported) to drop a trade delivered twice."""
FOREIGN_IDS_KEPT: Final = 1000

_ROUND = decimal.Context(prec=28)
_ZERO = Decimal(0)
_SIDES: Final = {Side.BUY: "Buy", Side.SELL: "Sell"}
_WORKING_STATES: Final = frozenset(("New", "PartiallyFilled", "Untriggered", "Triggered"))
_CANCELLED_STATES: Final = frozenset(("Cancelled", "PartiallyFilledCanceled", "Deactivated"))
_DONE: Final = frozenset((OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED))


class BybitReason:
    """Reason codes this venue adds to ``OrderReason`` (``"code: detail"``); stable API."""

    VENUE_REJECTED = "venue_rejected"
    """Bybit refused the order; the detail is its ``retMsg`` and retCode."""
    VENUE_UNAVAILABLE = "venue_unavailable"
    """Retries ran out, and Bybit does not have the order."""
    CIRCUIT_OPEN = "circuit_open"
    """The ``orders`` breaker is open: the order was not sent."""
    CONFIRMED = "confirmed"
    """(on ``accepted``) Bybit had the order although the place request failed."""
    VENUE_CANCELLED = "venue_cancelled"
    """Bybit cancelled or deactivated the order (not at our request)."""
    ADOPTED = "adopted"
    """(on ``accepted``) reconciliation took over an open order the state did not know."""


class BybitConfigError(ValueError):
    """The Bybit venue is selected but cannot be set up (a missing key, a bad URL)."""


class BybitError(Exception):
    """A Bybit request failed; says whether it is worth another try and whether it may have run."""

    def __init__(
        self,
        message: str,
        *,
        transient: bool = False,
        ambiguous: bool = False,
        venue_fault: bool = True,
        ret_code: int | None = None,
        ret_msg: str = "",
        http_status: int | None = None,
        retry_at_ms: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient
        """A timeout, a connection error, HTTP 429/5xx or a retCode in ``TRANSIENT_RET_CODES``."""
        self.ambiguous = ambiguous
        """The request may have been executed although no answer said so."""
        self.venue_fault = venue_fault
        """Counts as a failure for the circuit breaker (False for business rejections)."""
        self.ret_code = ret_code
        self.ret_msg = ret_msg
        self.http_status = http_status
        self.retry_at_ms = retry_at_ms
        """When Bybit says the rate limit resets (unix ms), if it did."""

    @property
    def duplicate_link_id(self) -> bool:
        """Bybit already has an order with this ``orderLinkId``."""
        code = self.ret_code
        return code == DUPLICATE_LINK_ID or (code == 10001 and "duplicate" in self.ret_msg.lower())


class CircuitOpenError(BybitError):
    """An endpoint group's breaker is open: the request was not sent."""

    def __init__(self, group: str, retry_in_s: float) -> None:
        super().__init__(
            f"bybit {group} circuit breaker is open: not sent (next try in {retry_in_s:.1f} s)",
            venue_fault=False,
        )
        self.group = group


class CircuitBreaker:
    """A consecutive-failure breaker: closed -> open (fail fast) -> half-open (one try) -> ...

    ``acquire()`` before a call raises ``CircuitOpenError`` while open, and while half-open once
    the single trial call is out; ``succeeded()`` / ``failed()`` after it. ``failed()`` returns
    True only when it opens a closed breaker (the moment to alert). A trial that neither succeeds
    nor fails (cancelled) is ``abandoned()``, which lets the next call try.
    """

    __slots__ = ("_clock", "_opened_at", "_probing", "failures", "group", "limit", "reset_s")

    def __init__(
        self, group: str, limit: int, reset_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.group = group
        self.limit = limit
        self.reset_s = reset_s
        self.failures = 0
        self._clock = clock
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open`` (``open`` whose pause is over counts as half)."""
        if self._opened_at is None:
            return "closed"
        if self._probing or self._clock() - self._opened_at >= self.reset_s:
            return "half_open"
        return "open"

    def acquire(self) -> bool:
        """Let a call through, or raise ``CircuitOpenError``; True when it is the trial call."""
        opened = self._opened_at
        if opened is None:
            return False
        left = opened + self.reset_s - self._clock()
        if left > 0 or self._probing:
            raise CircuitOpenError(self.group, max(left, 0.0))
        self._probing = True
        return True

    def succeeded(self) -> None:
        """The venue answered: close the breaker."""
        if self._opened_at is not None:
            log.info("bybit.breaker_closed", group=self.group)
        self.failures = 0
        self._opened_at = None
        self._probing = False

    def failed(self) -> bool:
        """Count a failure; True when this one opened a closed breaker."""
        self.failures += 1
        if self._probing or self._opened_at is not None:
            self._probing = False
            self._opened_at = self._clock()  # the trial failed: another full pause
            return False
        if self.failures >= self.limit:
            self._opened_at = self._clock()
            return True
        return False

    def abandoned(self) -> None:
        """The trial call ended without an answer; the next call may try."""
        self._probing = False


@attrs.define
class _Group:
    name: str
    http: Any  # pybit.unified_trading.HTTP: untyped
    breaker: CircuitBreaker


class _Order:
    """The venue's state of one order."""

    __slots__ = (
        "cancel_requested",
        "fees",
        "filled",
        "notional",
        "placing",
        "req",
        "status",
        "template",
    )

    def __init__(self, req: OrderRequest, template: OrderEvent) -> None:
        self.req = req
        self.template = template
        self.status = OrderStatus.SUBMITTED
        self.filled = _ZERO
        self.notional = _ZERO
        self.fees = _ZERO
        self.cancel_requested = False
        self.placing = False
        """``submit`` is still talking to Bybit about it: ``poll`` leaves it alone."""

    @property
    def avg_price(self) -> Decimal | None:
        return _ROUND.divide(self.notional, self.filled) if self.filled else None


class BybitExecution:
    """The Bybit venue (implements ``ExecutionAdapter``); see the module docstring."""

    name = "bybit_execution"
    venue = VENUE
    state_key = STATE_KEY
    state_topics = frozenset((EXEC_ORDER_EVENT.name,))

    def __init__(
        self,
        ctx: ComponentContext,
        *,
        environ: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        config = ctx.config
        if not isinstance(config, Config):
            msg = "BybitExecution needs planes.config.Config"
            raise TypeError(msg)
        self._bus: BusHandle = ctx.bus
        self.config: BybitExecutionSection = config.execution.bybit
        self.active = config.execution.venue == VENUE
        self.quote = config.portfolio.quote
        self.category = self.config.category.value
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
        self._orders_by_id: dict[str, _Order] = {}
        self._orders_by_link: dict[str, _Order] = {}
        self._client_ids: dict[str, None] = {}
        """Client order ids seen, oldest first (an ordered set), at most ``CLIENT_IDS_KEPT``."""
        self._portfolio: dict[str, Decimal] = {}
        """The portfolio's quantity per symbol, as ``portfolio:position_update`` last said."""
        self._groups: dict[str, _Group] = {}
        self.backoff_history: list[float] = []
        self.submitted = 0
        self.accepted = 0
        self.rejected = 0
        self.confirmed = 0
        """Orders found on Bybit by orderLinkId after a place request failed."""
        self.retries = 0
        self.duplicates = 0
        self.events = 0
        self.exec_duplicates = 0
        """Trades not booked because they were booked already (same execId, or covered)."""
        self.foreign_records = 0
        """Private stream records of orders this venue did not place (ignored)."""
        self._exec_ids: dict[str, None] = {}
        """Recent execIds, oldest first (a dict as an ordered set), at most ``EXEC_IDS_KEPT``."""
        self._foreign_seen: set[str] = set()
        self.stream: BybitPrivateStream | None = None
        """The private WebSocket stream (``private_stream = true``), else None."""
        self.drift = DriftWatch(
            venue=VENUE,
            quote=self.quote,
            start_cash=config.portfolio.cash,
            spot=self.config.category is BybitCategory.SPOT,
            grace_s=self.config.drift_grace_s,
            tolerance=self.config.wallet_drift_tolerance,
            alert=self._drift_alert,
            symbols=config.risk.allowlist or config.market.symbols,
            recovering=config.storage_on,  # the boot recovers the books: wait for them
        )
        """Bybit's positions and wallet (from the stream) against the portfolio's."""
        self.snapshot_skipped = 0
        """Records of the resync's REST listing for the drift check that were not usable."""
        self.records_refused = 0
        """Order, trade and wallet records refused as unusable (``bybit.record_refused``)."""
        if self.active:
            self._groups = self._connect(os.environ if environ is None else environ)

    def _connect(self, environ: Mapping[str, str]) -> dict[str, _Group]:
        """One pybit session per endpoint group, pointed at ``base_url``, its retries off."""
        cfg = self.config
        key = _required_env(environ, cfg.api_key_env, "api_key_env", "API key")
        secret = _required_env(environ, cfg.api_secret_env, "api_secret_env", "API secret")
        base_url = cfg.base_url.rstrip("/")
        if not base_url.startswith(("https://", "http://")):
            msg = f"execution.bybit.base_url must be an http(s) URL, got {cfg.base_url!r}"
            raise BybitConfigError(msg)
        # Imported here: pybit (with requests) takes about 0.2 s to import, which every `planes`
        # command paid, a backtest or a paper run included, for a venue it does not use.
        from pybit.unified_trading import HTTP  # noqa: PLC0415

        groups = {}
        for group in (ORDERS, ACCOUNT):
            http = HTTP(
                api_key=key,
                api_secret=secret,
                timeout=cfg.timeout_s,
                recv_window=cfg.recv_window_ms,
                max_retries=1,  # pybit's loop: 1 means one attempt and no retry of its own
                retry_delay=0,
                force_retry=False,
            )
            http.endpoint = base_url  # pybit builds https://api.{domain}.{tld}; we set it whole
            http.retry_codes = set()  # set after __post_init__, which refills an empty set
            breaker = CircuitBreaker(group, cfg.breaker_failures, cfg.breaker_reset_s)
            groups[group] = _Group(group, http, breaker)
        if cfg.private_stream:
            self.stream = BybitPrivateStream(
                self,
                url=cfg.private_ws_url,
                api_key=key,
                api_secret=secret,
                ping_interval_s=cfg.ping_interval_s,
                pong_timeout_s=cfg.pong_timeout_s,
                reply_timeout_s=cfg.timeout_s,
                reconnect_initial_s=cfg.reconnect_initial_s,
                reconnect_max_s=cfg.reconnect_max_s,
                rng=self._rng,
            )
        return groups

    def breaker(self, group: str) -> CircuitBreaker:
        """The circuit breaker of ``group`` (``orders`` or ``account``)."""
        return self._groups[group].breaker

    # -- component -----------------------------------------------------------------------

    async def start(self) -> None:
        """Take approved intents (only while ``execution.venue = "bybit"``); open the stream.

        With ``private_stream`` on, waits for the private stream's first connection attempt;
        raises ``BybitAuthError`` when Bybit refuses the key there.
        """
        if not self.active:
            log.info("bybit_execution.idle", reason="execution.venue is not bybit")
            return
        self._bus.subscribe(RISK_APPROVED, self._on_approved)
        self._bus.subscribe(PORTFOLIO_POSITION, self._on_position)
        self._bus.subscribe(STATE_RECOVERY, self._on_recovery)
        if self.stream is not None:
            await self.stream.start()
        log.info(
            "bybit_execution.ready",
            base_url=self.config.base_url,
            category=self.category,
            private_stream=self.stream.url if self.stream is not None else None,
        )

    async def stop(self) -> None:
        """Stop the stream, close the HTTP sessions. Working orders stay on Bybit."""
        if self.stream is not None:
            await self.stream.stop()
        self.drift.stop()
        for group in self._groups.values():
            group.http.client.close()

    # -- ExecutionAdapter ----------------------------------------------------------------

    async def _on_approved(self, approved: ApprovedIntent) -> None:
        await self.submit(OrderRequest.from_approved(approved))

    def _on_position(self, update: PositionUpdate) -> None:
        self._portfolio[update.symbol] = update.qty
        self.drift.portfolio(update)

    def _on_recovery(self, event: StateRecovered) -> None:
        # The recovered books were announced (and reconciled) before this: compare from here.
        # A failed recovery fails the boot; its books are not whole, so nothing is compared.
        if event.ok:
            self.drift.books_recovered()

    async def submit(self, order: OrderRequest) -> None:
        """Place ``order`` and report it: submitted, then accepted or rejected (never raises)."""
        req = order
        if req.client_order_id in self._client_ids:
            self.duplicates += 1
            log.warning("bybit.duplicate_order", order_id=req.order_id, client=req.client_order_id)
            return
        remember(self._client_ids, req.client_order_id, None, CLIENT_IDS_KEPT)
        self.submitted += 1
        state = _Order(req, self._template(req))
        self._track(state)
        self._publish(state, OrderStatus.SUBMITTED)
        if not self.active:
            self._reject(state, f"{BybitReason.VENUE_UNAVAILABLE}: execution.venue is not bybit")
            return
        try:
            params = self._order_params(req)
        except ValueError as refusal:
            self._reject(state, str(refusal))
            return
        state.placing = True
        try:
            await self._place(state, params)
        except Exception:  # a bug, not a venue answer: logged and alerted, never raised
            log.exception("bybit.place_crashed", order_id=req.order_id)
            self._unconfirmed(state, "an unexpected error")
        finally:
            state.placing = False

    async def cancel(self, order_id: str) -> bool:
        """Cancel a working order (reason ``requested``); False when it is not working.

        Raises ``BybitError`` when Bybit cannot be asked (retries exhausted, breaker open).
        """
        state = self._orders_by_id.get(order_id)
        if state is None or state.status not in (
            OrderStatus.ACCEPTED,
            OrderStatus.PARTIALLY_FILLED,
        ):
            return False
        state.cancel_requested = True
        params = {
            "category": self.category,
            "symbol": state.req.symbol,
            "orderLinkId": state.req.client_order_id,
        }
        try:
            await self._call(self._groups[ORDERS], "cancel_order", params)
        except BybitError as error:
            if error.ret_code not in ORDER_GONE_RET_CODES:
                state.cancel_requested = False
                raise
            # Filled or cancelled in the meantime (or our own retried cancel went through).
            await self._refresh(state)
            return _cancelled(state)
        await self._refresh(state)
        if state.status not in _DONE:  # Bybit's order query lags behind the cancel
            self._finish(state, OrderStatus.CANCELLED, _requested())
        return _cancelled(state)

    async def open_orders(self) -> Sequence[OrderEvent]:
        """Bybit's working orders of ``category`` as ``OrderEvent`` values (not published)."""
        params: dict[str, object] = {"category": self.category}
        if self.config.category is BybitCategory.LINEAR:
            params["settleCoin"] = self.quote
        records = await self._pages(self._groups[ACCOUNT], "get_open_orders", params)
        events = []
        for record in records:
            state = self._orders_by_link.get(str(record.get("orderLinkId") or ""))
            state = self._foreign(record) if state is None else _copy(state)
            try:
                check_order(record)
                _absorb(state, record)
            except BadRecordError as bad:
                self._refused(state.req.order_id, "order", str(bad), record)
                continue
            events.append(self._event(state, _status_of(record, state)))
        return events

    async def positions(self) -> Sequence[VenuePosition]:
        """Bybit's non-zero positions (linear); spot has none (balances are in ``wallet``)."""
        if self.config.category is not BybitCategory.LINEAR:
            return []
        params = {"category": self.category, "settleCoin": self.quote}
        records = await self._pages(self._groups[ACCOUNT], "get_positions", params)
        positions = []
        for record in records:
            size = _dec(record.get("size")) or _ZERO
            if not size:
                continue
            qty = -size if record.get("side") == "Sell" else size
            positions.append(
                VenuePosition(
                    str(record["symbol"]),
                    qty,
                    _dec(record.get("avgPrice")) or _ZERO,
                    _dec(record.get("markPrice")),
                    _dec(record.get("unrealisedPnl")),
                )
            )
        return positions

    async def wallet(self) -> Wallet:
        """The unified account's balance and equity in the quote coin.

        Raises ``BadRecordError`` (logged and alerted) when Bybit's balance is not a number.
        """
        return await self._wallet() or Wallet(self.quote, _ZERO, _ZERO)

    async def _wallet(self) -> Wallet | None:
        """``wallet()``, or None when Bybit lists no balance of the quote coin."""
        params = {"accountType": "UNIFIED", "coin": self.quote}
        group = self._groups[ACCOUNT]
        result = await self._call(group, "get_wallet_balance", params, check=_has_list)
        for account in result["list"]:
            coins = account.get("coin")
            for coin in coins if isinstance(coins, list) else ():
                if isinstance(coin, Mapping) and coin.get("coin") == self.quote:
                    return self._wallet_of(coin)
        return None

    def _wallet_of(self, coin: Mapping[str, Any]) -> Wallet:
        """The quote coin's record as a ``Wallet``; a balance that is not a number is refused."""
        cash, equity = _dec(coin.get("walletBalance")), _dec(coin.get("equity"))
        problem = ""
        if cash is None:
            problem = f"{self.quote} walletBalance is not a number: {coin.get('walletBalance')!r}"
        elif equity is None and coin.get("equity") not in (None, ""):
            problem = f"{self.quote} equity is not a number: {coin.get('equity')!r}"
        if problem:
            self._refused("", "wallet", problem, coin)
            raise BadRecordError(problem)
        assert cash is not None  # noqa: S101 - refused above
        return Wallet(self.quote, cash, cash if equity is None else equity)

    # -- fills: the private WebSocket, and poll() ----------------------------------------

    async def poll(self) -> int:
        """Ask Bybit about every unfinished order; publish what changed. Returns the events.

        Open orders come from ``/v5/order/realtime`` per symbol; an order no longer open is
        looked up by ``orderLinkId`` (realtime, then history) for its final fills. An order left
        unconfirmed by a failed submit is accepted when found, rejected when Bybit has no such
        order. Raises ``BybitError`` when Bybit cannot be asked (what was learnt is published).
        """
        before = self.events
        pending: dict[str, list[_Order]] = {}
        for state in self._orders_by_id.values():
            if not state.placing:
                pending.setdefault(state.req.symbol, []).append(state)
        if not pending:
            return 0
        account = self._groups[ACCOUNT]
        for symbol, states in pending.items():
            params = {"category": self.category, "symbol": symbol}
            records = await self._pages(account, "get_open_orders", params)
            by_link = {str(r.get("orderLinkId") or ""): r for r in records}
            for state in states:
                record = by_link.get(state.req.client_order_id)
                if record is None:
                    record = await self._find(state)
                if record is not None:
                    self._apply(state, record, f"{BybitReason.CONFIRMED}: found by poll()")
                elif state.status is OrderStatus.SUBMITTED:
                    reason = f"{BybitReason.VENUE_UNAVAILABLE}: Bybit has no such order"
                    self._reject(state, reason)
        return self.events - before

    async def resync(self) -> int:
        """The private stream's catch-up over HTTP after every (re)connect.

        ``poll()``, then Bybit's wallet as the drift baseline (best effort: without it the
        stream's first ``wallet`` record is the baseline; while the books are being recovered,
        ``state:recovery`` starts the comparison from it), then Bybit's listing of what the
        account holds for the drift check (best effort too: ``_drift_listing``).
        """
        published = await self.poll()
        try:
            wallet = await self._wallet()
        except (BybitError, BadRecordError) as exc:  # a bad balance is no baseline
            log.warning("bybit.wallet_baseline_failed", error=str(exc))
        else:
            if wallet is not None:
                self.drift.wallet_baseline(wallet.cash)
        await self._drift_listing()
        return published

    async def _drift_listing(self) -> None:
        """Give the drift check Bybit's complete holdings: positions (linear), coins (spot).

        Linear: every position of ``settleCoin`` = quote (``/v5/position/list``); spot: every
        coin balance of the unified account (``/v5/account/wallet-balance`` without ``coin``:
        the coins it holds). Each record is checked as the stream checks its own; an unusable
        one is logged (``bybit.listing_skipped``, with the problem), counted in
        ``snapshot_skipped`` and skipped, and then the listing is not complete: the good
        records update the view, but what it leaves out is not taken as flat. A failed
        request is logged (``bybit.listing_failed``) and leaves the view as it was. What the
        stream pushes while the request is on its way is kept over what the listing says.
        """
        spot = self.config.category is BybitCategory.SPOT
        self.drift.begin_listing()
        try:
            if spot:
                params: dict[str, object] = {"accountType": "UNIFIED"}
                result = await self._call(self._groups[ACCOUNT], "get_wallet_balance", params)
                records: object = result.get("list")
            else:
                params = {"category": self.category, "settleCoin": self.quote}
                records = await self._pages(self._groups[ACCOUNT], "get_positions", params)
        except BybitError as exc:
            log.warning("bybit.listing_failed", error=exc.message)
            return
        kind = "wallet" if spot else "position"
        if not isinstance(records, list):
            self._listing_skipped(kind, "list missing or not a list", records)
            return
        complete = True
        if spot:
            balances: dict[str, Decimal] = {}
            for record in records:
                try:
                    balances.update(parse_wallet(record).balances)
                except BadRecordError as bad:
                    self._listing_skipped(kind, str(bad), record)
                    complete = False
            self.drift.listed_balances(balances, complete=complete)
            return
        listing: dict[str, dict[int, Decimal]] = {}
        for record in records:
            try:
                position = parse_position(record)
            except BadRecordError as bad:
                self._listing_skipped(kind, str(bad), record)
                complete = False
                continue
            listing.setdefault(position.symbol, {})[position.position_idx] = position.qty
        self.drift.listed_positions(listing, complete=complete)

    def _listing_skipped(self, kind: str, problem: str, record: object) -> None:
        self.snapshot_skipped += 1
        log.warning(
            "bybit.listing_skipped", problem=f"{kind} record: {problem}", record=str(record)[:120]
        )

    def apply_order_update(self, record: Mapping[str, Any]) -> bool:
        """Apply one Bybit order record (REST order list item or private WS ``order`` item).

        Publishes the fills and the end state it shows that were not published yet. Records of
        orders this venue did not place, or has finished with, are ignored (False).
        """
        link = str(record.get("orderLinkId") or "")
        state = self._orders_by_link.get(link) if link else None
        if state is None:
            self._not_followed(link, str(record.get("orderId") or ""), "order")
            return False
        self._apply(state, record)
        return True

    def apply_execution(self, fill: Execution) -> bool:
        """Book one trade of the private ``execution`` topic; False when nothing was published.

        A trade is booked once: an ``execId`` seen before is dropped, and so is a trade that
        cumulative figures (an ``order`` record, ``poll()``) already booked. Its place in the
        order is ``orderQty - leavesQty``; one that does not follow on what is booked (an
        earlier trade not seen yet) is left to the order's next cumulative record.
        """
        if fill.exec_id in self._exec_ids:
            self.exec_duplicates += 1
            log.debug("bybit.execution_duplicate", exec_id=fill.exec_id)
            return False
        link = fill.order_link_id
        state = self._orders_by_link.get(link) if link else None
        if state is None:
            self._not_followed(link, fill.order_id, "execution")
            return False
        qty = state.req.qty
        problem = ""
        if fill.order_qty is not None and fill.order_qty != qty:
            problem = f"orderQty {fill.order_qty} is not the order's qty {qty}"
        elif fill.qty > qty:
            problem = f"execQty {fill.qty} is more than the order's qty {qty}: an overfill"
        if problem:
            self._refused(state.req.order_id, "execution", f"{fill.exec_id}: {problem}", fill)
            return False
        self._remember_exec(fill.exec_id)
        end = (fill.order_qty or state.req.qty) - fill.leaves_qty
        if end <= state.filled:
            self.exec_duplicates += 1
            log.debug("bybit.execution_covered", exec_id=fill.exec_id, order=state.req.order_id)
            return False
        if end - fill.qty != state.filled:
            log.info(
                "bybit.execution_out_of_order",
                exec_id=fill.exec_id,
                order_id=state.req.order_id,
                booked=str(state.filled),
                trade_ends_at=str(end),
                qty=str(fill.qty),
            )
            return False
        self._accept(state)
        if fill.fee_currency and fill.fee_currency != state.template.fee_asset:
            state.template = attrs.evolve(state.template, fee_asset=fill.fee_currency)
        fee = fill.fee  # negative: a maker rebate, booked as one
        state.filled += fill.qty
        state.notional += fill.qty * fill.price
        state.fees += fee
        done = state.filled >= state.req.qty
        state.status = OrderStatus.FILLED if done else OrderStatus.PARTIALLY_FILLED
        fill_figures = (fill.qty, fill.price, fee)
        self._publish(state, state.status, fill=fill_figures, exchange_ts=fill.exec_time)
        if done:
            self._forget(state)
        return True

    def apply_position(self, record: VenuePositionRecord) -> None:
        """Take one private ``position`` record into the drift check.

        Records of another category are not (and spot has no positions: its holdings are
        coin balances, on the ``wallet`` topic).
        """
        if self.config.category is BybitCategory.SPOT:
            return
        if record.category and record.category != self.category:
            return
        self.drift.venue_position(record.symbol, record.position_idx, record.qty)

    def apply_wallet(self, record: WalletRecord) -> None:
        """Take one private ``wallet`` record into the drift check.

        The quote coin's balance is the wallet's; on spot every coin's balance also goes in
        (a base coin's balance is the position of its symbol).
        """
        balance = record.balances.get(self.quote.upper())
        if balance is not None:
            self.drift.venue_wallet(balance)
        if self.config.category is BybitCategory.SPOT:
            self.drift.venue_balances(record.balances)

    def stream_alert(self, severity: Severity, code: str, message: str) -> None:
        """Publish an alert of the private stream (group ``stream``)."""
        self._alert(severity, code, message, "stream")

    def _drift_alert(
        self, severity: Severity, code: str, message: str, labels: Mapping[str, str]
    ) -> None:
        self._alert(severity, f"{VENUE}_{code}", message, "stream", labels)

    def _remember_exec(self, exec_id: str) -> None:
        remember(self._exec_ids, exec_id, None, EXEC_IDS_KEPT)

    def _not_followed(self, link: str, order_id: str, topic: str) -> None:
        """Log a stream record of an order this venue does not follow (once per foreign one)."""
        if link and link in self._client_ids:
            log.debug("bybit.finished_order_record", order_link_id=link, topic=topic)
            return
        self.foreign_records += 1
        key = link or order_id
        if key in self._foreign_seen:
            return
        if len(self._foreign_seen) >= FOREIGN_IDS_KEPT:
            self._foreign_seen.clear()
        self._foreign_seen.add(key)
        log.info("bybit.foreign_order", order_id=order_id, order_link_id=link, topic=topic)

    def _refused(self, order_id: str, kind: str, problem: str, record: object) -> None:
        """Log and alert a record refused as unusable; nothing was changed or booked from it."""
        self.records_refused += 1
        log.warning(
            "bybit.record_refused",
            order_id=order_id,
            topic=kind,
            problem=problem,
            record=str(record)[:120],
        )
        whose = f" of order {order_id}" if order_id else ""
        message = (
            f"a bybit {kind} record{whose} was refused: {problem}; nothing changed or booked "
            "from it (the next good record is)"
        )
        group = ACCOUNT if kind == "wallet" else ORDERS
        extra = {"order_id": order_id} if order_id else None
        self._alert(Severity.WARNING, "bybit_record_refused", message, group, extra)

    # -- placing -------------------------------------------------------------------------

    def _order_params(self, req: OrderRequest) -> dict[str, object]:
        """The place_order arguments of ``req``; ``ValueError(reason)`` when it cannot be sent."""
        if not (req.qty.is_finite() and req.qty > 0):
            raise ValueError(f"{OrderReason.INVALID_QTY}: qty must be > 0, got {req.qty}")
        linear = self.config.category is BybitCategory.LINEAR
        params: dict[str, object] = {
            "category": self.category,
            "symbol": req.symbol,
            "side": _SIDES[req.side],
            "orderType": "Limit" if req.order_type is OrderType.LIMIT else "Market",
            "qty": _text(req.qty),
            "orderLinkId": req.client_order_id,
        }
        price = req.limit_price if req.order_type is OrderType.LIMIT else req.stop_price
        if req.order_type is not OrderType.MARKET and not (
            price is not None and price.is_finite() and price > 0
        ):
            kind = req.order_type.value
            raise ValueError(f"{OrderReason.MISSING_PRICE}: a {kind} order needs a price > 0")
        if req.order_type is OrderType.LIMIT:
            params.update(price=_text(price), timeInForce="GTC")
        elif req.order_type is OrderType.STOP:
            params["triggerPrice"] = _text(price)
            if linear:  # 1: triggers when the price rises to it, 2: when it falls to it
                params.update(triggerDirection=1 if req.side is Side.BUY else 2)
                params.update(triggerBy="LastPrice")
            else:
                params["orderFilter"] = "StopOrder"
        if not linear and req.order_type is not OrderType.LIMIT:
            params["marketUnit"] = "baseCoin"  # spot market buys count quote coin by default
        if linear and req.reduce_only:
            params["reduceOnly"] = True
        return params

    async def _place(self, state: _Order, params: Mapping[str, object]) -> None:
        """Place with retries; look the order up after every failure that may have placed it."""
        orders = self._groups[ORDERS]
        maybe_placed = False
        last: BybitError | None = None
        link = state.req.client_order_id

        def placed(result: Mapping[str, Any]) -> str:
            order_id, echoed = result.get("orderId"), result.get("orderLinkId")
            if not (isinstance(order_id, str) and order_id):
                return f"no orderId in the result: {str(result)[:80]}"
            if echoed not in (None, "", link):
                return f"orderLinkId {echoed!r} in the result is not ours ({link})"
            return ""

        for attempt in range(self.config.max_retries + 1):
            if attempt:
                assert last is not None  # noqa: S101 - set by the failed attempt before
                self.retries += 1
                await self._backoff(attempt, last)
                if last.ambiguous and await self._adopt(state, last):
                    return
            try:
                result = await self._attempt(orders, "place_order", params, check=placed)
            except CircuitOpenError as error:
                last = error
                break
            except BybitError as error:
                if error.duplicate_link_id:
                    self._accept(state, f"{BybitReason.CONFIRMED}: {error.ret_msg}")
                    return
                if not error.transient:
                    self._reject(state, _rejection(error))
                    return
                maybe_placed = maybe_placed or error.ambiguous
                last = error
                log.warning(
                    "bybit.place_retry",
                    order_id=state.req.order_id,
                    attempt=attempt + 1,
                    error=error.message,
                )
            else:
                log.info(
                    "bybit.accepted", order_id=state.req.order_id, venue_id=result.get("orderId")
                )
                self._accept(state)
                return
        assert last is not None  # noqa: S101 - the loop ran at least once
        await self._give_up(state, last, maybe_placed=maybe_placed)

    async def _adopt(self, state: _Order, after: BybitError) -> bool | None:
        """Look ``state`` up by ``orderLinkId``; when found, report what Bybit has.

        True: found; False: Bybit does not have it; None: the lookup itself failed.
        """
        try:
            record = await self._find(state)
        except BybitError as error:
            log.warning("bybit.lookup_failed", order_id=state.req.order_id, error=error.message)
            return None
        if record is None:
            return False
        self.confirmed += 1
        log.info("bybit.recovered", order_id=state.req.order_id, after=after.message)
        self._apply(state, record, f"{BybitReason.CONFIRMED}: found by orderLinkId after {after}")
        return True

    async def _give_up(self, state: _Order, last: BybitError, *, maybe_placed: bool) -> None:
        """Retries are over: reject, unless Bybit may have the order (then ask it once more)."""
        if maybe_placed:
            found = await self._adopt(state, last)
            if found:
                return
            if found is None:
                self._unconfirmed(state, last.message)
                return
        code = (
            BybitReason.CIRCUIT_OPEN
            if isinstance(last, CircuitOpenError)
            else BybitReason.VENUE_UNAVAILABLE
        )
        log.error("bybit.place_failed", order_id=state.req.order_id, error=last.message)
        self._reject(state, f"{code}: {last.message}")

    def _unconfirmed(self, state: _Order, after: str) -> None:
        """Alert that nobody knows whether Bybit has ``state``.

        It stays submitted (pending for the RiskManager) until ``poll()`` finds out.
        """
        message = (
            f"order {state.req.order_id} ({state.req.client_order_id}) may or may not be on "
            f"Bybit after {after}; poll() will find out"
        )
        log.warning("bybit.order_unconfirmed", order_id=state.req.order_id, error=message)
        self._alert(Severity.WARNING, "bybit_order_unconfirmed", message, ORDERS)

    async def _find(self, state: _Order) -> Mapping[str, Any] | None:
        """Bybit's record of ``state`` by ``orderLinkId`` (realtime, then history), or None."""
        account = self._groups[ACCOUNT]
        params = {
            "category": self.category,
            "symbol": state.req.symbol,
            "orderLinkId": state.req.client_order_id,
        }
        for method in ("get_open_orders", "get_order_history"):
            result = await self._attempt(account, method, params, check=_has_list)
            for record in result["list"]:
                if record.get("orderLinkId") == state.req.client_order_id:
                    return dict(record)
        return None

    async def _refresh(self, state: _Order) -> None:
        """Apply Bybit's current record of ``state``, if it can be had (best effort)."""
        try:
            record = await self._find(state)
        except BybitError as error:
            log.warning("bybit.refresh_failed", order_id=state.req.order_id, error=error.message)
            return
        if record is not None:
            self._apply(state, record)

    # -- requests ------------------------------------------------------------------------

    async def _attempt(
        self,
        group: _Group,
        method: str,
        params: Mapping[str, object],
        *,
        check: Callable[[Mapping[str, Any]], str] | None = None,
    ) -> dict[str, Any]:
        """One request through ``group``'s breaker, in a worker thread; its ``result``.

        Only an answer with ``retCode`` 0 (and a ``result`` that ``check`` finds nothing wrong
        with) is a success: another one is an unreadable answer, transient and ambiguous.
        """
        breaker = group.breaker
        trial = breaker.acquire()
        call = getattr(group.http, method)
        try:
            try:
                # pybit edits the dict it is given (casts values): a fresh copy per attempt.
                response = await asyncio.to_thread(call, **dict(params))
            except Exception as exc:
                error = _classify(exc, group.name, method)
                if error is None:
                    raise
                self._count(group, error)
                raise error from exc
            result, problem = _answer(response)
            if not problem and check is not None:
                problem = check(result)
            if problem:
                where = f"bybit {group.name} {method}"
                error = BybitError(
                    f"{where}: unreadable answer: {problem}", transient=True, ambiguous=True
                )
                self._count(group, error)
                raise error
            breaker.succeeded()
            return result
        finally:
            if trial:  # no-op once counted; frees the trial after a cancel or a bug
                breaker.abandoned()

    def _count(self, group: _Group, error: BybitError) -> None:
        """Tell ``group``'s breaker how a request ended (a business answer is a success)."""
        if not error.venue_fault:
            group.breaker.succeeded()
        elif group.breaker.failed():
            self._breaker_opened(group, error)

    async def _call(
        self,
        group: _Group,
        method: str,
        params: Mapping[str, object],
        *,
        check: Callable[[Mapping[str, Any]], str] | None = None,
    ) -> dict[str, Any]:
        """``_attempt`` with retries of transient failures (for requests safe to repeat)."""
        attempt = 0
        while True:
            try:
                return await self._attempt(group, method, params, check=check)
            except CircuitOpenError:
                raise
            except BybitError as error:
                if not error.transient or attempt >= self.config.max_retries:
                    raise
                attempt += 1
                self.retries += 1
                log.warning("bybit.retry", method=method, attempt=attempt, error=error.message)
                await self._backoff(attempt, error)

    async def _pages(
        self, group: _Group, method: str, params: Mapping[str, object]
    ) -> list[Mapping[str, Any]]:
        """Every item of a paginated list answer (``limit`` + ``cursor``)."""
        items: list[Mapping[str, Any]] = []
        cursor = ""
        for _ in range(MAX_PAGES):
            page = {**params, "limit": QUERY_PAGE}
            if cursor:
                page["cursor"] = cursor
            result = await self._call(group, method, page, check=_has_list)
            items.extend(result["list"])
            cursor = str(result.get("nextPageCursor") or "")
            if not cursor:
                break
        return items

    async def _backoff(self, attempt: int, error: BybitError) -> None:
        """Sleep before retry ``attempt`` (1, 2 ...): full jitter, never over ``backoff_max_s``.

        A rate-limit answer that says when the limit resets is waited out, within the same cap.
        """
        cfg = self.config
        ceiling = min(cfg.backoff_max_s, cfg.backoff_initial_s * 2 ** (attempt - 1))
        delay = self._rng.uniform(0, ceiling)
        if error.retry_at_ms is not None:
            until_reset = (error.retry_at_ms - time.time() * 1000) / 1000
            delay = min(cfg.backoff_max_s, max(delay, until_reset))
        self.backoff_history.append(delay)
        del self.backoff_history[:-1000]
        await asyncio.sleep(delay)

    def _breaker_opened(self, group: _Group, error: BybitError) -> None:
        breaker = group.breaker
        message = (
            f"Bybit {group.name} requests failed {breaker.failures} times in a row "
            f"(last: {error.message}); they fail fast for {breaker.reset_s:g} s, "
            "then one is let through"
        )
        log.error("bybit.breaker_open", group=group.name, error=error.message)
        self._alert(Severity.CRITICAL, "bybit_breaker_open", message, group.name)

    def _alert(
        self,
        severity: Severity,
        code: str,
        message: str,
        group: str,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        bus = self._bus
        labels = {"venue": VENUE, "group": group, **(extra or {})}
        bus.publish(OBSERVABILITY_ALERT, Alert(bus.meta(), severity, code, message, labels))

    # -- order events --------------------------------------------------------------------

    def _template(self, req: OrderRequest) -> OrderEvent:
        price = req.limit_price if req.order_type is OrderType.LIMIT else req.stop_price
        return OrderEvent(
            self._bus.meta(req.correlation_id),
            order_id=req.order_id,
            client_order_id=req.client_order_id,
            venue=VENUE,
            symbol=req.symbol,
            side=req.side,
            order_type=req.order_type,
            status=OrderStatus.SUBMITTED,
            qty=req.qty,
            price=None if req.order_type is OrderType.MARKET else price,
            fee_asset=self.quote,
            intent_id=req.intent_id,
            scenario_id=req.scenario_id,
        )

    def _foreign(self, record: Mapping[str, Any]) -> _Order:
        """An ``_Order`` for a Bybit order this venue did not place (manual, before a restart)."""
        link = str(record.get("orderLinkId") or "")
        trigger = _dec(record.get("triggerPrice"))
        limit = _dec(record.get("price")) if record.get("orderType") == "Limit" else None
        req = OrderRequest(
            order_id=link or str(record.get("orderId") or ""),
            client_order_id=link,
            symbol=str(record.get("symbol") or ""),
            side=Side.SELL if record.get("side") == "Sell" else Side.BUY,
            order_type=(
                OrderType.STOP
                if trigger
                else OrderType.LIMIT
                if limit is not None
                else OrderType.MARKET
            ),
            qty=_dec(record.get("qty")) or _ZERO,
            limit_price=limit,
            stop_price=trigger or None,
            reduce_only=bool(record.get("reduceOnly")),
        )
        return _Order(req, self._template(req))

    def _event(
        self,
        state: _Order,
        status: OrderStatus,
        *,
        reason: str = "",
        fill: tuple[Decimal, Decimal, Decimal] | None = None,
        exchange_ts: int | None = None,
    ) -> OrderEvent:
        """``state`` as an event; ``fill`` is this fill's ``(qty, price, fee)``."""
        last_qty, last_price, fee = fill if fill is not None else (None, None, _ZERO)
        return attrs.evolve(
            state.template,
            meta=self._bus.meta(state.req.correlation_id),
            status=status,
            filled_qty=state.filled,
            avg_fill_price=state.avg_price,
            last_fill_qty=last_qty,
            last_fill_price=last_price,
            fee=fee,
            reason=reason,
            exchange_ts=exchange_ts,
        )

    def _publish(
        self,
        state: _Order,
        status: OrderStatus,
        *,
        reason: str = "",
        fill: tuple[Decimal, Decimal, Decimal] | None = None,
        exchange_ts: int | None = None,
    ) -> None:
        self.events += 1
        event = self._event(state, status, reason=reason, fill=fill, exchange_ts=exchange_ts)
        self._bus.publish(EXEC_ORDER_EVENT, event)

    def _accept(self, state: _Order, reason: str = "") -> None:
        if state.status is not OrderStatus.SUBMITTED:
            return
        self.accepted += 1
        state.status = OrderStatus.ACCEPTED
        self._publish(state, OrderStatus.ACCEPTED, reason=reason)

    def _reject(self, state: _Order, reason: str) -> None:
        self.rejected += 1
        log.info("bybit.rejected", order_id=state.req.order_id, reason=reason)
        self._finish(state, OrderStatus.REJECTED, reason)

    def _finish(self, state: _Order, status: OrderStatus, reason: str = "") -> None:
        state.status = status
        self._forget(state)
        self._publish(state, status, reason=reason)

    def _track(self, state: _Order) -> None:
        self._orders_by_id[state.req.order_id] = state
        self._orders_by_link[state.req.client_order_id] = state

    def _forget(self, state: _Order) -> None:
        self._orders_by_id.pop(state.req.order_id, None)
        self._orders_by_link.pop(state.req.client_order_id, None)

    def _apply(self, state: _Order, record: Mapping[str, Any], accept_reason: str = "") -> None:
        """Publish what ``record`` (Bybit's view of the order) shows that was not published.

        ``accept_reason`` goes on the ``accepted`` event when this record is the first word
        that Bybit has the order.
        """
        if state.status in _DONE:
            return
        try:  # the whole record, before anything changes: a bad one changes nothing
            check_order(record)
            figures = _figures(state, record)
        except BadRecordError as bad:
            self._refused(state.req.order_id, "order", str(bad), record)
            return
        venue_status = str(record.get("orderStatus") or "")
        if venue_status == "Rejected" and not state.filled:
            detail = record.get("rejectReason") or "rejected by Bybit"
            self._reject(state, f"{BybitReason.VENUE_REJECTED}: {detail}")
            return
        self._accept(state, accept_reason)
        fee_asset = str(record.get("feeCurrency") or "")
        if fee_asset and fee_asset != state.template.fee_asset:
            state.template = attrs.evolve(state.template, fee_asset=fee_asset)
        before = (state.filled, state.notional, state.fees)
        if figures is not None:
            state.filled, state.notional, state.fees = figures
        ts = _int(record.get("updatedTime"))
        qty = state.filled - before[0]
        if qty > 0:
            price = _ROUND.divide(state.notional - before[1], qty)
            fee = state.fees - before[2]  # negative: a rebate
            done = venue_status == "Filled" or state.filled >= state.req.qty
            state.status = OrderStatus.FILLED if done else OrderStatus.PARTIALLY_FILLED
            self._publish(state, state.status, fill=(qty, price, fee), exchange_ts=ts)
            if done:
                self._forget(state)
                return
        if venue_status in _CANCELLED_STATES:
            if state.cancel_requested:
                reason = _requested()
            else:
                why = record.get("cancelType") or record.get("rejectReason") or venue_status
                reason = f"{BybitReason.VENUE_CANCELLED}: {why}"
            self._finish(state, OrderStatus.CANCELLED, reason)

    # -- Stateful ------------------------------------------------------------------------

    def export_state(self) -> dict[str, Any]:
        """Unfinished orders, seen client order ids and recent execIds (JSON-able).

        ``exec_ids`` (oldest first, at most ``EXEC_IDS_KEPT``) is left out while there is none.
        """
        state: dict[str, Any] = {
            "open_orders": [_export(state) for state in self._orders_by_id.values()],
            "client_order_ids": list(self._client_ids),  # oldest first
        }
        if self._exec_ids:
            state["exec_ids"] = list(self._exec_ids)
        return state

    def restore_state(self, state: Mapping[str, Any]) -> None:
        """Replace the orders and seen ids with exported ones."""
        orders = [self._restored(item) for item in state["open_orders"]]
        kept = [str(c) for c in state["client_order_ids"]][-CLIENT_IDS_KEPT:]
        self._client_ids = dict.fromkeys(kept)
        exec_ids = [str(e) for e in state.get("exec_ids", ())]
        self._exec_ids = dict.fromkeys(exec_ids[-EXEC_IDS_KEPT:])
        self._orders_by_id, self._orders_by_link = {}, {}
        for order in orders:
            self._track(order)

    def replay_event(self, topic: str, payload: Any) -> None:
        """Apply one of this venue's journaled order events (see the module docstring)."""
        if not self.active or topic != EXEC_ORDER_EVENT.name:
            return
        if isinstance(payload, OrderEvent) and payload.venue == VENUE:
            self._replay_order(payload)

    def recovered(self) -> None:
        """Nothing to announce: ``reconcile`` asks Bybit what became of the orders."""
        if self._orders_by_id:
            log.info("bybit.recovered_orders", orders=len(self._orders_by_id))

    def _replay_order(self, event: OrderEvent) -> None:
        status = event.status
        state = self._orders_by_id.get(event.order_id)
        if state is None:
            if status not in (OrderStatus.SUBMITTED, OrderStatus.ACCEPTED):
                return  # the end of an order the state no longer holds
            state = self._restored(_export_event(event))
            self._track(state)
            if event.client_order_id:
                remember(self._client_ids, event.client_order_id, None, CLIENT_IDS_KEPT)
        if event.fee_asset and event.fee_asset != state.template.fee_asset:
            state.template = attrs.evolve(state.template, fee_asset=event.fee_asset)
        qty, price = event.last_fill_qty, event.last_fill_price
        if qty and price is not None:
            if event.filled_qty <= state.filled:
                return
            state.notional += qty * price
            state.filled = event.filled_qty
            state.fees += event.fee
        if status is OrderStatus.SUBMITTED:
            return
        if status is OrderStatus.ACCEPTED and state.status is not OrderStatus.SUBMITTED:
            return
        state.status = status
        if status in _DONE:
            self._forget(state)

    def _restored(self, item: Mapping[str, Any]) -> _Order:
        """An order of ``export_state`` (or of a replayed event) as live state."""
        order_type = OrderType(item["order_type"])
        price = None if item["price"] is None else Decimal(item["price"])
        req = OrderRequest(
            order_id=str(item["order_id"]),
            client_order_id=str(item["client_order_id"]),
            symbol=str(item["symbol"]),
            side=Side(item["side"]),
            order_type=order_type,
            qty=Decimal(item["qty"]),
            limit_price=price if order_type is OrderType.LIMIT else None,
            stop_price=price if order_type is OrderType.STOP else None,
            intent_id=item["intent_id"],
            scenario_id=item["scenario_id"],
            correlation_id=item["correlation_id"],
        )
        state = _Order(req, attrs.evolve(self._template(req), fee_asset=str(item["fee_asset"])))
        state.status = OrderStatus(item["status"])
        state.filled = Decimal(item["filled"])
        state.notional = Decimal(item["notional"])
        state.fees = Decimal(item["fees"])
        return state

    # -- Reconciling ---------------------------------------------------------------------

    async def reconcile(self, policy: str) -> list[str]:
        """Compare the state with Bybit's open orders and positions; one line per action.

        ``policy`` (``alert``, ``adopt``, ``cancel``) says what to do with an open order Bybit
        has and the state does not. Raises ``BybitError`` when Bybit cannot be asked.
        """
        chosen = ReconcilePolicy(policy)
        if not self.active:
            return []
        params: dict[str, object] = {"category": self.category}
        if self.config.category is BybitCategory.LINEAR:
            params["settleCoin"] = self.quote
        records = await self._pages(self._groups[ACCOUNT], "get_open_orders", params)
        known = list(self._orders_by_id.values())
        lines: list[str] = []
        listed: set[str] = set()
        for record in records:
            link = str(record.get("orderLinkId") or "")
            state = self._orders_by_link.get(link) if link else None
            if state is None:
                lines.append(await self._unknown(record, chosen))
                continue
            listed.add(state.req.order_id)
            before = self.events
            self._apply(state, record, f"{BybitReason.CONFIRMED}: found by reconciliation")
            if self.events != before:
                lines.append(f"order {state.req.order_id}: open on Bybit, {_progress(state)}")
        unlisted = [s for s in known if s.req.order_id not in listed]
        lines.extend([await self._not_listed(state) for state in unlisted])
        lines.extend(await self._compare_positions())
        if lines:
            message = f"reconciliation with Bybit ({chosen.value}): " + "; ".join(lines)
            self._alert(Severity.WARNING, "bybit_reconciled", message, ACCOUNT)
        return lines

    async def _unknown(self, record: Mapping[str, Any], policy: ReconcilePolicy) -> str:
        """Adopt, cancel or only report an open order the state does not know."""
        link = str(record.get("orderLinkId") or "")
        what = (
            f"unknown open order {record.get('orderId')} (orderLinkId {link or '-'}: "
            f"{record.get('symbol')} {record.get('side')} {record.get('qty')} "
            f"{record.get('orderType')}, filled {record.get('cumExecQty') or '0'})"
        )
        if policy is ReconcilePolicy.ADOPT:
            if not link:
                return f"{what}: no orderLinkId to follow it by, left alone"
            state = self._foreign(record)
            remember(self._client_ids, link, None, CLIENT_IDS_KEPT)
            self._track(state)
            self._apply(state, record, f"{BybitReason.ADOPTED}: open on Bybit at recovery")
            return f"{what}: adopted, {_progress(state)}"
        if policy is ReconcilePolicy.CANCEL:
            params: dict[str, object] = {
                "category": self.category,
                "symbol": str(record.get("symbol") or ""),
            }
            if link:
                params["orderLinkId"] = link
            else:
                params["orderId"] = str(record.get("orderId") or "")
            try:
                await self._call(self._groups[ORDERS], "cancel_order", params)
            except BybitError as error:
                if error.ret_code not in ORDER_GONE_RET_CODES:
                    raise
                return f"{what}: gone before it could be cancelled"
            return f"{what}: cancelled"
        return f"{what}: left alone (policy alert)"

    async def _not_listed(self, state: _Order) -> str:
        """What became of an order the state holds open and Bybit does not list as open."""
        order_id = state.req.order_id
        record = await self._find(state)
        if record is not None:
            self._apply(state, record, f"{BybitReason.CONFIRMED}: found by reconciliation")
            return f"order {order_id}: not open on Bybit, {_progress(state)}"
        if state.status is OrderStatus.SUBMITTED:
            self._reject(state, f"{BybitReason.VENUE_UNAVAILABLE}: Bybit has no such order")
            return f"order {order_id}: never reached Bybit, rejected"
        return (
            f"order {order_id}: {state.status.value} in the state, but Bybit has no record "
            "of it; kept for poll(), nothing booked"
        )

    async def _compare_positions(self) -> list[str]:
        """A line per symbol where Bybit's position is not the portfolio's (linear only)."""
        if self.config.category is not BybitCategory.LINEAR:
            return []
        venue = {p.symbol: p.qty for p in await self.positions()}
        lines = []
        for symbol in sorted(set(venue) | set(self._portfolio)):
            theirs, ours = venue.get(symbol, _ZERO), self._portfolio.get(symbol, _ZERO)
            if theirs != ours:
                lines.append(
                    f"position {symbol}: Bybit has {theirs}, the portfolio {ours}; nothing booked"
                )
        return lines


# -- helpers ---------------------------------------------------------------------------------


def _export(state: _Order) -> dict[str, Any]:
    req, template = state.req, state.template
    return {
        "order_id": req.order_id,
        "client_order_id": req.client_order_id,
        "symbol": req.symbol,
        "side": req.side.value,
        "order_type": req.order_type.value,
        "qty": str(req.qty),
        "price": None if template.price is None else str(template.price),
        "intent_id": req.intent_id,
        "scenario_id": req.scenario_id,
        "correlation_id": req.correlation_id,
        "status": state.status.value,
        "filled": str(state.filled),
        "notional": str(state.notional),
        "fees": str(state.fees),
        "fee_asset": template.fee_asset,
    }


def _export_event(event: OrderEvent) -> dict[str, Any]:
    """The ``_export`` shape of the order an event shows, before any fill."""
    return {
        "order_id": event.order_id,
        "client_order_id": event.client_order_id,
        "symbol": event.symbol,
        "side": event.side.value,
        "order_type": event.order_type.value,
        "qty": str(event.qty),
        "price": None if event.price is None else str(event.price),
        "intent_id": event.intent_id,
        "scenario_id": event.scenario_id,
        "correlation_id": event.meta.correlation_id,
        "status": OrderStatus.SUBMITTED.value,
        "filled": "0",
        "notional": "0",
        "fees": "0",
        "fee_asset": event.fee_asset,
    }


def _progress(state: _Order) -> str:
    """How far an order got, for a reconciliation line."""
    text = f"{state.status.value}, filled {state.filled} of {state.req.qty}"
    return text if state.avg_price is None else f"{text} at {state.avg_price}"


def _required_env(environ: Mapping[str, str], name: str, key: str, what: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        msg = (
            f'execution.venue = "bybit" needs the Bybit {what} in the environment variable '
            f"{name} (named by execution.bybit.{key}), which is not set"
        )
        raise BybitConfigError(msg)
    return value


def _classify(exc: Exception, group: str, method: str) -> BybitError | None:
    """What a failed pybit call means; None for a bug (not a venue problem)."""
    from pybit.exceptions import FailedRequestError, InvalidRequestError  # noqa: PLC0415 - see _connect

    where = f"bybit {group} {method}"
    if isinstance(exc, InvalidRequestError):  # Bybit answered with a retCode
        return _ret_code_error(exc, where)
    if isinstance(exc, FailedRequestError):
        status = int(exc.status_code)
        if status == 409 and exc.resp_headers is None:  # pybit's "could not decode JSON"
            return BybitError(f"{where}: unreadable answer", transient=True, ambiguous=True)
        return BybitError(
            f"{where}: HTTP {status}",
            transient=status == 429 or status >= 500,
            ambiguous=status >= 500,  # a gateway may have passed the request on
            http_status=status,
            retry_at_ms=_reset_ms(exc.resp_headers) if status == 429 else None,
        )
    if isinstance(exc, OSError):  # requests' exceptions are OSErrors: timeouts, lost connections
        kind = "timed out" if "Timeout" in type(exc).__name__ else "connection failed"
        return BybitError(f"{where}: {kind} ({type(exc).__name__})", transient=True, ambiguous=True)
    if isinstance(exc, AttributeError | TypeError | KeyError) and _in_pybit_answer(exc):
        # JSON that is not Bybit's envelope ([], null, "ok", no retMsg): pybit trips over it
        detail = f"{type(exc).__name__}: {exc}"
        return BybitError(f"{where}: unreadable answer ({detail})", transient=True, ambiguous=True)
    return None


def _ret_code_error(exc: Any, where: str) -> BybitError:
    """What pybit's ``InvalidRequestError`` (an answer with a non-zero retCode) means."""
    code, text = exc.status_code, str(exc.message)
    if isinstance(code, bool) or not isinstance(code, int):
        return BybitError(
            f"{where}: unreadable answer: retCode {code!r} is not an integer ({text})",
            transient=True,
            ambiguous=True,
        )
    rate_limited = code in RATE_LIMIT_RET_CODES
    transient = code in TRANSIENT_RET_CODES
    return BybitError(
        f"{where}: {text} (retCode {code})",
        transient=transient,
        ambiguous=code in AMBIGUOUS_RET_CODES,
        venue_fault=transient or code in AUTH_RET_CODES,
        ret_code=code,
        ret_msg=text,
        retry_at_ms=_reset_ms(exc.resp_headers) if rate_limited else None,
    )


def _in_pybit_answer(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while pybit read an answer (``_handle_response``)."""
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "_handle_response" and "pybit" in code.co_filename:
            return True
        tb = tb.tb_next
    return False


def _answer(response: object) -> tuple[dict[str, Any], str]:
    """A pybit answer's ``result``, and what is wrong with the answer ("" when nothing).

    pybit takes an answer without a ``retCode`` for a success: here only ``retCode`` 0 is one.
    """
    if not isinstance(response, dict):
        return {}, f"not a JSON object: {type(response).__name__}"
    code = response.get("retCode")
    if isinstance(code, bool) or not isinstance(code, int) or code != 0:
        missing = "retCode" not in response
        return {}, "no retCode" if missing else f"retCode {code!r} is not 0"
    result = response.get("result")
    return (result, "") if isinstance(result, dict) else ({}, "result is not an object")


def _has_list(result: Mapping[str, Any]) -> str:
    """What is wrong with a listing's ``result`` ("" when its ``list`` is a list of objects)."""
    items = result.get("list")
    if not isinstance(items, list):
        return f"result has no list: {str(result)[:80]}"
    for n, item in enumerate(items):
        if not isinstance(item, Mapping):
            return f"list[{n}] is not an object: {str(item)[:40]}"
    return ""


def _reset_ms(headers: Any) -> int | None:
    """Bybit's rate-limit reset time from response headers (unix ms), if present."""
    if headers is None:
        return None
    return _int(headers.get(RATE_LIMIT_RESET_HEADER))


def _rejection(error: BybitError) -> str:
    if error.ret_code is not None:
        return f"{BybitReason.VENUE_REJECTED}: {error.ret_msg} (retCode {error.ret_code})"
    return f"{BybitReason.VENUE_REJECTED}: {error.message}"


def _cancelled(state: _Order) -> bool:
    return state.status is OrderStatus.CANCELLED


def _requested() -> str:
    return f"{OrderReason.REQUESTED}: cancelled on request"


def _absorb(state: _Order, record: Mapping[str, Any]) -> None:
    """Take the cumulative fill figures of ``record`` when they are ahead of ``state``.

    Raises ``BadRecordError`` (``state`` unchanged) as ``_figures`` does.
    """
    figures = _figures(state, record)
    if figures is not None:
        state.filled, state.notional, state.fees = figures


def _figures(state: _Order, record: Mapping[str, Any]) -> tuple[Decimal, Decimal, Decimal] | None:
    """``record``'s cumulative (filled, value, fees) when ahead of ``state``, else None.

    Raises ``BadRecordError`` when they cannot be booked: more filled than the order's
    quantity (an overfill), or more filled with no value or price that makes the new part's
    price positive.
    """
    filled = _dec(record.get("cumExecQty")) or _ZERO
    if filled <= state.filled:
        return None
    if filled > state.req.qty:
        msg = f"cumExecQty {filled} is more than the order's qty {state.req.qty}: an overfill"
        raise BadRecordError(msg)
    value = _dec(record.get("cumExecValue"))
    if value is None or value <= state.notional:
        avg = _dec(record.get("avgPrice")) or _ZERO
        value = filled * avg
    if value <= state.notional:
        raw_value, raw_avg = record.get("cumExecValue"), record.get("avgPrice")
        msg = (
            f"cumExecQty moves ahead to {filled} with no positive cumExecValue or avgPrice "
            f"for it (cumExecValue {raw_value!r}, avgPrice {raw_avg!r})"
        )
        raise BadRecordError(msg)
    fees = _dec(record.get("cumExecFee"))  # net of rebates: it may fall, or be below zero
    return filled, value, state.fees if fees is None else fees


def _status_of(record: Mapping[str, Any], state: _Order) -> OrderStatus:
    if record.get("orderStatus") in _WORKING_STATES:
        return OrderStatus.PARTIALLY_FILLED if state.filled else OrderStatus.ACCEPTED
    if record.get("orderStatus") == "Filled":
        return OrderStatus.FILLED
    if record.get("orderStatus") == "Rejected":
        return OrderStatus.REJECTED
    return OrderStatus.CANCELLED


def _copy(state: _Order) -> _Order:
    twin = _Order(state.req, state.template)
    twin.status = state.status
    twin.filled, twin.notional, twin.fees = state.filled, state.notional, state.fees
    return twin


def _dec(value: object) -> Decimal | None:
    """A Bybit number (a string, maybe empty) as a Decimal; None when absent or not a number."""
    if value is None or value == "":
        return None
    try:
        number = Decimal(str(value))
    except decimal.InvalidOperation:
        return None
    return number if number.is_finite() else None


def _int(value: object) -> int | None:
    number = _dec(value)
    return None if number is None else int(number)


def _text(value: Decimal | None) -> str:
    """A Decimal as Bybit wants it: plain notation, never an exponent."""
    return "" if value is None else format(value, "f")
