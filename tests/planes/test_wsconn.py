"""ReconnectingWebSocket against a real ``websockets`` server on 127.0.0.1: the first open,
cleanup by the supervisor alone, backoff with full jitter under a doubling ceiling, reset by a
healthy connection, the reasons a connection ended, and giving up on the owner's word."""

from __future__ import annotations

import asyncio
import json
import random
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from planes.wsconn import (
    Connection,
    ReconnectingWebSocket,
    SessionEndedError,
    StopReconnectingError,
)

pytestmark = pytest.mark.network

WAIT_S = 5.0


async def until(condition: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


class Echo:
    """A server that records what it receives and closes a connection after ``close_after``
    messages (never, by default)."""

    def __init__(self) -> None:
        self.received: list[tuple[int, Any]] = []
        self.connections = 0
        self.open = 0
        self.close_after: int | None = None
        self.server: Server | None = None

    async def handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        number = self.connections
        self.open += 1
        try:
            async for raw in ws:
                self.received.append((number, json.loads(raw)))
                await ws.send(raw)
                if self.close_after is not None and len(self.received) % self.close_after == 0:
                    await ws.close()
        except ConnectionClosed:
            pass
        finally:
            self.open -= 1

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = next(iter(self.server.sockets)).getsockname()[:2]
        return f"ws://{host}:{port}/"


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    fake = Echo()
    fake.server = await serve(fake.handler, "127.0.0.1", 0, ping_interval=None)
    yield fake
    fake.server.close()
    await fake.server.wait_closed()


def free_url() -> str:
    """A loopback URL nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"ws://127.0.0.1:{port}/"


class Owner:
    """An owner of a client: its session sends one hello, then behaves as ``behaviour`` says."""

    def __init__(self, url: str, behaviour: str = "stay", **kwargs: Any) -> None:
        self.behaviour = behaviour
        self.sessions: list[Connection] = []
        self.failed: list[str] = []
        self.ended: list[tuple[str, bool, int]] = []
        self.helper_cancelled = 0
        options: dict[str, Any] = {
            "open_timeout_s": 1.0,
            "backoff_initial_s": 0.01,
            "backoff_max_s": 0.04,
            "rng": random.Random(3),
        }
        options.update(kwargs)
        self.client = ReconnectingWebSocket(
            url,
            self.session,
            name="test-ws-supervisor",
            on_connect_failed=self.failed.append,
            on_session_end=self.end,
            **options,
        )

    def end(self, why: str, healthy: bool) -> None:
        self.ended.append((why, healthy, self.client.failures))

    async def helper(self) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.helper_cancelled += 1
            raise

    async def session(self, conn: Connection) -> None:
        self.sessions.append(conn)
        conn.spawn(self.helper(), "test-ws-helper")
        await asyncio.sleep(0)  # let the helper start, so that its cancellation is seen
        await conn.send({"hello": conn.number})
        behaviour = self.behaviour
        if behaviour == "give_up":
            raise StopReconnectingError(PermissionError("refused for good"))
        if behaviour == "healthy":
            conn.healthy = True
        conn.opened()
        if behaviour == "end":
            raise SessionEndedError("the owner ended it")
        if behaviour == "abort":
            conn.abort("aborted by the owner")
        async for _ in conn.ws:
            pass


def tasks(prefix: str = "test-ws-") -> list[str]:
    return sorted(t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(prefix))


async def test_start_waits_for_the_first_open_and_stop_cleans_up_everything(echo: Echo) -> None:
    owner = Owner(echo.url)
    await owner.client.start()
    await owner.client.start()  # idempotent: no second supervisor
    assert owner.client.running
    assert owner.client.connection is owner.sessions[0]
    assert tasks() == ["test-ws-helper", "test-ws-supervisor"]
    await until(lambda: echo.received == [(1, {"hello": 1})], "the hello")
    await owner.client.stop()
    await owner.client.stop()  # idempotent
    assert tasks() == []
    assert owner.helper_cancelled == 1
    assert owner.client.connection is None
    await until(lambda: echo.open == 0, "the server to see the close")
    assert echo.connections == 1


async def test_refused_connects_back_off_under_a_doubling_ceiling_and_never_give_up() -> None:
    owner = Owner(free_url(), backoff_initial_s=0.001, backoff_max_s=0.008)
    starting = asyncio.create_task(owner.client.start())
    await until(lambda: len(owner.failed) >= 8, "eight failed connects")
    for n, delay in enumerate(owner.client.backoff_history[:8], start=1):
        assert 0 <= delay <= min(0.008, 0.001 * 2 ** (n - 1))
    assert "ConnectionRefusedError" in owner.failed[0] or "OSError" in owner.failed[0]
    assert owner.client.failures >= 8
    assert not starting.done()  # start() waits for an open that has not come
    await owner.client.stop()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert tasks() == []


async def test_a_healthy_connection_resets_the_failures_an_unhealthy_one_counts(
    echo: Echo,
) -> None:
    echo.close_after = 1  # every connection is closed by the server after the hello
    unhealthy = Owner(echo.url, "stay")
    await unhealthy.client.start()
    await until(lambda: len(unhealthy.ended) >= 3, "three ends")
    await unhealthy.client.stop()
    assert [f for _, _, f in unhealthy.ended[:3]] == [1, 2, 3]
    assert all(not h for _, h, _ in unhealthy.ended)
    healthy = Owner(echo.url, "healthy", backoff_initial_s=0.005, backoff_max_s=5)
    await healthy.client.start()
    await until(lambda: len(healthy.ended) >= 3, "three more ends")
    await healthy.client.stop()
    assert [(h, f) for _, h, f in healthy.ended[:3]] == [(True, 0)] * 3
    assert max(healthy.client.backoff_history) <= 0.005  # never past the first ceiling
    assert healthy.ended[0][0].startswith("connection closed")
    assert tasks() == []


@pytest.mark.parametrize(
    ("behaviour", "why"),
    [("abort", "aborted by the owner"), ("end", "the owner ended it")],
)
async def test_the_reason_a_connection_ended_is_reported(
    echo: Echo, behaviour: str, why: str
) -> None:
    owner = Owner(echo.url, behaviour)
    await owner.client.start()
    await until(lambda: bool(owner.ended), "the end")
    await owner.client.stop()
    assert owner.ended[0][:2] == (why, False)
    assert owner.helper_cancelled >= 1  # the connection's helpers went with it
    assert tasks() == []


async def test_giving_up_ends_the_supervisor_and_start_raises_the_cause(echo: Echo) -> None:
    owner = Owner(echo.url, "give_up")
    with pytest.raises(PermissionError, match="refused for good"):
        await owner.client.start()
    assert not owner.client.running
    assert owner.helper_cancelled == 1
    assert owner.ended == []  # not a session end to reconnect from
    await until(lambda: echo.open == 0, "the server to see the close")
    assert echo.connections == 1
    assert tasks() == []


async def test_the_ceiling_stops_doubling_long_after_it_reached_the_cap() -> None:
    owner = Owner(free_url(), backoff_initial_s=0.001, backoff_max_s=0.002)
    owner.client.failures = 5_000  # hours of outage: 2 ** 4999 would not fit a float
    starting = asyncio.create_task(owner.client.start())
    await until(lambda: len(owner.client.backoff_history) >= 3, "three more delays")
    assert max(owner.client.backoff_history) <= 0.002
    assert owner.client.running
    await owner.client.stop()
    with pytest.raises(asyncio.CancelledError):
        await starting


async def test_settle_first_says_whether_start_was_waiting(echo: Echo) -> None:
    owner = Owner(echo.url)
    assert owner.client.settle_first() is False  # nothing started
    await owner.client.start()
    assert owner.sessions[0].opened() is False  # settled already by the session
    assert owner.client.first_pending is False
    await owner.client.stop()
