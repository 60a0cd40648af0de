"""The fake Bybit V5 public server, checked with a plain ``websockets`` client."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from tests.fakes.bybit_server import (
    DEFAULT_DATA_DIR,
    ENV_SAMPLES,
    SAMPLE_FILES,
    FakeBybitServer,
    load_samples,
    resolve_data_dir,
)

pytestmark = pytest.mark.network

REPO = Path(__file__).resolve().parents[2]
FAST = 200.0  # messages per second per topic: keeps every test well under a second


@pytest.fixture(autouse=True)
async def no_task_left_behind() -> AsyncIterator[None]:
    yield
    for _ in range(100):  # give closing connections up to a second to finish
        if not asyncio.all_tasks() - {asyncio.current_task()}:
            break
        await asyncio.sleep(0.01)
    assert asyncio.all_tasks() - {asyncio.current_task()} == set()


@pytest.fixture
async def server() -> AsyncIterator[FakeBybitServer]:
    async with FakeBybitServer(rate_hz=FAST, seed=7, kline_updates_per_bar=3) as srv:
        yield srv
    assert srv.errors == []
    assert srv.open_connections == 0


def client(url: str) -> Any:
    return connect(url, ping_interval=None, close_timeout=1, open_timeout=2)


async def send(ws: ClientConnection, op: str, *args: str, req_id: str | None = None) -> None:
    body: dict[str, Any] = {"op": op}
    if args:
        body["args"] = list(args)
    if req_id is not None:
        body["req_id"] = req_id
    await ws.send(json.dumps(body))


async def recv(ws: ClientConnection, timeout_s: float = 2.0) -> Any:
    async with asyncio.timeout(timeout_s):
        return json.loads(await ws.recv())


async def raw_frames(ws: ClientConnection, count: int, timeout_s: float = 3.0) -> list[str]:
    frames: list[str] = []
    async with asyncio.timeout(timeout_s):
        while len(frames) < count:
            frame = await ws.recv()
            assert isinstance(frame, str)
            frames.append(frame)
    return frames


async def data(ws: ClientConnection, count: int, timeout_s: float = 3.0) -> list[dict[str, Any]]:
    """The next ``count`` topic messages, skipping acks and pongs."""
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout_s):
        while len(out) < count:
            message = json.loads(await ws.recv())
            if "topic" in message:
                out.append(message)
    return out


async def subscribe(ws: ClientConnection, *topics: str, req_id: str = "s1") -> dict[str, Any]:
    """Subscribe and return the ack (topic messages that arrive first are skipped)."""
    await send(ws, "subscribe", *topics, req_id=req_id)
    async with asyncio.timeout(2):
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if message.get("op") == "subscribe" and message.get("req_id") == req_id:
                return message


async def silent(ws: ClientConnection, seconds: float) -> bool:
    """True when nothing at all arrives for ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            await ws.recv()
    except TimeoutError:
        return True
    return False


async def drain_until_closed(ws: ClientConnection) -> None:
    async with asyncio.timeout(2):
        while True:
            await ws.recv()


async def connect_once(url: str) -> None:
    async with client(url):
        pass


def apply_levels(book: dict[str, str], levels: list[list[str]]) -> None:
    for price, size in levels:
        if size == "0":
            book.pop(price, None)
        else:
            book[price] = size


async def test_subscribe_ack_echoes_req_id_and_records_the_request(
    server: FakeBybitServer,
) -> None:
    assert server.url == f"ws://127.0.0.1:{server.port}/v5/public/linear"
    async with client(server.url) as ws:
        ack = await subscribe(ws, "tickers.BTCUSDT", "publicTrade.BTCUSDT", req_id="abc")
        assert ack == {
            "success": True,
            "ret_msg": "",
            "conn_id": ack["conn_id"],
            "req_id": "abc",
            "op": "subscribe",
        }
        assert isinstance(ack["conn_id"], str)
        assert ack["conn_id"]
        assert server.connections == 1
        assert server.open_connections == 1
        assert server.subscribe_requests == [(0, ["tickers.BTCUSDT", "publicTrade.BTCUSDT"])]
        assert server.active_topics(0) == ["tickers.BTCUSDT", "publicTrade.BTCUSDT"]
        assert server.conn_info(0).path == "/v5/public/linear"
        await send(ws, "unsubscribe", "publicTrade.BTCUSDT", req_id="u1")
        async with asyncio.timeout(2):
            while (m := json.loads(await ws.recv())).get("op") != "unsubscribe":
                pass
        assert m["success"] is True
        assert m["req_id"] == "u1"
        assert server.active_topics(0) == ["tickers.BTCUSDT"]
        assert {m["topic"] for m in await data(ws, 10)} == {"tickers.BTCUSDT"}
    await server.wait_for(lambda: server.open_connections == 0)
    assert server.active_topics(0) == ["tickers.BTCUSDT"]
    assert server.violations == []


