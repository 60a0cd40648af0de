"""A reconnecting WebSocket client: one supervisor task, one connection at a time.

The Bybit public source (``planes/market/bybit.py``) and the Bybit private stream
(``planes/execution/bybit_private.py``) share this loop; what they say on a connection is
theirs. ``ReconnectingWebSocket`` owns everything that is the same:

* **The supervisor** (``start()``, once) connects to ``url`` (``websockets``; its own pings
  off, since Bybit wants ``{"op": "ping"}``), runs the owner's ``session`` coroutine on each
  connection, and after every end waits, then connects again. It never gives up by itself;
  ``stop()`` cancels it and waits until it, every helper task of the connection and the socket
  are gone. It is the **only owner of cleanup**: whatever way a connection ends (the server
  closed it, ``Connection.abort()``, an error in the session, a cancellation), the helper tasks
  spawned for it are cancelled and awaited and the socket is closed (aborted when it does not
  close within a second), in that one place.
* **Backoff**: exponential with full jitter, ``uniform(0, min(backoff_max_s, backoff_initial_s
  * 2 ** (n - 1)))`` for the n-th failure in a row, drawn from the owner's ``random.Random``; a
  failed connect counts as a failure, and so does a connection the owner did not mark
  ``Connection.healthy`` by its end (however it ended); a healthy one resets n. Even after a
  healthy connection the next attempt waits (up to ``backoff_initial_s``): a server that
  accepts and drops at once cannot make the loop spin. The last 1000 delays are kept in
  ``backoff_history``.
* **The first open**: ``start()`` waits (shielded) until the owner settles the first open:
  ``Connection.opened()`` (a usable connection), ``settle_first()`` (go on without one), or a
  ``StopReconnectingError`` out of ``session``, which ends the supervisor and, while the first
  open is pending, makes ``start()`` raise its cause. ``stop()`` cancels a pending first open,
  so a ``start()`` still waiting raises ``CancelledError``.

Hooks tell the owner what happened, after ``failures`` was updated: ``on_connect_failed(why)``
and ``on_session_end(why, healthy)``. ``why`` is ``Connection.abort()``'s reason when there was
one, else ``SessionEndedError``'s message, else the close frame, else "connection closed by the
server".
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from planes.tasks import cancel_and_wait

log = structlog.get_logger("planes.wsconn")

BACKOFF_KEPT = 1000
MAX_DOUBLINGS = 64
"""The ceiling stops doubling here (it is at ``backoff_max_s`` long before): 2 ** 1100 would
not fit a float, and an outage of a few hours would otherwise end the supervisor."""
MAX_FRAME_BYTES = 2**22
CLOSE_TIMEOUT_S = 1.0


class SessionEndedError(Exception):
    """Raised inside a session: this connection is over (its message says why)."""


class StopReconnectingError(Exception):
    """Raised by a session: end the supervisor; ``start()`` raises ``cause`` if still waiting."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class Connection:
    """One open connection, handed to the owner's session; valid until the session ends."""

    __slots__ = ("_client", "_tasks", "end_reason", "healthy", "number", "ws")

    def __init__(self, client: ReconnectingWebSocket, ws: ClientConnection, number: int) -> None:
        self._client = client
        self.ws = ws
        self.number = number
        """1 for the first connection, 2 for the next ..."""
        self.end_reason: str | None = None
        self.healthy = False
        """Set by the owner once the connection proved useful: its end resets the backoff."""
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coro`` for this connection only: it is cancelled and awaited when it ends."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def send(self, message: Mapping[str, Any]) -> None:
        """Send ``message`` as JSON; ``SessionEndedError`` when the connection is closed."""
        try:
            await self.ws.send(json.dumps(message))
        except ConnectionClosed as exc:
            raise SessionEndedError(f"connection closed while sending: {exc}") from None

    def abort(self, reason: str) -> None:
        """End the connection now, without a closing handshake (it may be half-open)."""
        self.end_reason = reason
        if self.ws.transport is not None:
            self.ws.transport.abort()

    def opened(self) -> bool:
        """Settle the first open (``start()`` returns); True when this was the first."""
        return self._client.settle_first()

    async def _close(self) -> None:
        helpers = list(self._tasks)
        for helper in helpers:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        try:
            await asyncio.wait_for(self.ws.close(), CLOSE_TIMEOUT_S)
        except (TimeoutError, OSError, ConnectionClosed):
            if self.ws.transport is not None:
                self.ws.transport.abort()


