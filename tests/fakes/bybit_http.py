"""A fake Bybit V5 REST API on 127.0.0.1, with scripted faults, for the Bybit execution venue.

Endpoints (answers in Bybit's envelope ``{"retCode", "retMsg", "result", "retExtInfo",
"time"}``):

* ``POST /v5/order/create``: validates the order, refuses a known ``orderLinkId`` with retCode
  110072 ("OrderLinkedID is duplicate"), records it (status ``New``, or ``Untriggered`` with a
  ``triggerPrice``) and answers ``{"orderId", "orderLinkId"}``;
* ``POST /v5/order/cancel``: cancels a working order (110001 when there is none);
* ``GET /v5/order/realtime``: by ``orderId``/``orderLinkId`` any order, else the working ones
  (filtered by ``symbol``); ``GET /v5/order/history``: any order, by id or symbol;
* ``GET /v5/position/list`` and ``GET /v5/account/wallet-balance``: ``positions`` and
  ``wallet`` as set by the test.

Order records have the fields of Bybit's order records (``ORDER_FIELDS``, the keys of the real
private ``order`` message in ``tests/data/bybit/ws/private/order.json``). ``fill()`` executes
part of an order the way the matching engine would (cumulative quantity, value and fee).

Every request must carry the ``X-BAPI-*`` headers and a valid HMAC-SHA256 signature of
``timestamp + api_key + recv_window + payload`` (the raw query string of a GET, the raw body of
a POST), with a timestamp inside the receive window, as Bybit checks them (retCodes 10003,
10004, 10002).

Faults are scripted per path and used up one per request, in order (``script``):
``Fault.http(429)`` / ``Fault.http(503)``, ``Fault.retcode(110007, "...")``,
``Fault.stall(s)`` (the request is lost: nothing done, no answer for ``s`` seconds),
``Fault.stall_after(s)`` (done — an order is recorded — then no answer for ``s`` seconds: a
timeout after accept), ``Fault.delay(s)`` (done and answered, ``s`` seconds late). Every request
is recorded (``requests``, ``calls(path)``), with the fault it met.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import hmac
import itertools
import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import parse_qsl, urlsplit

CREATE: Final = "/v5/order/create"
CANCEL: Final = "/v5/order/cancel"
REALTIME: Final = "/v5/order/realtime"
HISTORY: Final = "/v5/order/history"
POSITIONS: Final = "/v5/position/list"
WALLET: Final = "/v5/account/wallet-balance"

WORKING: Final = frozenset(("New", "PartiallyFilled", "Untriggered"))

ORDER_TEMPLATE: Final[dict[str, Any]] = {
    "symbol": "",
    "orderId": "",
    "side": "",
    "orderType": "",
    "cancelType": "UNKNOWN",
    "price": "0",
    "qty": "0",
    "orderIv": "",
    "timeInForce": "GTC",
    "orderStatus": "New",
    "orderLinkId": "",
    "lastPriceOnCreated": "",
    "reduceOnly": False,
    "leavesQty": "0",
    "leavesValue": "0",
    "cumExecQty": "0",
    "cumExecValue": "0",
    "avgPrice": "",
    "blockTradeId": "",
    "positionIdx": 0,
    "cumExecFee": "0",
    "createdTime": "",
    "updatedTime": "",
    "rejectReason": "EC_NoError",
    "stopOrderType": "",
    "tpslMode": "",
    "triggerPrice": "",
    "takeProfit": "",
    "stopLoss": "",
    "tpTriggerBy": "",
    "slTriggerBy": "",
    "tpLimitPrice": "",
    "slLimitPrice": "",
    "triggerDirection": 0,
    "triggerBy": "",
    "closeOnTrigger": False,
    "category": "",
    "placeType": "",
    "smpType": "None",
    "smpGroup": 0,
    "smpOrderId": "",
    "feeCurrency": "",
}
"""A Bybit order record (field names and order of the real private ``order`` message)."""
ORDER_FIELDS: Final = tuple(ORDER_TEMPLATE)


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour, used by one request."""

    kind: str
    status: int = 200
    ret_code: int = 0
    ret_msg: str = ""
    seconds: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def http(cls, status: int, headers: dict[str, str] | None = None) -> Fault:
        """Answer with HTTP ``status`` and a non-JSON body (a gateway error, 429)."""
        return cls("http", status=status, headers=tuple((headers or {}).items()))

    @classmethod
    def retcode(cls, code: int, msg: str, headers: dict[str, str] | None = None) -> Fault:
        """Answer HTTP 200 with Bybit's ``retCode``/``retMsg`` (nothing done)."""
        return cls("retcode", ret_code=code, ret_msg=msg, headers=tuple((headers or {}).items()))

    @classmethod
    def stall(cls, seconds: float) -> Fault:
        """Lose the request: do nothing, answer nothing for ``seconds``, then drop it."""
        return cls("stall", seconds=seconds)

    @classmethod
    def stall_after(cls, seconds: float) -> Fault:
        """Do the request (record the order), then answer nothing for ``seconds``."""
        return cls("stall_after", seconds=seconds)

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Do the request and answer it normally, ``seconds`` late."""
        return cls("delay", seconds=seconds)


@dataclass(frozen=True)
class Recorded:
    """A request as the server saw it."""

    method: str
    path: str
    params: dict[str, Any]
    headers: dict[str, str]
    at: float
    fault: str = ""


@dataclass
class FakeBybitHTTP:
    """See the module docstring. Use as a context manager (or ``start()`` / ``close()``)."""

    api_key: str = "test-key"
    api_secret: str = "test-secret"  # noqa: S105 - a fixture value, not a secret
    positions: list[dict[str, Any]] = field(default_factory=list)
    wallet: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Every order ever accepted, by ``orderId``."""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: dict[str, deque[Fault]] = {}
        self._ids = itertools.count(1)
        self._closing = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> Self:
        """Listen on 127.0.0.1 (a free port) in a background thread."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.02,), name="fake-bybit-http"
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, release stalled requests and close every connection."""
        self._closing.set()
        server = self._server
        if server is None:
            return
        server.shutdown()
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def url(self) -> str:
        """The base URL to give the client (``http://127.0.0.1:PORT``)."""
        assert self._server is not None, "start() the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- scripting and inspection ----------------------------------------------------------

    def script(self, path: str, *faults: Fault) -> None:
        """Queue ``faults`` for the next requests to ``path`` (one per request, in order)."""
        with self._lock:
            self._faults.setdefault(path, deque()).extend(faults)

    def pending_faults(self, path: str) -> int:
        """Faults still queued for ``path``."""
        with self._lock:
            return len(self._faults.get(path, ()))

    def calls(self, path: str) -> list[Recorded]:
        """The requests to ``path``, in arrival order."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def order(self, link_id: str) -> dict[str, Any]:
        """The order with ``orderLinkId == link_id`` (KeyError when there is none)."""
        with self._lock:
            for record in self.orders.values():
                if record["orderLinkId"] == link_id:
                    return dict(record)
        raise KeyError(link_id)

    def fill(self, link_id: str, qty: str, price: str, fee: str = "0") -> dict[str, Any]:
        """Execute ``qty`` of an order at ``price`` paying ``fee``, like the matching engine."""
        with self._lock:
            record = next(r for r in self.orders.values() if r["orderLinkId"] == link_id)
            done = Decimal(record["cumExecQty"]) + Decimal(qty)
            value = Decimal(record["cumExecValue"]) + Decimal(qty) * Decimal(price)
            total = Decimal(record["qty"])
            record.update(
                cumExecQty=str(done),
                cumExecValue=str(value),
                cumExecFee=str(Decimal(record["cumExecFee"]) + Decimal(fee)),
                avgPrice=str(value / done),
                leavesQty=str(total - done),
                orderStatus="Filled" if done >= total else "PartiallyFilled",
                updatedTime=str(_now_ms()),
            )
            return dict(record)

    def set_status(self, link_id: str, status: str, **fields: Any) -> None:
        """Change an order's ``orderStatus`` (and other fields) behind the client's back."""
        with self._lock:
            record = next(r for r in self.orders.values() if r["orderLinkId"] == link_id)
            record.update(orderStatus=status, updatedTime=str(_now_ms()), **fields)

    # -- the API -------------------------------------------------------------------------

    def _next_fault(self, path: str) -> Fault | None:
        with self._lock:
            queue = self._faults.get(path)
            return queue.popleft() if queue else None

    def _record(self, request: Recorded) -> None:
        with self._lock:
            self.requests.append(request)

    def _auth_error(self, method: str, raw: str, headers: dict[str, str]) -> dict[str, Any] | None:
        key = headers.get("x-bapi-api-key")
        sign = headers.get("x-bapi-sign")
        ts = headers.get("x-bapi-timestamp")
        window = headers.get("x-bapi-recv-window", "5000")
        if not (key and sign and ts):
            return _envelope(10003, "API key is invalid.")
        if key != self.api_key:
            return _envelope(10003, "API key is invalid.")
        payload = f"{ts}{key}{window}{raw}"
        expected = hmac.new(self.api_secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, sign):
            return _envelope(10004, "error sign! origin_string[...]")
        now = _now_ms()
        if not (now - int(window) <= int(ts) < now + 1000):
            return _envelope(
                10002,
                "invalid request, please check your server timestamp or recv_window param",
            )
        del method
        return None

    def _serve(self, method: str, path: str, params: dict[str, Any]) -> dict[str, Any]:
        routes = {
            ("POST", CREATE): self._create,
            ("POST", CANCEL): self._cancel,
            ("GET", REALTIME): self._realtime,
            ("GET", HISTORY): self._history,
            ("GET", POSITIONS): self._positions,
            ("GET", WALLET): self._wallet,
        }
        route = routes.get((method, path))
        if route is None:
            return _envelope(10017, "route not found")
        with self._lock:
            return route(params)

    def _create(self, params: dict[str, Any]) -> dict[str, Any]:
        missing = [
            k for k in ("category", "symbol", "side", "orderType", "qty") if not params.get(k)
        ]
        if missing:
            return _envelope(10001, f"params error: {', '.join(missing)} is required")
        if params["side"] not in ("Buy", "Sell") or params["orderType"] not in ("Market", "Limit"):
            return _envelope(10001, "params error: side or orderType invalid")
        try:
            qty = Decimal(str(params["qty"]))
        except ArithmeticError:
            qty = Decimal(0)
        if not (qty.is_finite() and qty > 0):
            return _envelope(10001, "Qty invalid")
        if params["orderType"] == "Limit" and not params.get("price"):
            return _envelope(10001, "params error: price is required for a Limit order")
        link = str(params.get("orderLinkId") or "")
        if link and any(r["orderLinkId"] == link for r in self.orders.values()):
            return _envelope(110072, "OrderLinkedID is duplicate")
        order_id = f"fake-{next(self._ids):08d}-0000-4000-8000-000000000000"
        now = str(_now_ms())
        record = copy.deepcopy(ORDER_TEMPLATE)
        record.update(
            symbol=params["symbol"],
            orderId=order_id,
            side=params["side"],
            orderType=params["orderType"],
            price=str(params.get("price") or "0"),
            qty=str(qty),
            timeInForce=params.get("timeInForce") or "GTC",
            orderStatus="Untriggered" if params.get("triggerPrice") else "New",
            orderLinkId=link,
            reduceOnly=bool(params.get("reduceOnly")),
            leavesQty=str(qty),
            triggerPrice=str(params.get("triggerPrice") or ""),
            triggerDirection=int(params.get("triggerDirection") or 0),
            triggerBy=str(params.get("triggerBy") or ""),
            category=params["category"],
            createdTime=now,
            updatedTime=now,
        )
        self.orders[order_id] = record
        return _envelope(0, "OK", {"orderId": order_id, "orderLinkId": link})

    def _find(self, params: dict[str, Any]) -> list[dict[str, Any]] | None:
        """Orders named by ``orderId``/``orderLinkId`` (None when neither is given)."""
        order_id, link = params.get("orderId"), params.get("orderLinkId")
        if not (order_id or link):
            return None
        return [
            r
            for r in self.orders.values()
            if (order_id and r["orderId"] == order_id) or (link and r["orderLinkId"] == link)
        ]

    def _cancel(self, params: dict[str, Any]) -> dict[str, Any]:
        found = [r for r in self._find(params) or () if r["orderStatus"] in WORKING]
        if not found:
            return _envelope(110001, "Order does not exist.")
        (record,) = found
        record.update(
            orderStatus="Cancelled", cancelType="CancelByUser", updatedTime=str(_now_ms())
        )
        return _envelope(
            0, "OK", {"orderId": record["orderId"], "orderLinkId": record["orderLinkId"]}
        )

    def _listing(self, params: dict[str, Any], *, working_only: bool) -> dict[str, Any]:
        found = self._find(params)
        if found is None:
            found = [
                r
                for r in self.orders.values()
                if (not working_only or r["orderStatus"] in WORKING)
                and params.get("symbol") in (None, r["symbol"])
            ]
        items = [dict(r) for r in found]
        items.sort(key=lambda r: int(r["createdTime"]), reverse=True)  # Bybit: newest first
        category = params.get("category", "")
        return _envelope(0, "OK", {"category": category, "list": items, "nextPageCursor": ""})

    def _realtime(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._listing(params, working_only=True)

    def _history(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._listing(params, working_only=False)

    def _positions(self, params: dict[str, Any]) -> dict[str, Any]:
        items = [dict(p) for p in self.positions]
        category = params.get("category", "")
        return _envelope(0, "OK", {"category": category, "list": items, "nextPageCursor": ""})

    def _wallet(self, params: dict[str, Any]) -> dict[str, Any]:
        del params
        return _envelope(0, "OK", {"list": copy.deepcopy(self.wallet)})


def _now_ms() -> int:
    return int(time.time() * 1000)


def _envelope(code: int, msg: str, result: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "retCode": code,
        "retMsg": msg,
        "result": result if result is not None else {},
        "retExtInfo": {},
        "time": _now_ms(),
    }


def _handler_for(fake: FakeBybitHTTP) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as requests' pool expects
        timeout = 10  # an idle kept-alive connection ends by itself

        def setup(self) -> None:
            super().setup()
            with fake._lock:
                fake._connections.add(self.connection)

        def finish(self) -> None:
            with fake._lock:
                fake._connections.discard(self.connection)
            with contextlib.suppress(OSError):
                super().finish()

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            self._handle("GET", url.path, url.query, dict(parse_qsl(url.query)))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode() if length else ""
            try:
                body = json.loads(raw) if raw else {}
            except json.JSONDecodeError:
                body = {}
            self._handle("POST", urlsplit(self.path).path, raw, body)

        def _handle(self, method: str, path: str, raw: str, params: dict[str, Any]) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            fault = fake._next_fault(path)
            fake._record(
                Recorded(
                    method, path, params, headers, time.monotonic(), fault.kind if fault else ""
                )
            )
            denied = fake._auth_error(method, raw, headers)
            if denied is not None:
                self._send_json(denied)
                return
            if fault is None:
                self._send_json(fake._serve(method, path, params))
                return
            extra = dict(fault.headers)
            if fault.kind == "http":
                self._send(fault.status, b"<html>error</html>", "text/html", extra)
            elif fault.kind == "retcode":
                self._send_json(_envelope(fault.ret_code, fault.ret_msg), extra)
            elif fault.kind == "stall":
                fake._closing.wait(fault.seconds)
                self.close_connection = True
            elif fault.kind == "stall_after":
                fake._serve(method, path, params)
                fake._closing.wait(fault.seconds)
                self.close_connection = True
            elif fault.kind == "delay":
                answer = fake._serve(method, path, params)
                fake._closing.wait(fault.seconds)
                self._send_json(answer)

        def _send_json(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            self._send(200, json.dumps(body).encode(), "application/json", headers or {})

        def _send(self, status: int, body: bytes, kind: str, headers: dict[str, str]) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
            except OSError:  # the client gave up (timed out) and closed the connection
                self.close_connection = True

    return Handler