async def test_ping_is_answered_with_a_linear_pong_and_counted(server: FakeBybitServer) -> None:
    async with client(server.url) as ws:
        await send(ws, "ping", req_id="p1")
        pong = await recv(ws)
        assert pong == {
            "success": True,
            "ret_msg": "pong",
            "conn_id": pong["conn_id"],
            "req_id": "p1",
            "op": "ping",
        }
        await send(ws, "ping")
        assert (await recv(ws))["req_id"] == ""
        assert server.pings[0] == 2
        assert server.pings_total == 2
        assert server.conn_info(0).pings == 2
        assert await silent(ws, 0.1)  # nothing is streamed without a subscription


async def test_ticker_snapshot_then_deltas_that_omit_unchanged_fields(
    server: FakeBybitServer,
) -> None:
    sample = load_samples()["ticker_linear"]["data"]
    async with client(server.url) as ws:
        await subscribe(ws, "tickers.ETHUSDT")
        messages = await data(ws, 60)
    snapshot, deltas = messages[0], messages[1:]
    assert snapshot["type"] == "snapshot"
    assert snapshot["topic"] == "tickers.ETHUSDT"
    assert set(snapshot["data"]) == set(sample)
    assert snapshot["data"]["symbol"] == "ETHUSDT"
    assert Decimal(snapshot["data"]["bid1Price"]) < Decimal(snapshot["data"]["ask1Price"])
    assert {m["type"] for m in deltas} == {"delta"}
    cs = [m["cs"] for m in messages]
    ts = [m["ts"] for m in messages]
    assert all(b > a for a, b in itertools.pairwise(cs))
    assert all(b > a for a, b in itertools.pairwise(ts))
    merged = dict(snapshot["data"])
    seen: set[str] = set()
    for delta in deltas:
        fields = set(delta["data"])
        assert delta["data"]["symbol"] == "ETHUSDT"
        assert fields < set(sample)  # a strict subset: unchanged fields are omitted
        seen |= fields
        merged.update(delta["data"])
        assert Decimal(merged["bid1Price"]) < Decimal(merged["ask1Price"])
    assert {"lastPrice", "bid1Price", "ask1Price", "bid1Size", "markPrice"} <= seen
    assert "fundingRate" not in seen
    assert any("lastPrice" not in d["data"] for d in deltas)
    assert set(merged) == set(sample)


async def test_orderbook_snapshot_then_deltas_with_u_plus_one(server: FakeBybitServer) -> None:
    async with client(server.url) as ws:
        await subscribe(ws, "orderbook.50.BTCUSDT")
        messages = await data(ws, 80)
    snapshot, deltas = messages[0], messages[1:]
    assert snapshot["type"] == "snapshot"
    assert snapshot["data"]["s"] == "BTCUSDT"
    assert len(snapshot["data"]["b"]) == len(snapshot["data"]["a"]) == 50
    bids: dict[str, str] = {}
    asks: dict[str, str] = {}
    apply_levels(bids, snapshot["data"]["b"])
    apply_levels(asks, snapshot["data"]["a"])
    u, seq, deletes = snapshot["data"]["u"], snapshot["data"]["seq"], 0
    for delta in deltas:
        assert delta["type"] == "delta"
        assert delta["data"]["u"] == u + 1
        assert delta["data"]["seq"] > seq
        u, seq = delta["data"]["u"], delta["data"]["seq"]
        levels = delta["data"]["b"] + delta["data"]["a"]
        assert levels
        deletes += sum(1 for _, size in levels if size == "0")
        apply_levels(bids, delta["data"]["b"])
        apply_levels(asks, delta["data"]["a"])
        assert max(map(Decimal, bids)) < min(map(Decimal, asks))
        assert len(bids) == len(asks) == 50
    assert deletes > 0


