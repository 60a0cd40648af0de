"""The Bybit private WebSocket stream against a loopback server that speaks Bybit's private
protocol (auth, subscribe, ping/pong, ``order`` and ``execution`` pushes built from the real
samples), with the loopback REST server behind the venue for orders and the HTTP resync."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self

import pytest
from structlog.testing import capture_logs
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from contracts.enums import OrderStatus, Side
from contracts.execution import OrderEvent, PositionUpdate
from contracts.topics import PORTFOLIO_POSITION
from planes.config import ConfigError, load_config
from planes.execution import bybit as bybit_module
from planes.execution.bybit_private import (
    BadRecordError,
    BybitAuthError,
    BybitPrivateStream,
    check_order,
    parse_execution,
    parse_position,
    parse_wallet,
    sign,
)
from planes.runtime import Runtime, RuntimeStartError
from tests.fakes.bybit_http import FakeBybitHTTP
from tests.fakes.bybit_samples import private_sample
from tests.planes.execution.test_bybit import KEYS, Bench

pytestmark = pytest.mark.network

S = OrderStatus
WAIT_S = 5.0


def D(value: str | int) -> Decimal:  # noqa: N802 - reads like the literal it stands for
    return Decimal(value)


sample = private_sample


async def until(condition: Callable[[], bool], what: str, within_s: float = WAIT_S) -> None:
    """Wait until ``condition()`` holds; fail naming ``what`` after ``within_s`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within_s:g} s waiting for {what}")
        await asyncio.sleep(0.002)


def stream_tasks() -> list[str]:
    """The names of the stream's tasks still alive."""
    return sorted(t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("bybit-"))


# -- the private WebSocket server ----------------------------------------------------------


class FakeBybitPrivateWS:
    """Bybit's ``/v5/private`` on 127.0.0.1: auth (HMAC of ``GET/realtime{expires}``),
    subscribe after auth only, ``{"op":"ping"}`` answered by ``{"op":"pong"}``, pushes to
    subscribed connections. ``mute_pings`` names connections (1, 2 ...) that never answer a
    ping; ``refuse`` turns new connections away with HTTP 503; ``drop()`` aborts every
    connection without a close frame."""

    def __init__(self, api_key: str = "test-key", api_secret: str = "test-secret") -> None:  # noqa: S107 - fixture values
        self.api_key = api_key
        self.api_secret = api_secret
        self.auths: list[tuple[int, list[Any], bool]] = []
        """(connection number, args, accepted) per auth request."""
        self.subscribes: list[tuple[int, list[str]]] = []
        self.pings: list[int] = []
        """The connection number of every ping received."""
        self.connections: list[ServerConnection] = []
        self.live: list[ServerConnection] = []
        """Connections authenticated and subscribed, in order."""
        self.mute_pings: set[int] = set()
        self.refuse = False
        self.refused = 0
        self._server: Server | None = None
        self._ids = itertools.count(1)

    async def __aenter__(self) -> Self:
        self._server = await serve(
            self._handler, "127.0.0.1", 0, process_request=self._gate, ping_interval=None
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = next(iter(self._server.sockets)).getsockname()[:2]
        return f"ws://{host}:{port}/v5/private"

    def _gate(self, connection: ServerConnection, request: Request) -> Response | None:
        del request
        if self.refuse:
            self.refused += 1
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "maintenance\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        number = len(self.connections)
        conn_id = f"conn-{number}"
        authed = False
        try:
            async for raw in ws:
                message = json.loads(raw)
                op = message.get("op")
                if op == "auth":
                    authed, why = self._check(message.get("args"))
                    self.auths.append((number, message.get("args"), authed))
                    await ws.send(
                        json.dumps(
                            {"success": authed, "ret_msg": why, "op": "auth", "conn_id": conn_id}
                        )
                    )
                elif op == "subscribe":
                    ok = authed
                    self.subscribes.append((number, list(message.get("args") or ())))
                    reply = {
                        "success": ok,
                        "ret_msg": "" if ok else "Request not authorized",
                        "op": "subscribe",
                        "conn_id": conn_id,
                        "req_id": message.get("req_id", ""),
                    }
                    await ws.send(json.dumps(reply))
                    if ok:
                        self.live.append(ws)
                elif op == "ping":
                    self.pings.append(number)
                    if number not in self.mute_pings:
                        pong = {
                            "req_id": message.get("req_id", ""),
                            "op": "pong",
                            "args": [str(int(time.time() * 1000))],
                            "conn_id": conn_id,
                        }
                        await ws.send(json.dumps(pong))
        except ConnectionClosed:
            pass
        finally:
            if ws in self.live:
                self.live.remove(ws)

    def _check(self, args: object) -> tuple[bool, str]:
        if not (isinstance(args, list) and len(args) == 3):
            return False, "args must be [api_key, expires, signature]"
        key, expires, signature = args
        if key != self.api_key:
            return False, "Invalid apikey"
        if not isinstance(expires, int) or expires <= time.time() * 1000:
            return False, "Params Error: expires is in the past"
        payload = f"GET/realtime{expires}".encode()
        expected = hmac.new(self.api_secret.encode(), payload, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, str(signature)):
            return False, "Signature verification failed"
        return True, ""

    async def push(self, message: dict[str, Any] | str | bytes) -> None:
        """Send ``message`` to the newest subscribed connection."""
        assert self.live, "no subscribed connection to push to"
        frame = message if isinstance(message, str | bytes) else json.dumps(message)
        await self.live[-1].send(frame)

    def drop(self) -> None:
        """Abort every open connection (no close frame), as a network failure would."""
        for ws in self.connections:
            if ws.transport is not None:
                ws.transport.abort()


def order_push(record: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """An ``order`` message (the real sample's envelope) carrying ``record`` + ``changes``."""
    message = sample("order")
    base = message["data"][0]
    message["data"] = [{**base, **{k: record[k] for k in base if k in record}, **changes}]
    return message


def execution_push(*fills: dict[str, Any]) -> dict[str, Any]:
    """An ``execution`` message (the real sample's envelope) with one record per ``fills``."""
    message = sample("execution")
    base = message["data"][0]
    message["data"] = [{**base, **fill} for fill in fills]
    return message


def trade(
    link: str,
    exec_id: str,
    qty: str,
    price: str,
    fee: str,
    *,
    order_qty: str,
    leaves: str,
    **more: Any,
) -> dict[str, Any]:
    """The fields of one ``execution`` record of ``link``'s order."""
    return {
        "symbol": "BTCUSDT",
        "orderLinkId": link,
        "orderId": f"venue-{link[-6:]}",
        "execId": exec_id,
        "execQty": qty,
        "execPrice": price,
        "execValue": str(D(qty) * D(price)),
        "execFee": fee,
        "orderQty": order_qty,
        "leavesQty": leaves,
        "side": "Buy",
        "execTime": "1672364174443",
        **more,
    }


def position_push(symbol: str, side: str, size: str, **more: Any) -> dict[str, Any]:
    """A ``position`` message (the sample's envelope and fields) for one linear position."""
    message = sample("position")
    base = message["data"][0]
    message["data"] = [{**base, "symbol": symbol, "side": side, "size": size, **more}]
    return message


def wallet_push(usdt: str, **coin: Any) -> dict[str, Any]:
    """A ``wallet`` message (the sample's envelope) whose USDT ``walletBalance`` is ``usdt``."""
    message = sample("wallet")
    account = message["data"][0]
    account["coin"] = [
        {**c, "walletBalance": usdt, **coin} if c["coin"] == "USDT" else c for c in account["coin"]
    ]
    return message


REST_WALLET = [{"accountType": "UNIFIED", "coin": [{"coin": "USDT", "walletBalance": "5000"}]}]
"""What the loopback REST server answers for the wallet: the drift baseline."""


# -- the bench -------------------------------------------------------------------------------


class StreamBench(Bench):
    """``Bench`` (the venue on a real bus, REST on the loopback server) with the stream on."""

    @property
    def stream(self) -> BybitPrivateStream:
        assert self.venue.stream is not None
        return self.venue.stream

    def fills(self, order_id: str) -> list[OrderEvent]:
        return [e for e in self.of(order_id) if e.last_fill_qty]


@pytest.fixture
async def make_bench(http: FakeBybitHTTP, ws: FakeBybitPrivateWS) -> AsyncIterator[Any]:
    benches: list[StreamBench] = []

    async def make(*sets: str, start: bool = True, **kwargs: Any) -> StreamBench:
        stream_sets = (
            "execution.bybit.private_stream=true",
            f"execution.bybit.private_ws_url={ws.url}",
            "execution.bybit.timeout_s=2.0",
            "execution.bybit.reconnect_initial_s=0.005",
            "execution.bybit.reconnect_max_s=0.02",
        )
        bench = StreamBench(http, *stream_sets, *sets, **kwargs)
        benches.append(bench)
        if start:
            await bench.venue.start()
            await bench.positions.start()
            await until(lambda: bench.stream.metrics.resyncs >= 1, "the first resync")
        return bench

    yield make
    for bench in benches:
        await bench.venue.stop()


# -- auth and subscription -------------------------------------------------------------------


async def test_the_stream_signs_in_subscribes_and_resyncs(
    ws: FakeBybitPrivateWS, make_bench: Any
) -> None:
    before_ms = int(time.time() * 1000)
    with capture_logs() as logs:
        b = await make_bench()
    assert "test-secret" not in repr(logs)
    ((number, args, accepted),) = ws.auths
    key, expires, signature = args
    assert (number, key, accepted) == (1, "test-key", True)
    assert before_ms < expires <= int(time.time() * 1000) + 10_000
    assert signature == sign("test-secret", expires)
    assert signature not in repr(logs)
    assert ws.subscribes == [(1, ["order", "execution", "position", "wallet"])]
    assert (b.stream.metrics.subscribed, b.stream.metrics.resyncs) == (1, 1)
    assert "test-secret" not in repr(b.stream)
    assert {"bybit-private", "bybit-private-heartbeat"} <= set(stream_tasks())
    await b.venue.stop()
    assert not b.stream.running
    assert stream_tasks() == []
    await until(lambda: not ws.live, "the server to see the connection closed")


def test_the_signature_is_hmac_sha256_of_get_realtime_and_expires() -> None:
    expected = hmac.new(b"s3cret", b"GET/realtime1700000000000", hashlib.sha256).hexdigest()
    assert sign("s3cret", 1_700_000_000_000) == expected


async def test_a_refused_key_fails_start_naming_bybits_answer(
    ws: FakeBybitPrivateWS, make_bench: Any
) -> None:
    ws.api_key = "another-key"
    b = await make_bench(start=False)
    with capture_logs() as logs, pytest.raises(BybitAuthError, match="Invalid apikey"):
        await b.venue.start()
    assert not b.stream.running
    assert b.stream.metrics.auth_failures == 1
    assert len(ws.auths) == 1  # no retry of a refused key at start
    assert {"event": "bybit_private.auth_failed", "ret_msg": "Invalid apikey"}.items() <= next(
        e for e in logs if e["event"] == "bybit_private.auth_failed"
    ).items()


async def test_a_wrong_secret_is_refused_too(ws: FakeBybitPrivateWS, make_bench: Any) -> None:
    ws.api_secret = "not-the-secret"  # noqa: S105 - a fixture value
    b = await make_bench(start=False)
    with pytest.raises(BybitAuthError, match="Signature verification failed"):
        await b.venue.start()


async def test_without_the_option_there_is_no_stream(
    http: FakeBybitHTTP, ws: FakeBybitPrivateWS
) -> None:
    b = Bench(http)
    await b.venue.start()
    assert b.venue.stream is None
    await b.venue.stop()
    assert ws.connections == []


# -- fills -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fee", ["0.0276", "-0.0276"], ids=["fee", "maker_rebate"])
async def test_a_trade_is_booked_with_its_fee_and_the_quote_as_fee_asset(
    ws: FakeBybitPrivateWS, make_bench: Any, fee: str
) -> None:
    b = await make_bench()
    approved = await b.place(Side.BUY, "0.5")
    link = b.link(approved)
    await ws.push(
        execution_push(trade(link, "e-1", "0.5", "100.5", fee, order_qty="0.5", leaves="0"))
    )
    await until(lambda: bool(b.fills(approved.order_id)), "the fill")
    (fill,) = b.fills(approved.order_id)
    assert (fill.status, fill.last_fill_qty, fill.last_fill_price) == (
        S.FILLED,
        D("0.5"),
        D("100.5"),
    )
    assert (fill.fee, fill.fee_asset, fill.exchange_ts) == (D(fee), "USDT", 1672364174443)
    assert (fill.filled_qty, fill.avg_fill_price) == (D("0.5"), D("100.5"))
    assert b.statuses(approved.order_id) == [S.SUBMITTED, S.ACCEPTED, S.FILLED]
    await until(lambda: bool(b.updates), "the position update")
    ledger = b.positions.ledger
    assert ledger.position("BTCUSDT").qty == D("0.5")
    assert ledger.fees == D(fee)  # a negative execFee is booked as a rebate, not as 0
    assert ledger.cash == ledger.starting_cash - D("50.25") - D(fee)


async def test_a_spot_fee_charged_in_the_base_coin_says_so(
    ws: FakeBybitPrivateWS, make_bench: Any
) -> None:
    b = await make_bench("execution.bybit.category=spot")
    approved = await b.place(Side.BUY, "0.01")
    link = b.link(approved)
    record = trade(
        link, "e-spot", "0.01", "60000", "0.00001", order_qty="0.01", leaves="0", feeCurrency="BTC"
    )
    await ws.push(execution_push(record))
    await until(lambda: bool(b.fills(approved.order_id)), "the fill")
    (fill,) = b.fills(approved.order_id)
    assert (fill.fee, fill.fee_asset) == (D("0.00001"), "BTC")


async def test_a_trade_delivered_twice_and_on_both_topics_is_booked_once(
    http: FakeBybitHTTP, ws: FakeBybitPrivateWS, make_bench: Any
) -> None:
    b = await make_bench()
    approved = await b.place(Side.BUY, "1")
    link = b.link(approved)
    first = trade(link, "e-1", "0.4", "100", "0.022", order_qty="1", leaves="0.6")
    await ws.push(execution_push(first))
    await ws.push(execution_push(first))  # the same execId again
    record = http.fill(link, "0.4", "100", "0.022")
    await ws.push(order_push(record))  # the same trade, cumulative, on the order topic
    second = trade(link, "e-2", "0.6", "101", "0.0333", order_qty="1", leaves="0")
    await ws.push(execution_push(second, second))  # twice in one frame
    await until(lambda: b.statuses(approved.order_id)[-1] is S.FILLED, "the order to fill")
    record = http.fill(link, "0.6", "101", "0.0333")
    await ws.push(order_push(record))  # the order's last record, after it is finished
    await ws.push(execution_push(first))
    await until(lambda: b.stream.metrics.executions == 5, "every push to be read")
    fills = b.fills(approved.order_id)
    assert [(f.last_fill_qty, f.last_fill_price, f.fee) for f in fills] == [
        (D("0.4"), D("100"), D("0.022")),
        (D("0.6"), D("101"), D("0.0333")),
    ]
    assert fills[-1].avg_fill_price == D("100.6")
    assert b.venue.exec_duplicates == 3
    assert b.positions.ledger.position("BTCUSDT").qty == 1


@pytest.mark.parametrize("order_first", [True, False], ids=["order_first", "execution_first"])
async def test_an_order_record_and_its_trade_give_one_state_in_either_order(
    http: FakeBybitHTTP, ws: FakeBybitPrivateWS, make_bench: Any, *, order_first: bool
) -> None:
    b = await make_bench()
    approved = await b.place(Side.BUY, "1")
    link = b.link(approved)
    record = http.fill(link, "1", "100", "0.055")
    pushes = [
        order_push(record),
        execution_push(trade(link, "e-1", "1", "100", "0.055", order_qty="1", leaves="0")),
    ]
    for push in pushes if order_first else reversed(pushes):
        await ws.push(push)
    await until(lambda: b.stream.metrics.orders + b.stream.metrics.executions == 2, "both pushes")
    (fill,) = b.fills(approved.order_id)
    assert (fill.status, fill.filled_qty, fill.avg_fill_price, fill.fee) == (
        S.FILLED,
        D(1),
        D(100),
        D("0.055"),
    )
    assert b.statuses(approved.order_id) == [S.SUBMITTED, S.ACCEPTED, S.FILLED]


async def test_any_interleaving_of_two_trades_and_their_order_records_books_the_same(
    http: FakeBybitHTTP, make_bench: Any
) -> None:
    """Every order of [order record 1, trade 1, order record 2, trade 2] (24 orders) ends in
    the same order state and the same booked totals (the sink is fed directly: no timing)."""
    b = await make_bench()
    outcomes = set()
    for n, perm in enumerate(itertools.permutations(range(4))):
        approved = await b.place(Side.BUY, "1", intent_id=f"perm-{n}")
        link = b.link(approved)
        first = http.fill(link, "0.25", "100", "0.01")
        second = http.fill(link, "0.75", "104", "0.03")
        trades = [
            trade(link, f"{n}-a", "0.25", "100", "0.01", order_qty="1", leaves="0.75"),
            trade(link, f"{n}-b", "0.75", "104", "0.03", order_qty="1", leaves="0"),
        ]
        feeds: list[Callable[[], bool]] = [
            lambda r=first: b.venue.apply_order_update(r),
            lambda t=trades[0]: b.venue.apply_execution(_parsed(t)),
            lambda r=second: b.venue.apply_order_update(r),
            lambda t=trades[1]: b.venue.apply_execution(_parsed(t)),
        ]
        for i in perm:
            feeds[i]()
        fills = b.fills(approved.order_id)
        last = fills[-1]
        outcomes.add(
            (
                last.status,
                last.filled_qty,
                last.avg_fill_price,
                sum((f.last_fill_qty or D(0) for f in fills), D(0)),
                sum((f.fee for f in fills), D(0)),
                sum(((f.last_fill_qty or D(0)) * (f.last_fill_price or D(0)) for f in fills), D(0)),
            )
        )
    assert outcomes == {(S.FILLED, D(1), D(103), D(1), D("0.04"), D(103))}


def _parsed(record: dict[str, Any]) -> Any:
    fill = parse_execution({**sample("execution")["data"][0], **record})
    assert fill is not None
    return fill


async def test_records_of_orders_placed_elsewhere_are_ignored(
    ws: FakeBybitPrivateWS, make_bench: Any
) -> None:
    b = await make_bench()
    foreign = trade("manual-1", "e-x", "1", "100", "0.05", order_qty="1", leaves="0")
    with capture_logs() as logs:
        await ws.push(execution_push(foreign))
        await ws.push(order_push({}, orderLinkId="manual-1", orderStatus="Filled"))
        await ws.push(sample("order"))  # the sample itself: no orderLinkId at all
        await until(lambda: b.stream.metrics.orders == 2, "the pushes")
    assert [e for e in b.orders if e.last_fill_qty] == []
    assert b.venue.foreign_records == 3
    foreign_logs = [e for e in logs if e["event"] == "bybit.foreign_order"]
    assert [e["order_link_id"] for e in foreign_logs] == ["manual-1", ""]  # once per order


# -- the venue's view: positions and the wallet -------------------------------------------


async def test_positions_that_agree_raise_nothing_and_a_drift_is_alerted_never_booked(
    ws: FakeBybitPrivateWS, make_bench: Any
) -> None:
    b = await make_bench("execution.bybit.drift_grace_s=0.05")
    approved = await b.place(Side.BUY, "0.5")
    link = b.link(approved)
    # Bybit pushes the position before the trade that made it: a moment's difference only.
    await ws.push(position_push("BTCUSDT", "Buy", "0.5"))
    await ws.push(
        execution_push(trade(link, "e-1", "0.5", "100", "0.0275", order_qty="0.5", leaves="0"))
    )
    await until(lambda: b.venue.drift.checks >= 1, "the drift check")
    assert b.alerts == []
    orders_before, booked = len(b.orders), b.positions.ledger.position("BTCUSDT").qty
    # Then the venue says the position is larger than anything the portfolio booked.
    await ws.push(position_push("BTCUSDT", "Buy", "0.8"))
    await until(lambda: bool(b.alerts), "the drift alert")
    (alert,) = b.alerts
    assert (alert.code, alert.severity.value) == ("bybit_position_drift", "warning")
    assert alert.labels == {"venue": "bybit", "group": "stream", "symbol": "BTCUSDT"}
    assert "bybit holds a position of 0.8 BTCUSDT, the portfolio 0.5" in alert.message
    assert len(b.orders) == orders_before  # no fill invented
    assert b.positions.ledger.position("BTCUSDT").qty == booked
    # A short on the other side of a hedge-mode account, and a category we do not trade.
    await ws.push(position_push("ETHUSDT", "Sell", "2", positionIdx=2))
    await ws.push(position_push("BTCUSDT", "Buy", "9", category="inverse"))
    await until(lambda: len(b.alerts) == 2, "the ETHUSDT alert")
    assert "a position of -2 ETHUSDT, the portfolio 0" in b.alerts[1].message
    await asyncio.sleep(0.1)
    assert len(b.alerts) == 2  # the inverse record was not compared
    assert b.stream.metrics.positions == 4


async def test_the_wallet_is_compared_by_change_from_the_rest_baseline(
    http: FakeBybitHTTP, ws: FakeBybitPrivateWS, make_bench: Any
) -> None:
    http.wallet = REST_WALLET
    b = await make_bench("execution.bybit.drift_grace_s=0.05")
    approved = await b.place(Side.BUY, "1")
    link = b.link(approved)
    await ws.push(
        execution_push(trade(link, "e-1", "1", "100", "0.055", order_qty="1", leaves="0"))
    )
    await ws.push(position_push("BTCUSDT", "Buy", "1"))  # Bybit pushes the position it made
    await ws.push(wallet_push("4999.945"))  # a linear fill moves the balance by its fee only
    await until(lambda: b.venue.drift.checks >= 1, "the wallet check")
    assert b.alerts == []
    await ws.push(wallet_push("4979.945"))  # 20 USDT funding the portfolio does not know of
    await until(lambda: bool(b.alerts), "the wallet drift alert")
    (alert,) = b.alerts
    assert (alert.code, alert.labels["asset"]) == ("bybit_wallet_drift", "USDT")
    assert "moved by -20.055 since the baseline, the portfolio's settled balance by -0.055" in (
        alert.message
    )
    assert b.positions.ledger.cash == b.positions.ledger.starting_cash - 100 - D("0.055")
    assert b.stream.metrics.wallets == 2


async def test_bad_position_and_wallet_records_are_skipped_naming_the_problem(
    ws: FakeBybitPrivateWS, make_bench: Any
) -> None:
    b = await make_bench("execution.bybit.drift_grace_s=0.05")
    good = position_push("BTCUSDT", "Buy", "1")
    wallet = sample("wallet")
    with capture_logs() as logs:
        await ws.push(position_push("BTCUSDT", "Buy", "-1"))
        await ws.push(position_push("BTCUSDT", "", "1"))
        await ws.push(position_push("BTCUSDT", "Up", "1"))
        await ws.push(position_push("BTCUSDT", "Buy", "abc"))
        await ws.push(position_push("", "Buy", "1"))
        await ws.push(position_push("BTCUSDT", "Buy", "1", positionIdx=7))
        await ws.push({**wallet, "data": [{**wallet["data"][0], "coin": "USDT"}]})
        await ws.push(wallet_push("lots"))
        await ws.push(wallet_push("1", coin=""))
        await ws.push({**good, "data": ["junk", *good["data"]]})  # a bad record, then a good one
        await until(lambda: b.stream.metrics.positions == 1, "the good record")
    problems = [e["problem"] for e in logs if e["event"] == "bybit_private.skipped"]
    assert problems == [
        "position record: size is negative: -1",
        "position record: a size of 1 with no side",
        "position record: unknown side 'Up'",
        "position record: size missing or not a number: 'abc'",
        "position record: symbol is empty",
        "position record: unknown positionIdx 7",
        "wallet record: coin missing or not a list",
        "wallet record: coin[1] (USDT) walletBalance is not a number: 'lots'",
        "wallet record: coin[1].coin missing or empty",
        "position record: not an object: str",
    ]
    assert b.stream.metrics.skipped == len(problems)
    await until(lambda: bool(b.alerts), "the drift of the good record")
    assert [a.code for a in b.alerts] == ["bybit_position_drift"]


def coins_push(**balances: str) -> dict[str, Any]:
    """A ``wallet`` message (the sample's envelope and coin fields) with these balances only."""
    message = sample("wallet")
    account = message["data"][0]
    template = account["coin"][0]
    account["coin"] = [
        {**template, "coin": coin, "walletBalance": qty, "equity": qty}
        for coin, qty in balances.items()
    ]
    return message


def rest_position(symbol: str, side: str, size: str, **more: Any) -> dict[str, Any]:
    """One record of Bybit's REST position list (the stream record's fields, no category)."""
    record = {k: v for k, v in sample("position")["data"][0].items() if k != "category"}
    return {**record, "symbol": symbol, "side": side, "size": size, **more}


async def test_spot_base_coin_balances_are_compared_with_the_portfolios_positions(
    http: FakeBybitHTTP, ws: FakeBybitPrivateWS, make_bench: Any
) -> None:
    http.wallet = [
        {"accountType": "UNIFIED", "coin": [{"coin": "USDT", "walletBalance": "5000"}]}
    ]  # the resync's listing: no BTC, no ETH on the account yet
    b = await make_bench("execution.bybit.category=spot", "execution.bybit.drift_grace_s=0.05")
    approved = await b.place(Side.BUY, "0.01")
    record = trade(
        b.link(approved), "e-1", "0.01", "60000", "0.00001", order_qty="0.01", leaves="0",
        feeCurrency="BTC",
    )  # fmt: skip
    await ws.push(execution_push(record))
    await until(lambda: bool(b.updates), "the position update")
    booked = b.positions.ledger.position("BTCUSDT").qty
    assert booked == D("0.00999")  # the fee came out of the coins bought
    await ws.push(coins_push(USDT="4400", BTC="0.00999"))  # Bybit's balances after the buy
    await ws.push(position_push("BTCUSDT", "Buy", "7", category=""))  # no category: not spot's
    await until(lambda: b.venue.drift.checks >= 2, "the checks")
    await asyncio.sleep(0.1)
    assert b.alerts == []
    orders_before = len(b.orders)
    await ws.push(coins_push(BTC="0.01999", XRP="50"))  # 0.01 BTC came in from elsewhere
    await until(lambda: bool(b.alerts), "the drift alert")
    (alert,) = b.alerts
    assert (alert.code, alert.severity.value) == ("bybit_position_drift", "warning")
    assert alert.labels == {
        "venue": "bybit",
        "group": "stream",
        "symbol": "BTCUSDT",
        "asset": "BTC",
    }
    assert alert.message.startswith(
        "bybit holds 0.01999 BTC (the base coin of BTCUSDT), the portfolio a position of "
        "0.00999 BTCUSDT (for 0.05 s)"
    )
    assert (len(b.orders), b.positions.ledger.position("BTCUSDT").qty) == (orders_before, booked)
    await ws.push(coins_push(BTC="0.00999"))  # it went out again
    await until(lambda: len(b.alerts) == 2, "the end of the drift")
    ended = b.alerts[1]
    assert (ended.code, ended.severity.value) == ("bybit_position_drift_resolved", "info")
    assert ended.labels == {**alert.labels, "ended_by": "agreement"}
    await ws.push(coins_push(BTC="0.00999"))
    await asyncio.sleep(0.15)
    assert len(b.alerts) == 2  # ended once; XRP is no symbol of ours
    assert b.stream.metrics.wallets == 4


async def test_a_position_bybit_never_reports_is_drift_and_its_late_push_ends_it(
    http: FakeBybitHTTP, ws: FakeBybitPrivateWS, make_bench: Any
) -> None:
    http.positions = []  # the resync's listing: Bybit holds nothing
    b = await make_bench("execution.bybit.drift_grace_s=0.05")
    approved = await b.place(Side.BUY, "0.5")
    fill = trade(b.link(approved), "e-1", "0.5", "100", "0.0275", order_qty="0.5", leaves="0")
    await ws.push(execution_push(fill))  # booked; Bybit pushes no position for it
    await until(lambda: bool(b.alerts), "the drift alert")
    (alert,) = b.alerts
    assert (alert.code, alert.labels["symbol"]) == ("bybit_position_drift", "BTCUSDT")
    assert alert.message.startswith(
        "bybit reported no position in BTCUSDT (none in its listing at the last resync, none "
        "pushed since), the portfolio holds 0.5 (for 0.05 s)"
    )
    assert b.positions.ledger.position("BTCUSDT").qty == D("0.5")  # nothing undone
    await ws.push(position_push("BTCUSDT", "Buy", "0.5"))
    await until(lambda: len(b.alerts) == 2, "the end of the drift")
    ended = b.alerts[1]
    assert (ended.code, ended.severity.value) == ("bybit_position_drift_resolved", "info")
    assert ended.labels == {
        "venue": "bybit",
        "group": "stream",
        "symbol": "BTCUSDT",
        "ended_by": "agreement",
    }
    assert "bybit's position and the portfolio's position are both 0.5" in ended.message


async def test_a_listed_position_counts_and_a_bad_listing_record_is_skipped_naming_it(
    http: FakeBybitHTTP, ws: FakeBybitPrivateWS, make_bench: Any
) -> None:
    http.positions = [
        rest_position("ETHUSDT", "Buy", "abc"),
        rest_position("BTCUSDT", "Buy", "0.5"),
    ]
    with capture_logs() as logs:
        b = await make_bench("execution.bybit.drift_grace_s=0.05")
    problems = [e["problem"] for e in logs if e["event"] == "bybit.listing_skipped"]
    assert problems == ["position record: size missing or not a number: 'abc'"]
    assert b.venue.snapshot_skipped == 1
    approved = await b.place(Side.BUY, "0.5")  # the 0.5 Bybit listed (say, before a restart)
    fill = trade(b.link(approved), "e-1", "0.5", "100", "0.0275", order_qty="0.5", leaves="0")
    await ws.push(execution_push(fill))
    # A listing with a bad record is not complete: what it leaves out is not taken as flat.
    execution = b.ctx("execution").bus
    sol = PositionUpdate(execution.meta(), "SOLUSDT", D(3), D(20), D(0), D(0), D(20), D(0), D(0))
    execution.publish(PORTFOLIO_POSITION, sol)
    await until(lambda: b.venue.drift.checks >= 1, "the BTCUSDT check")
    await asyncio.sleep(0.15)
    assert b.alerts == []


def test_position_and_wallet_samples_parse() -> None:
    position = parse_position(sample("position")["data"][0])
    assert (position.category, position.symbol, position.position_idx, position.qty) == (
        "linear",
        "XRPUSDT",
        0,
        D(75),
    )
    assert (position.mark_price, position.updated_ms) == (D("0.3374"), 1672364174449)
    closed = parse_position({**sample("position")["data"][0], "side": "", "size": "0"})
    assert closed.qty == 0
    short = parse_position({**sample("position")["data"][0], "side": "Sell"})
    assert short.qty == -75
    wallet = parse_wallet(sample("wallet")["data"][0])
    assert wallet.account_type == "UNIFIED"
    assert wallet.balances == {"BTC": D("0.00102964"), "USDT": D("9647.75537647")}
    with pytest.raises(BadRecordError, match="accountType missing"):
        parse_wallet({"coin": []})


# -- the dedupe memory across a restart ------------------------------------------------------


async def test_seen_exec_ids_survive_export_and_restore_bounded(
    ws: FakeBybitPrivateWS, make_bench: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bybit_module, "EXEC_IDS_KEPT", 3)
    b = await make_bench()
    approved = await b.place(Side.BUY, "10")
    link = b.link(approved)
    for i in range(5):
        leaves = str(9 - i)
        fill = trade(link, f"e-{i}", "1", "100", "0.01", order_qty="10", leaves=leaves)
        await ws.push(execution_push(fill))
    await until(lambda: len(b.fills(approved.order_id)) == 5, "five fills")
    state = json.loads(json.dumps(b.venue.export_state()))
    assert state["exec_ids"] == ["e-2", "e-3", "e-4"]  # the newest, bounded

    # A new process restores the state. e-4 comes again, made to look like the next trade of
    # the order (leavesQty 4, so its place alone would not stop it): its id does.
    again = await make_bench(start=False)
    again.venue.restore_state(copy.deepcopy(state))
    resent = _parsed(trade(link, "e-4", "1", "100", "0.01", order_qty="10", leaves="4"))
    with capture_logs() as logs:
        assert again.venue.apply_execution(resent) is False
    assert [e["event"] for e in logs] == ["bybit.execution_duplicate"]
    assert again.venue.exec_duplicates == 1
    assert again.orders == []
    new = _parsed(trade(link, "e-5", "1", "100", "0.01", order_qty="10", leaves="4"))
    assert again.venue.apply_execution(new) is True
    assert again.orders[-1].filled_qty == 6


# -- a drop, and what happened meanwhile -----------------------------------------------------


async def test_a_drop_reconnects_signs_in_again_and_recovers_a_missed_fill_over_http(
    http: FakeBybitHTTP, ws: FakeBybitPrivateWS, make_bench: Any
) -> None:
    b = await make_bench()
    approved = await b.place(Side.BUY, "1")
    link = b.link(approved)
    ws.refuse = True  # the venue stays unreachable until the fill below has happened
    ws.drop()
    await until(lambda: b.stream.metrics.drops == 1 and ws.refused >= 1, "the stream to notice")
    http.fill(link, "1", "100.25", "0.055")  # a fill nobody pushes: the stream is down
    ws.refuse = False
    await until(lambda: bool(b.fills(approved.order_id)), "the fill, by the resync")
    (fill,) = b.fills(approved.order_id)
    assert (fill.last_fill_qty, fill.last_fill_price, fill.fee) == (D(1), D("100.25"), D("0.055"))
    assert fill.reason == ""
    assert [n for n, _, ok in ws.auths if ok] == [1, len(ws.connections)]
    assert [n for n, _ in ws.subscribes] == [1, len(ws.connections)]
    _, first_args, _ = ws.auths[0]
    _, second_args, _ = ws.auths[-1]
    assert second_args[1] >= first_args[1]  # signed afresh (the server checked it)
    await until(lambda: b.stream.metrics.resyncs == 2, "the second resync to finish")
    assert b.stream.metrics.connect_failures >= 1
    assert len(b.stream.backoff_history) >= 2
    assert max(b.stream.backoff_history) <= 0.02

    # The trade shows up on the stream after all (a re-send): booked once, from the resync.
    await ws.push(
        execution_push(trade(link, "e-late", "1", "100.25", "0.055", order_qty="1", leaves="0"))
    )
    await ws.push(order_push(http.order(link)))
    await until(
        lambda: (b.stream.metrics.executions, b.stream.metrics.orders) == (1, 1), "the re-send"
    )
    assert len(b.fills(approved.order_id)) == 1
    assert b.positions.ledger.position("BTCUSDT").qty == 1


async def test_a_missing_pong_ends_the_connection_and_it_is_reconnected(
    ws: FakeBybitPrivateWS, make_bench: Any
) -> None:
    ws.mute_pings = {1}  # the first connection goes silent: a half-open socket
    with capture_logs() as logs:
        b = await make_bench(
            "execution.bybit.ping_interval_s=0.15", "execution.bybit.pong_timeout_s=0.1"
        )
        await until(lambda: b.stream.metrics.heartbeat_timeouts >= 1, "the heartbeat timeout")
        await until(lambda: any(n >= 2 for n in ws.pings) and b.stream.metrics.pongs >= 1, "a pong")
    assert b.stream.metrics.subscribed >= 2
    assert [n for n, _ in ws.subscribes][:2] == [1, 2]
    aborts = [e for e in logs if e["event"] == "bybit_private.abort"]
    assert aborts[0]["reason"] == "heartbeat: no pong within 0.1 s"
    approved = await b.place(Side.BUY, "1")  # and the new connection streams
    fill = trade(b.link(approved), "e-1", "1", "100", "0.05", order_qty="1", leaves="0")
    await ws.push(execution_push(fill))
    await until(lambda: bool(b.fills(approved.order_id)), "the fill on the new connection")


# -- bad wire input --------------------------------------------------------------------------


async def test_malformed_messages_are_logged_and_skipped_and_the_stream_goes_on(
    ws: FakeBybitPrivateWS, make_bench: Any
) -> None:
    b = await make_bench()
    approved = await b.place(Side.BUY, "1")
    link = b.link(approved)
    good = trade(link, "e-good", "0.5", "100", "0.02", order_qty="1", leaves="0.5")
    with capture_logs() as logs:
        await ws.push("this is not JSON {")
        await ws.push(b"\xff\xfe binary junk")
        await ws.push("[1, 2, 3]")
        await ws.push({"topic": "greeks", "data": []})
        await ws.push({"topic": "order", "data": {"not": "a list"}})
        await ws.push({"hello": "world"})
        await ws.push(execution_push({**good, "execQty": "abc"}))
        await ws.push(execution_push({**good, "execId": ""}))
        await ws.push(execution_push({**good, "execPrice": "NaN"}))
        await ws.push(order_push({}, orderLinkId=link, orderStatus="Exploded"))
        await ws.push(order_push({}, orderLinkId=link, orderStatus="Filled", cumExecQty="1e"))
        await ws.push(order_push({}, orderLinkId=link, orderStatus="Cancelled", orderId=None))
        bad_then_good = execution_push({"execId": None}, good)  # one frame, two records
        await ws.push(bad_then_good)
        await until(lambda: bool(b.fills(approved.order_id)), "the good trade")
    problems = [e["problem"] for e in logs if e["event"] == "bybit_private.skipped"]
    assert problems == [
        "not a JSON object",
        "not a JSON object",
        "not a JSON object",
        "unknown topic 'greeks'",
        "order: data is not a list",
        "neither an op nor a topic",
        "execution record: execQty missing or not a number: 'abc'",
        "execution record: execId is empty",
        "execution record: execPrice missing or not a number: 'NaN'",
        "order record: unknown orderStatus 'Exploded'",
        "order record: cumExecQty is not a number: '1e'",
        "order record: orderId missing or not a string",
        "execution record: execId missing or not a string",
    ]
    assert b.stream.metrics.skipped == len(problems)
    assert (b.stream.metrics.connects, b.stream.metrics.drops) == (1, 0)
    (fill,) = b.fills(approved.order_id)
    assert (fill.status, fill.last_fill_qty) == (S.PARTIALLY_FILLED, D("0.5"))
    assert S.CANCELLED not in b.statuses(approved.order_id)


def test_wire_checks_name_what_is_wrong() -> None:
    record = sample("order")["data"][0]
    assert check_order(record) is record
    with pytest.raises(BadRecordError, match="cumExecValue is negative"):
        check_order({**record, "cumExecValue": "-1"})
    with pytest.raises(BadRecordError, match="not an object: list"):
        check_order([record])
    fill = parse_execution(sample("execution")["data"][0])
    assert fill is not None
    assert (fill.exec_id, fill.qty, fill.price, fill.fee) == (
        "7e2ae69c-4edf-5800-a352-893d52b446aa",
        D(25),
        D("0.3374"),
        D("0.005061"),
    )
    assert (fill.leaves_qty, fill.order_qty, fill.fee_currency) == (D(0), D(25), "")
    funding = {**sample("execution")["data"][0], "execType": "Funding"}
    assert parse_execution(funding) is None
    with pytest.raises(BadRecordError, match="leavesQty missing"):
        parse_execution({**sample("execution")["data"][0], "leavesQty": ""})


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("private_ws_url=https://stream.bybit.com", "is not a ws:// or wss:// URL"),
        ("pong_timeout_s=25", "must be below ping_interval_s 20.0"),
        ("reconnect_max_s=0.1", "is below reconnect_initial_s 0.5"),
        ("ping_interval_s=0", "must be > 0"),
        ("drift_grace_s=0", "must be > 0"),
        ("wallet_drift_tolerance=-1", "must be a finite number >= 0, got -1"),
    ],
)
def test_bad_stream_keys_are_refused_by_name(setting: str, message: str) -> None:
    key = setting.partition("=")[0]
    with pytest.raises(ConfigError, match=f"execution.bybit.{key}: .*{message}"):
        load_config(None, [f"execution.bybit.{setting}"], environ={}, use_default_file=False)


def test_the_stream_is_built_only_when_enabled(http: FakeBybitHTTP) -> None:
    off = Bench(http)
    assert off.venue.stream is None
    on = Bench(http, "execution.bybit.private_stream=true")
    assert on.venue.stream is not None
    assert on.venue.stream.url == "wss://stream.bybit.com/v5/private"
    assert KEYS["BYBIT_API_SECRET"] not in repr(on.venue.stream)


async def test_a_refused_key_fails_the_runtimes_start_naming_the_venue(
    http: FakeBybitHTTP, ws: FakeBybitPrivateWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    ws.api_key = "another-key"
    sets = [
        "execution.venue=bybit",
        f"execution.bybit.base_url={http.url}",
        "execution.bybit.private_stream=true",
        f"execution.bybit.private_ws_url={ws.url}",
    ]
    config = load_config(None, sets, environ={}, use_default_file=False)
    runtime = Runtime(config, builtin=[("planes.execution", "planes.execution.plugin")])
    with pytest.raises(RuntimeStartError, match="Invalid apikey") as failure:
        await runtime.start()
    assert "execution/bybit_execution" in str(failure.value)
    assert stream_tasks() == []