Session = Callable[[Connection], Awaitable[None]]
"""Run one connection to its end (return, or raise ``SessionEndedError``)."""


def _ignore_failure(why: str) -> None:
    del why


def _ignore_end(why: str, healthy: bool) -> None:
    del why, healthy


class ReconnectingWebSocket:
    """See the module docstring."""

    def __init__(
        self,
        url: str,
        session: Session,
        *,
        name: str,
        open_timeout_s: float,
        backoff_initial_s: float,
        backoff_max_s: float,
        rng: random.Random,
        on_connect_failed: Callable[[str], None] = _ignore_failure,
        on_session_end: Callable[[str, bool], None] = _ignore_end,
    ) -> None:
        self.url = url
        self.name = name
        self.failures = 0
        """Failures in a row (failed connects and unhealthy sessions) since the last healthy one."""
        self.backoff_history: list[float] = []
        self.connection: Connection | None = None
        """The open connection while a session runs, else None."""
        self._session = session
        self._open_timeout_s = open_timeout_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._rng = rng
        self._on_connect_failed = on_connect_failed
        self._on_session_end = on_session_end
        self._supervisor: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None
        self._connections = 0

    @property
    def running(self) -> bool:
        """The supervisor is alive (connected or reconnecting)."""
        return self._supervisor is not None and not self._supervisor.done()

    @property
    def first_pending(self) -> bool:
        """``start()`` is still waiting for the first open to be settled."""
        return self._first is not None and not self._first.done()

    async def start(self) -> None:
        """Start the supervisor (once) and wait until the first open is settled."""
        loop = asyncio.get_running_loop()
        if not self.running:
            self._first = loop.create_future()
            self._supervisor = loop.create_task(self._supervise(), name=self.name)
        assert self._first is not None  # noqa: S101 - set with the supervisor
        await asyncio.shield(self._first)

    async def stop(self) -> None:
        """Stop the supervisor; wait until the socket and every helper task are gone."""
        task, self._supervisor = self._supervisor, None
        await cancel_and_wait(task)
        first = self._first
        if first is not None and not first.done():
            first.cancel()

    def settle_first(self) -> bool:
        """Let a waiting ``start()`` return; True when it was waiting."""
        first = self._first
        if first is None or first.done():
            return False
        first.set_result(None)
        return True

    async def _supervise(self) -> None:
        while True:
            try:
                ws = await connect(
                    self.url,
                    open_timeout=self._open_timeout_s,
                    ping_interval=None,  # Bybit wants its own {"op":"ping"}: the owner sends it
                    close_timeout=CLOSE_TIMEOUT_S,
                    max_size=MAX_FRAME_BYTES,
                )
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                self.failures += 1
                self._on_connect_failed(f"{type(exc).__name__}: {exc}")
                await self._backoff()
                continue
            self._connections += 1
            connection = self.connection = Connection(self, ws, self._connections)
            why = "connection closed by the server"
            given_up: BaseException | None = None
            try:
                await self._session(connection)
            except SessionEndedError as exc:
                why = str(exc)
            except ConnectionClosed as exc:
                why = f"connection closed: {exc}"
            except StopReconnectingError as stop:
                given_up = stop.cause
            finally:
                self.connection = None
                await connection._close()
            if given_up is not None:  # after the cleanup: start() sees nothing left running
                first = self._first
                if first is not None and not first.done():
                    first.set_exception(given_up)
                return
            healthy = connection.healthy
            self.failures = 0 if healthy else self.failures + 1
            self._on_session_end(connection.end_reason or why, healthy)
            await self._backoff()

    async def _backoff(self) -> None:
        doublings = min(max(0, self.failures - 1), MAX_DOUBLINGS)
        ceiling = min(self._backoff_max_s, self._backoff_initial_s * 2**doublings)
        delay = self._rng.uniform(0, ceiling)
        self.backoff_history.append(delay)
        del self.backoff_history[:-BACKOFF_KEPT]
        await asyncio.sleep(delay)