async def test_trades_have_unique_ids_and_klines_confirm_each_bar(
    server: FakeBybitServer,
) -> None:
    async with client(server.url) as ws:
        await subscribe(ws, "publicTrade.BTCUSDT", "kline.5.BTCUSDT")
        messages = await data(ws, 40)
    trades = [t for m in messages if m["topic"] == "publicTrade.BTCUSDT" for t in m["data"]]
    assert len(trades) >= 20
    assert len({t["i"] for t in trades}) == len(trades)
    assert set(trades[0]) == set(load_samples()["trade"]["data"][0])
    bars = [m["data"][0] for m in messages if m["topic"] == "kline.5.BTCUSDT"]
    assert len(bars) >= 12
    first = bars[0]["start"]
    for n, bar in enumerate(bars[:12]):
        assert bar["confirm"] is (n % 3 == 2)  # kline_updates_per_bar=3
        assert bar["start"] == first + (n // 3) * 300_000
        assert bar["end"] == bar["start"] + 299_999
        assert Decimal(bar["low"]) <= Decimal(bar["close"]) <= Decimal(bar["high"])


async def test_drop_every_aborts_after_n_data_messages_without_a_close_frame() -> None:
    async with FakeBybitServer(rate_hz=FAST, drop_every=5) as server:
        async with client(server.url) as ws:
            await subscribe(ws, "tickers.BTCUSDT")
            messages = await data(ws, 5)
            with pytest.raises(ConnectionClosedError) as closed:
                await recv(ws)
            assert closed.value.rcvd is None  # no close frame: an abrupt TCP close
        assert [m["type"] for m in messages] == ["snapshot"] + ["delta"] * 4
        await server.wait_for(lambda: server.open_connections == 0)
        info = server.conn_info(0)
        assert info.dropped
        assert info.data_sent == 5
        assert server.sent["drop"] == 1
        # A reconnect gets a fresh snapshot whose cs continues past what was seen.
        async with client(server.url) as ws:
            await subscribe(ws, "tickers.BTCUSDT")
            again = await data(ws, 1)
        assert again[0]["type"] == "snapshot"
        assert again[0]["cs"] > messages[-1]["cs"]
        assert server.connections == 2
        assert server.subscribe_requests == [(0, ["tickers.BTCUSDT"]), (1, ["tickers.BTCUSDT"])]
        assert server.errors == []


async def test_restart_keeps_the_port_and_drops_every_connection(
    server: FakeBybitServer,
) -> None:
    port, url = server.port, server.url
    async with client(url) as ws:
        await subscribe(ws, "tickers.BTCUSDT")
        await data(ws, 2)
        await server.restart()
        with pytest.raises(ConnectionClosed):
            await drain_until_closed(ws)
    assert server.port == port
    assert server.starts == 2
    async with client(url) as ws:
        ack = await subscribe(ws, "tickers.BTCUSDT", req_id="after-restart")
        assert ack["success"] is True
        assert (await data(ws, 1))[0]["type"] == "snapshot"
    assert server.connections == 2
    # While down, connections are refused; then the same port serves again.
    restarting = asyncio.create_task(server.restart(down_s=0.3))
    await server.wait_for(lambda: not server.running)
    with pytest.raises(ConnectionRefusedError):
        await connect_once(url)
    await restarting
    async with client(url) as ws:
        assert (await subscribe(ws, "tickers.BTCUSDT"))["success"] is True


async def test_stall_stops_data_and_pongs_but_not_new_connections(
    server: FakeBybitServer,
) -> None:
    async with client(server.url) as ws:
        await subscribe(ws, "tickers.BTCUSDT")
        await data(ws, 3)
        assert server.stall(None) == [0]
        await asyncio.sleep(0.05)
        while not await silent(ws, 0.05):  # frames already in flight
            pass
        await send(ws, "ping", req_id="during-stall")
        assert await silent(ws, 0.3)
        assert server.conn_info(0).stalled
        assert server.pings_total == 0  # not even read: a half-open socket
        async with client(server.url) as fresh:
            assert (await subscribe(fresh, "tickers.BTCUSDT"))["success"] is True
            assert len(await data(fresh, 3)) == 3
        server.end_stall()
        frames = [json.loads(f) for f in await raw_frames(ws, 5)]
        assert any(f.get("op") == "ping" and f.get("req_id") == "during-stall" for f in frames)
        assert server.pings[0] == 1
        assert not server.conn_info(0).stalled
        # A timed stall ends by itself.
        server.stall(0.2)
        assert server.conn_info(0).stalled
        await server.wait_for(lambda: not server.conn_info(0).stalled, timeout_s=2)
        assert len(await data(ws, 3)) == 3


async def test_rejected_topic_fails_the_whole_request_and_is_never_streamed() -> None:
    async with FakeBybitServer(rate_hz=FAST, reject_topics={"tickers.BADUSDT"}) as server:
        async with client(server.url) as ws:
            ack = await subscribe(ws, "tickers.BADUSDT", "tickers.BTCUSDT", req_id="r1")
            assert ack["success"] is False
            assert ack["ret_msg"] == "Invalid symbol :[tickers.BADUSDT]"
            assert ack["req_id"] == "r1"
            assert ack["op"] == "subscribe"
            assert await silent(ws, 0.1)
            assert server.active_topics(0) == []
            assert (await subscribe(ws, "tickers.BTCUSDT", req_id="r2"))["success"] is True
            topics = {m["topic"] for m in await data(ws, 10)}
            assert topics == {"tickers.BTCUSDT"}
        assert server.violations == []
        assert server.sent["ack_fail"] == 1


async def test_bad_and_repeated_subscriptions_are_refused_and_counted(
    server: FakeBybitServer,
) -> None:
    async with client(server.url) as ws:
        assert (await subscribe(ws, "tickers.BTCUSDT"))["success"] is True
        again = await subscribe(ws, "tickers.BTCUSDT", req_id="s2")
        assert again["success"] is False
        assert again["ret_msg"] == "error:already subscribed,topic:tickers.BTCUSDT"
        bad = await subscribe(ws, "orderbook.7.BTCUSDT", req_id="s3")
        assert bad["success"] is False
        assert bad["ret_msg"] == "error:handler not found,topic:orderbook.7.BTCUSDT"
        await ws.send("not json")
        async with asyncio.timeout(2):
            while (m := json.loads(await ws.recv())).get("topic"):
                pass
        assert m["success"] is False
    assert len(server.violations) == 3


async def test_spot_refuses_more_than_ten_args_and_pongs_without_req_id() -> None:
    topics = [f"tickers.SYM{n}USDT" for n in range(11)]
    async with FakeBybitServer(category="spot", rate_hz=FAST) as server:
        assert server.url.endswith("/v5/public/spot")
        async with client(server.url) as ws:
            refused = await subscribe(ws, *topics, req_id="big")
            assert refused["success"] is False
            assert refused["ret_msg"] == "args size >10"
            assert len(server.violations) == 1
            assert server.active_topics(0) == []
            assert (await subscribe(ws, *topics[:10], req_id="ok"))["success"] is True
            assert (await subscribe(ws, topics[10], req_id="ok2"))["success"] is True
            messages = await data(ws, 30)
            assert {m["type"] for m in messages} == {"snapshot"}  # spot tickers: full each time
            assert set(messages[-1]["data"]) == set(load_samples()["ticker_spot"]["data"])
            await send(ws, "ping", req_id="p")
            async with asyncio.timeout(2):
                while (m := json.loads(await ws.recv())).get("op") != "ping":
                    pass
            assert m["ret_msg"] == "pong"
            assert "req_id" not in m
        assert len(server.violations) == 1


async def test_malformed_frames_appear_when_asked() -> None:
    async with FakeBybitServer(rate_hz=FAST, malformed_every=1) as server, client(server.url) as ws:
        await subscribe(ws, "tickers.BTCUSDT")
        frames = await raw_frames(ws, 20)
    decoded: list[Any] = []
    not_json = 0
    for frame in frames:
        try:
            decoded.append(json.loads(frame))
        except ValueError:
            not_json += 1
    assert not_json >= 2
    assert [] in decoded
    assert 42 in decoded
    assert None in decoded
    unknown = [d for d in decoded if isinstance(d, dict) and "unknownTopic" in d.get("topic", "")]
    assert unknown
    assert server.sent["malformed"] >= 9
    assert server.sent["malformed:truncated"] >= 2


async def test_duplicates_resend_the_previous_message_verbatim() -> None:
    async with FakeBybitServer(rate_hz=FAST, duplicate_every=3) as server, client(server.url) as ws:
        await subscribe(ws, "tickers.BTCUSDT")
        frames = await raw_frames(ws, 16)
    repeats = [n for n in range(1, len(frames)) if frames[n] == frames[n - 1]]
    assert len(repeats) >= 3
    assert server.sent["duplicate"] >= 3


async def test_out_of_order_orderbook_deltas_swap_and_skip() -> None:
    async with (
        FakeBybitServer(rate_hz=FAST, out_of_order_every=4) as server,
        client(server.url) as ws,
    ):
        await subscribe(ws, "orderbook.50.BTCUSDT")
        messages = await data(ws, 30)
    steps = [b["data"]["u"] - a["data"]["u"] for a, b in itertools.pairwise(messages)]
    assert -1 in steps  # swapped: u went backwards
    assert 2 in steps  # a gap: one u never sent
    assert server.sent["ob_swap"] >= 1
    assert server.sent["ob_gap"] >= 1
    for mode, expected in (("swap", -1), ("gap", 2)):
        server_kwargs: dict[str, Any] = {"out_of_order_every": 3, "out_of_order_mode": mode}
        async with (
            FakeBybitServer(rate_hz=FAST, **server_kwargs) as server,
            client(server.url) as ws,
        ):
            await subscribe(ws, "orderbook.1.BTCUSDT")
            us = [m["data"]["u"] for m in await data(ws, 12)]
        assert expected in [b - a for a, b in itertools.pairwise(us)]


async def test_faults_change_between_connections(server: FakeBybitServer) -> None:
    async with client(server.url) as ws:
        await subscribe(ws, "tickers.BTCUSDT")
        await data(ws, 8)
    server.set_faults(drop_every=3)
    async with client(server.url) as ws:
        await subscribe(ws, "tickers.BTCUSDT")
        await data(ws, 3)
        with pytest.raises(ConnectionClosedError):
            await recv(ws)
    server.clear_faults()
    async with client(server.url) as ws:
        await subscribe(ws, "tickers.BTCUSDT")
        assert len(await data(ws, 8)) == 8
    assert [server.conn_info(n).dropped for n in range(3)] == [False, True, False]
    with pytest.raises(ValueError, match="drop_every"):
        server.set_faults(drop_every=0)


async def test_reset_orderbook_sends_a_snapshot_with_u_one(server: FakeBybitServer) -> None:
    async with client(server.url) as ws:
        await subscribe(ws, "orderbook.50.BTCUSDT")
        before = await data(ws, 3)
        assert before[-1]["data"]["u"] > 1
        assert server.reset_orderbook() == 1
        async with asyncio.timeout(2):
            while (m := (await data(ws, 1))[0])["data"]["u"] != 1:
                pass
        assert m["type"] == "snapshot"
        assert len(m["data"]["b"]) == 50
        after = await data(ws, 2)
        assert [d["data"]["u"] for d in after] == [2, 3]


async def test_message_limit_stops_the_stream_but_not_the_pongs() -> None:
    async with FakeBybitServer(rate_hz=FAST, message_limit=4) as server, client(server.url) as ws:
        await subscribe(ws, "tickers.BTCUSDT")
        assert len(await data(ws, 4)) == 4
        assert await silent(ws, 0.1)
        await send(ws, "ping", req_id="x")
        assert (await recv(ws))["ret_msg"] == "pong"


async def test_streams_are_deterministic_given_the_seed() -> None:
    async def first_messages(seed: int) -> list[dict[str, Any]]:
        async with (
            FakeBybitServer(rate_hz=FAST, seed=seed, start_ts_ms=1_700_000_000_000) as s,
            client(s.url) as ws,
        ):
            await subscribe(ws, "orderbook.50.BTCUSDT", "tickers.BTCUSDT")
            return await data(ws, 20)

    one, two, other = await first_messages(3), await first_messages(3), await first_messages(4)
    assert one == two
    assert one != other


def test_the_samples_come_from_the_repository_or_the_directory_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_SAMPLES, raising=False)
    assert DEFAULT_DATA_DIR == REPO / "tests/data/bybit/ws/public"
    samples = load_samples()
    assert set(samples) == set(SAMPLE_FILES)
    for key, name in SAMPLE_FILES.items():
        on_disk = json.loads((DEFAULT_DATA_DIR / name).read_text(encoding="utf-8"))
        assert samples[key] == on_disk, name
        assert isinstance(on_disk["topic"], str), name
    other = tmp_path / "samples"
    other.mkdir()
    for key, name in SAMPLE_FILES.items():
        (other / name).write_text(json.dumps({**samples[key], "marker": key}), encoding="utf-8")
    monkeypatch.setenv(ENV_SAMPLES, str(other))
    assert resolve_data_dir() == other
    assert load_samples()["kline"]["marker"] == "kline"
    with pytest.raises(FileNotFoundError, match="Bybit sample directory not found"):
        load_samples(tmp_path / "nowhere")


@pytest.mark.subprocess
async def test_cli_serves_until_interrupted() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.bybit_server",
        "--port",
        "0",
        "--rate-hz",
        "50",
        "--drop-every",
        "3",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        url = ""
        async with asyncio.timeout(10):
            while not url:
                line = (await proc.stdout.readline()).decode()  # type: ignore[union-attr]
                assert line, "the CLI exited before printing its url"
                if " url " in line:
                    url = line.split(" url ", 1)[1].split()[0]
        async with client(url) as ws:
            assert (await subscribe(ws, "tickers.BTCUSDT"))["success"] is True
            await data(ws, 3)
            with pytest.raises(ConnectionClosedError):
                await recv(ws)
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        text = out.decode()
        assert "conn #0 open" in text
        assert "conn #0 drop after 3 data messages" in text
        assert "stats:" in text
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
