"""The EventJournal on real SQLite files: seq contiguity, queue policies, durability, reading."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from contracts.enums import OrderStatus, OrderType, Side
from contracts.execution import OrderEvent
from contracts.market import KlineEvent, TickerEvent
from contracts.meta import EventMeta, Payload, Source
from contracts.topics import EXEC_ORDER_EVENT, MARKET_KLINE, MARKET_TICKER, BotEventMap
from planes.storage import journal as journal_module
from planes.storage.journal import (
    SYNCHRONOUS,
    EventJournal,
    JournalError,
    JournalFullPolicy,
    JournalRecord,
    decode,
    open_reader,
)
from tests.strategies import topics_and_payloads

ROOT = Path(__file__).resolve().parents[3]
TYPES: dict[str, type[Payload]] = {name: topic.payload for name, topic in BotEventMap.items()}
KLINE = MARKET_KLINE.name
ORDER = EXEC_ORDER_EVENT.name

MakeJournal = Callable[..., EventJournal]


def kline(i: int) -> KlineEvent:
    price = Decimal("17216.5") + Decimal(i) / 10
    return KlineEvent(
        meta=EventMeta(Source.MARKET, 1_700_000_000_000 + i * 60_000),
        exchange="bybit",
        symbol="BTCUSDT",
        interval="1m",
        start_ts=i,
        end_ts=i + 1,
        open=price,
        high=price + Decimal("2.5"),
        low=price - Decimal("1.25"),
        close=price + Decimal("0.5"),
        volume=Decimal("12.345"),
        closed=True,
    )


def order(i: int, correlation_id: str | None = None) -> OrderEvent:
    return OrderEvent(
        meta=EventMeta(Source.TRADING, 1_700_000_000_000 + i, correlation_id),
        order_id=f"o{i}",
        client_order_id=f"c{i}",
        venue="paper",
        symbol="BTCUSDT",
        side=Side.BUY if i % 2 else Side.SELL,
        order_type=OrderType.LIMIT,
        status=OrderStatus.FILLED,
        qty=Decimal("0.5"),
        filled_qty=Decimal("0.5"),
        price=Decimal("17216.00"),
        fee=Decimal("0.0125"),
        fee_asset="USDT",
    )


def ticker(i: int) -> TickerEvent:
    return TickerEvent(
        meta=EventMeta(Source.MARKET, i),
        exchange="bybit",
        symbol="BTCUSDT",
        last_price=Decimal("17216.5"),
        exchange_ts=i,
    )


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s} s")
        time.sleep(0.001)


@contextlib.contextmanager
def stalled_writer(path: Path) -> Iterator[None]:
    """Hold the file's write lock from another connection, as a slow or stuck disk would.

    The journal's writer waits in SQLite's busy handler (or fails and retries once its busy
    timeout is short) until the lock is released.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "journal.sqlite3"


@pytest.fixture
def make_journal(path: Path) -> Iterator[MakeJournal]:
    opened: list[EventJournal] = []

    def make(run_id: str = "run-1", **options: Any) -> EventJournal:
        journal = EventJournal(path, run_id, **options)
        journal.open()
        opened.append(journal)
        assert journal.wait_started(30)  # open() does not wait; these tests want it up
        return journal

    yield make
    for journal in opened:
        journal.close()


def seqs(records: Iterable[JournalRecord]) -> list[int]:
    return [record.seq for record in records]


# -- appending and seq -----------------------------------------------------------------------


def test_append_assigns_contiguous_seqs_and_stores_every_column(make_journal: MakeJournal) -> None:
    journal = make_journal()
    events: list[tuple[str, Payload]] = [
        (KLINE, kline(0)),
        (ORDER, order(1, "intent-7")),
        (KLINE, kline(2)),
    ]
    assert [journal.append(topic, payload) for topic, payload in events] == [1, 2, 3]
    assert journal.last_seq == 3
    assert journal.flush() == 3
    assert journal.durable_seq == 3

    records = list(journal.read())
    assert [(r.seq, r.run_id, r.topic) for r in records] == [
        (1, "run-1", KLINE),
        (2, "run-1", ORDER),
        (3, "run-1", KLINE),
    ]
    assert [(r.source, r.ts, r.correlation_id) for r in records] == [
        ("market", kline(0).meta.ts, None),
        ("trading", order(1).meta.ts, "intent-7"),
        ("market", kline(2).meta.ts, None),
    ]
    assert [decode(r, TYPES) for r in records] == [payload for _, payload in events]


def test_the_file_is_in_wal_mode(make_journal: MakeJournal, path: Path) -> None:
    make_journal()
    # Bytes 18 and 19 of the SQLite header are the write and read format versions: 2 is WAL.
    assert path.read_bytes()[18:20] == b"\x02\x02"


def test_a_payload_that_cannot_be_serialised_raises_and_uses_no_seq(
    make_journal: MakeJournal,
) -> None:
    journal = make_journal()
    broken = attrs.evolve(kline(0), closed=cast(Any, object()))
    with pytest.raises(TypeError):
        journal.append(KLINE, broken)
    assert journal.last_seq == 0
    assert journal.append(KLINE, kline(1)) == 1


def test_concurrent_appenders_get_unique_contiguous_seqs_in_their_own_order(
    make_journal: MakeJournal,
) -> None:
    journal = make_journal(batch_size=64)
    per_thread = 250

    def appender(k: int) -> None:
        for i in range(per_thread):
            journal.append(ORDER, order(k * 1_000 + i))

    threads = [threading.Thread(target=appender, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert journal.flush(5) == 4 * per_thread

    records = list(journal.read())
    assert seqs(records) == list(range(1, 4 * per_thread + 1))
    ids = [int(json.loads(r.payload)["order_id"][1:]) for r in records]
    for k in range(4):
        mine = [i for i in ids if i // 1_000 == k]
        assert mine == [k * 1_000 + i for i in range(per_thread)]


def test_reopening_continues_the_seq_of_the_previous_run(path: Path) -> None:
    with EventJournal(path, "run-1") as first:
        assert [first.append(ORDER, order(i)) for i in range(3)] == [1, 2, 3]
    with EventJournal(path, "run-2") as second:
        assert second.last_seq == second.durable_seq == 3
        assert [second.append(KLINE, kline(i)) for i in range(2)] == [4, 5]
    records = list(open_reader(path).read())
    assert [(r.seq, r.run_id) for r in records] == [
        (1, "run-1"),
        (2, "run-1"),
        (3, "run-1"),
        (4, "run-2"),
        (5, "run-2"),
    ]


@settings(deadline=None)
@given(st.lists(topics_and_payloads(), max_size=12))
def test_any_payload_of_any_topic_round_trips(events: list[tuple[Any, Payload]]) -> None:
    with (
        tempfile.TemporaryDirectory() as directory,
        EventJournal(Path(directory) / "j.sqlite3", "prop", flush_interval_s=0) as journal,
    ):
        assigned = [journal.append(topic.name, payload) for topic, payload in events]
        assert journal.flush() == len(events)
        records = list(journal.read())
    assert assigned == list(range(1, len(events) + 1))
    assert [(r.topic, r.source, r.ts, r.correlation_id) for r in records] == [
        (topic.name, p.meta.source.value, p.meta.ts, p.meta.correlation_id) for topic, p in events
    ]
    assert [decode(r, TYPES) for r in records] == [payload for _, payload in events]


# -- batching, flush and close ---------------------------------------------------------------


def test_flush_commits_at_once_instead_of_waiting_for_the_interval(
    make_journal: MakeJournal, path: Path
) -> None:
    journal = make_journal(flush_interval_s=60)
    assert journal.append(ORDER, order(0)) == 1
    # The writer holds the row back, waiting for a batch or the 60 s interval.
    assert (journal.last_seq, journal.durable_seq) == (1, 0)
    assert list(open_reader(path).read()) == []

    started = time.monotonic()
    assert journal.flush(timeout_s=10) == 1
    assert time.monotonic() - started < 5
    assert seqs(open_reader(path).read()) == [1]


def test_the_writer_commits_a_batch_as_soon_as_it_is_full(make_journal: MakeJournal) -> None:
    journal = make_journal(batch_size=10, flush_interval_s=60)
    for i in range(35):
        journal.append(ORDER, order(i))
    wait_until(lambda: journal.durable_seq == 30)
    time.sleep(0.05)
    assert journal.durable_seq == 30  # the last 5 wait for a full batch or the interval
    assert journal.metrics.batches == 3
    assert journal.flush(5) == 35
    metrics = journal.metrics
    assert (metrics.appended, metrics.committed, metrics.batches) == (35, 35, 4)
    assert 5 <= metrics.max_queue_depth <= 35
    assert (metrics.sampled, metrics.blocked, metrics.write_errors) == (0, 0, 0)


def test_the_append_that_fills_a_batch_hands_it_over_itself(make_journal: MakeJournal) -> None:
    journal = make_journal(batch_size=10, flush_interval_s=60)
    for i in range(9):
        journal.append(ORDER, order(i))
    assert journal.queue_depth == 9
    journal.append(ORDER, order(9))
    # No thread had a turn in between: the tenth append sent the batch on its way.
    assert journal.queue_depth == 0
    wait_until(lambda: journal.durable_seq == 10)
    assert journal.metrics.batches == 1


def test_one_round_is_in_flight_and_the_rows_behind_it_go_in_the_next_one(
    make_journal: MakeJournal, path: Path
) -> None:
    journal = make_journal(batch_size=10, flush_interval_s=60)
    with stalled_writer(path):
        for i in range(10):
            journal.append(ORDER, order(i))
        assert journal.queue_depth == 0  # the first round: in the writer process, stalled
        for i in range(10, 35):
            journal.append(ORDER, order(i))
        assert journal.queue_depth == 25  # full batches wait for the round before
        time.sleep(0.1)
        assert (journal.durable_seq, journal.queue_depth) == (0, 25)
    # Appends have stopped: the writer thread takes the answer and sends the two full batches.
    wait_until(lambda: journal.durable_seq == 30)
    assert journal.queue_depth == 5
    assert journal.metrics.max_queue_depth == 25
    assert journal.flush(5) == 35
    assert seqs(journal.read()) == list(range(1, 36))
    assert journal.metrics.batches == 4


def test_a_batch_bigger_than_one_statement_is_split_inside_one_transaction(
    make_journal: MakeJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "_MAX_STATEMENT_ROWS", 3)
    journal = make_journal(batch_size=10, flush_interval_s=60)
    for i in range(25):
        journal.append(ORDER, order(i))
    wait_until(lambda: journal.durable_seq == 20)  # two batches of 10: statements of 3, 3, 3, 1
    assert journal.flush(5) == 25
    assert journal.metrics.batches == 3
    records = list(journal.read())
    assert seqs(records) == list(range(1, 26))
    assert [json.loads(r.payload)["client_order_id"] for r in records] == [
        f"c{i}" for i in range(25)
    ]


def test_close_flushes_everything_and_is_idempotent(path: Path) -> None:
    journal = EventJournal(path, "run-1", flush_interval_s=60)
    journal.open()
    for i in range(100):
        journal.append(KLINE if i % 4 else ORDER, kline(i) if i % 4 else order(i))
    journal.close()
    journal.close()

    assert seqs(open_reader(path).read()) == list(range(1, 101))
    assert journal.flush() == 100
    assert seqs(journal.read(since_seq=98)) == [99, 100]  # reading works on a closed journal
    with pytest.raises(JournalError, match="is closed"):
        journal.append(ORDER, order(0))
    with pytest.raises(JournalError, match="already opened"):
        journal.open()


def test_close_that_cannot_flush_in_time_raises_and_keeps_the_journal_open(
    make_journal: MakeJournal, path: Path
) -> None:
    journal = make_journal(flush_interval_s=0)
    with stalled_writer(path):
        journal.append(ORDER, order(0))
        with pytest.raises(JournalError, match=r"events 1\.\.1 were not committed"):
            journal.close(timeout_s=0.05)
        assert journal.append(ORDER, order(1)) == 2
    journal.close()
    assert seqs(open_reader(path).read()) == [1, 2]


def test_append_needs_an_open_journal(path: Path) -> None:
    journal = EventJournal(path, "run-1")
    with pytest.raises(JournalError, match="is not open"):
        journal.append(ORDER, order(0))
    assert journal.flush() == 0
    journal.close()  # closing a journal that was never opened is a no-op


# -- when the queue is full ------------------------------------------------------------------


def test_a_full_queue_blocks_trading_topics_and_drops_nothing(
    make_journal: MakeJournal, path: Path
) -> None:
    journal = make_journal(queue_size=4, batch_size=1, flush_interval_s=0)
    blocked_result: list[int | None] = []
    with stalled_writer(path):
        assert journal.append(ORDER, order(0)) == 1
        wait_until(lambda: journal.queue_depth == 0)  # the writer holds seq 1, waiting on disk
        assert [journal.append(ORDER, order(i)) for i in range(1, 5)] == [2, 3, 4, 5]
        assert journal.queue_depth == 4

        appender = threading.Thread(
            target=lambda: blocked_result.append(journal.append(ORDER, order(5)))
        )
        appender.start()
        wait_until(lambda: journal.metrics.blocked == 1)
        appender.join(0.05)
        assert appender.is_alive()
        assert (journal.last_seq, journal.durable_seq) == (5, 0)
    appender.join(5)
    assert not appender.is_alive()
    assert blocked_result == [6]
    assert journal.flush(5) == 6

    records = list(journal.read())
    assert seqs(records) == [1, 2, 3, 4, 5, 6]
    assert [json.loads(r.payload)["client_order_id"] for r in records] == [
        f"c{i}" for i in range(6)
    ]
    assert journal.metrics.sampled == 0


def test_only_market_topics_are_sampled_and_only_while_the_queue_is_full(
    make_journal: MakeJournal, path: Path
) -> None:
    journal = make_journal(queue_size=4, batch_size=1, flush_interval_s=0, sample_every=3)
    assert journal.full_policy(KLINE) is JournalFullPolicy.SAMPLE
    assert journal.full_policy(ORDER) is JournalFullPolicy.BLOCK
    assert journal.full_policy("marketing:x") is JournalFullPolicy.BLOCK

    market_results: list[int | None] = []
    order_result: list[int | None] = []

    def market() -> None:
        for i in range(10, 13):
            # One at a time: the test reads the results while the third append is blocked.
            market_results.append(journal.append(KLINE, kline(i)))  # noqa: PERF401

    with stalled_writer(path):
        assert journal.append(ORDER, order(0)) == 1
        wait_until(lambda: journal.queue_depth == 0)
        # Room in the queue: market events are accepted like any other.
        assert [journal.append(KLINE, kline(i)) for i in range(1, 5)] == [2, 3, 4, 5]

        market_thread = threading.Thread(target=market)
        market_thread.start()
        wait_until(lambda: journal.metrics.blocked == 1)  # the third kline is kept: it waits
        assert market_results == [None, None]
        # Counted per topic: the first full-queue ticker is dropped though 3 klines came before.
        assert journal.append(MARKET_TICKER.name, ticker(0)) is None
        assert journal.metrics.sampled == 3

        order_thread = threading.Thread(
            target=lambda: order_result.append(journal.append(ORDER, order(1)))
        )
        order_thread.start()
        wait_until(lambda: journal.metrics.blocked == 2)  # a trading event is never sampled
        assert journal.last_seq == 5
    market_thread.join(5)
    order_thread.join(5)
    assert journal.flush(5) == 7

    assert market_results[:2] == [None, None]
    assert {market_results[2], order_result[0]} == {6, 7}
    records = list(journal.read())
    assert seqs(records) == list(range(1, 8))
    stored_klines = [json.loads(r.payload)["start_ts"] for r in records if r.topic == KLINE]
    assert stored_klines == [1, 2, 3, 4, 12]
    assert [r.topic for r in records].count(ORDER) == 2
    assert journal.metrics.sampled == 3


# -- write errors ----------------------------------------------------------------------------


def test_write_errors_are_logged_and_retried_until_the_batch_is_committed(
    make_journal: MakeJournal, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "_BUSY_TIMEOUT_S", 0.01)
    monkeypatch.setattr(journal_module, "_RETRY_INITIAL_S", 0.01)
    journal = make_journal(flush_interval_s=0)
    with capture_logs() as logs:
        with stalled_writer(path):
            for i in range(3):
                journal.append(ORDER, order(i))
            wait_until(lambda: journal.metrics.write_errors >= 2)
            assert journal.durable_seq == 0
        assert journal.flush(5) == 3
    assert seqs(journal.read()) == [1, 2, 3]

    failed = [e for e in logs if e["event"] == "journal.write_failed"]
    assert len(failed) == journal.metrics.write_errors
    assert failed[0]["log_level"] == "error"
    assert (failed[0]["first_seq"], failed[0]["attempt"]) == (1, 1)
    assert failed[0]["error_type"] == "OperationalError"
    recovered = [e for e in logs if e["event"] == "journal.write_recovered"]
    assert [e["last_seq"] for e in recovered] == [failed[0]["last_seq"]]  # the same batch


# -- reading ---------------------------------------------------------------------------------


@pytest.fixture
def thirty(make_journal: MakeJournal, monkeypatch: pytest.MonkeyPatch) -> EventJournal:
    """Thirty events (seq = i + 1): every third an order, of chain-0 or chain-1 by parity."""
    monkeypatch.setattr(journal_module, "_READ_PAGE", 7)  # cross page boundaries in every read
    journal = make_journal()
    for i in range(30):
        if i % 3 == 0:
            journal.append(ORDER, order(i, f"chain-{i % 2}"))
        else:
            journal.append(KLINE, kline(i))
    journal.flush()
    return journal


def test_read_by_seq_range(thirty: EventJournal) -> None:
    assert seqs(thirty.read()) == list(range(1, 31))
    assert seqs(thirty.read(since_seq=10, until_seq=20)) == list(range(11, 21))
    assert seqs(thirty.read(since_seq=28)) == [29, 30]
    assert seqs(thirty.read(until_seq=3)) == [1, 2, 3]
    assert seqs(thirty.read(since_seq=30)) == []


def test_read_by_topic_and_correlation_id(thirty: EventJournal) -> None:
    orders = [i + 1 for i in range(30) if i % 3 == 0]
    assert seqs(thirty.read(topics=[ORDER])) == orders
    assert seqs(thirty.read(topics={ORDER, KLINE})) == list(range(1, 31))
    assert seqs(thirty.read(topics=["strategy:intent"])) == []
    assert seqs(thirty.read(topics=[])) == []
    assert seqs(thirty.read(correlation_id="chain-0")) == [1, 7, 13, 19, 25]
    assert seqs(thirty.read(correlation_id="nope")) == []


def test_read_with_a_limit_and_every_filter_at_once(thirty: EventJournal) -> None:
    assert seqs(thirty.read(limit=7)) == list(range(1, 8))
    assert seqs(thirty.read(limit=15)) == list(range(1, 16))
    assert seqs(thirty.read(limit=0)) == []
    assert seqs(thirty.read(limit=100)) == list(range(1, 31))
    chain_1 = thirty.read(since_seq=5, topics=[ORDER], correlation_id="chain-1", limit=2)
    assert seqs(chain_1) == [10, 16]


def test_read_rejects_a_bare_string_of_topics_and_a_negative_limit(thirty: EventJournal) -> None:
    with pytest.raises(TypeError, match="not the string"):
        thirty.read(topics=KLINE)
    with pytest.raises(ValueError, match="limit"):
        thirty.read(limit=-1)


def test_a_reader_sees_commits_while_the_writer_runs(make_journal: MakeJournal, path: Path) -> None:
    journal = make_journal()
    reader = open_reader(path)
    journal.append(ORDER, order(0))
    journal.flush()
    assert seqs(reader.read()) == [1]
    journal.append(ORDER, order(1))
    journal.flush()
    assert seqs(reader.read()) == [1, 2]


# -- formats ---------------------------------------------------------------------------------


def test_a_json_line_has_the_export_keys_and_the_payload_as_an_object(
    make_journal: MakeJournal,
) -> None:
    journal = make_journal()
    journal.append(ORDER, order(3, "intent-1"))
    journal.flush()
    (record,) = journal.read()
    line = record.to_json_line()
    assert "\n" not in line
    data = json.loads(line)
    assert list(data) == ["seq", "run_id", "topic", "source", "ts", "correlation_id", "payload"]
    assert data["seq"] == 1
    assert data["run_id"] == "run-1"
    assert data["topic"] == ORDER
    assert data["source"] == "trading"
    assert data["ts"] == order(3).meta.ts
    assert data["correlation_id"] == "intent-1"
    assert data["payload"]["client_order_id"] == "c3"
    assert data["payload"]["price"] == "17216.00"
    assert data["payload"] == json.loads(record.payload)
    assert JournalRecord.from_json_line(line) == record


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        '{"seq": 1}',
        '{"seq":1,"run_id":"r","topic":"t","source":"s","ts":1,"correlation_id":null,"payload":"x"}',
    ],
)
def test_a_malformed_json_line_raises_a_journal_error(line: str) -> None:
    with pytest.raises(JournalError, match="not a journal line"):
        JournalRecord.from_json_line(line)


def test_decode_names_the_record_when_it_cannot_rebuild_the_payload() -> None:
    record = JournalRecord(
        seq=9,
        run_id="r",
        topic=ORDER,
        source="trading",
        ts=1,
        correlation_id=None,
        payload=json.dumps({"meta": {"source": "trading", "ts": 1}}),
    )
    with pytest.raises(JournalError, match=r"seq 9 .*does not decode as OrderEvent"):
        decode(record, TYPES)
    with pytest.raises(JournalError, match="seq 9: no payload class for topic 'exec:order_event'"):
        decode(record, {})


# -- files that are not journals -------------------------------------------------------------


def test_open_reader_names_a_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sqlite3"
    with pytest.raises(JournalError, match=f"no event journal at {missing}"):
        open_reader(missing)
    with pytest.raises(JournalError, match=f"{tmp_path} is not an event journal"):
        open_reader(tmp_path)


def test_a_file_that_is_not_sqlite_is_refused_by_reader_and_writer(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("these are not the events you are looking for\n" * 20)
    with pytest.raises(JournalError, match=f"{text} is not an event journal"):
        open_reader(text)
    for _ in range(2):  # the second attempt proves the failed first one released the lock
        with pytest.raises(JournalError, match=f"{text} is not an event journal"):
            EventJournal(text, "run-1").open()
    assert text.read_text().startswith("these are not")


def test_a_foreign_sqlite_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    foreign = tmp_path / "other.sqlite3"
    with contextlib.closing(sqlite3.connect(foreign)) as conn, conn:
        conn.execute("CREATE TABLE orders(id INTEGER PRIMARY KEY)")
    before = foreign.read_bytes()
    with pytest.raises(JournalError, match=f"{foreign} is not an event journal: it has no events"):
        open_reader(foreign)
    with pytest.raises(JournalError, match=f"{foreign} is not an event journal"):
        EventJournal(foreign, "run-1").open()
    assert foreign.read_bytes() == before


def test_a_journal_of_another_schema_version_is_refused(path: Path) -> None:
    with EventJournal(path, "run-1"):
        pass
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(JournalError, match="schema version 99, this code reads version 1"):
        open_reader(path)
    with pytest.raises(JournalError, match="schema version 99"):
        EventJournal(path, "run-2").open()


def test_a_second_writer_on_the_same_file_is_refused(make_journal: MakeJournal, path: Path) -> None:
    first = make_journal()
    with pytest.raises(JournalError, match=f"{path} is already open for writing") as info:
        EventJournal(path, "run-2").open()
    assert f"pid {os.getpid()}" in str(info.value)
    first.close()
    with EventJournal(path, "run-2") as second:
        assert second.append(ORDER, order(0)) == 1


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("synchronous", "sometimes"),
        ("batch_size", 0),
        ("queue_size", 0),
        ("sample_every", 0),
        ("flush_interval_s", -1.0),
    ],
)
def test_bad_options_are_refused(path: Path, option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=option):
        EventJournal(path, "run-1", **{option: value})


def test_every_synchronous_level_is_documented() -> None:
    assert set(SYNCHRONOUS) == {"off", "normal", "full"}


# -- a writer killed with SIGKILL ------------------------------------------------------------

KILLED_WRITER = """
import os, signal, sys
from decimal import Decimal
from pathlib import Path

from contracts.enums import OrderStatus, OrderType, Side
from contracts.execution import OrderEvent
from contracts.market import KlineEvent
from contracts.meta import EventMeta, Source
from contracts.topics import EXEC_ORDER_EVENT, MARKET_KLINE
from planes.logs import configure_logging
from planes.storage.journal import EventJournal

configure_logging("warning", stream=sys.stderr)
path, mode = Path(sys.argv[1]), sys.argv[2]
# Small batches, many commits; every topic blocks, so event i always gets seq i + 1.
journal = EventJournal(path, "killed", batch_size=64, flush_interval_s=0.001, sample_prefixes=())
journal.open()
ONE = Decimal(1)


def append(i):
    if i % 5 == 0:
        meta = EventMeta(Source.TRADING, i, f"chain-{i}")
        journal.append(EXEC_ORDER_EVENT.name, OrderEvent(
            meta=meta, order_id=f"o{i}", client_order_id=f"c{i}", venue="paper",
            symbol="BTCUSDT", side=Side.BUY, order_type=OrderType.MARKET,
            status=OrderStatus.FILLED, qty=ONE, filled_qty=ONE))
    else:
        journal.append(MARKET_KLINE.name, KlineEvent(
            meta=EventMeta(Source.MARKET, i), exchange="bybit", symbol="BTCUSDT", interval="1m",
            start_ts=i, end_ts=i + 1, open=ONE, high=ONE, low=ONE, close=ONE, volume=ONE,
            closed=True))


for i in range(1000):
    append(i)
print(journal.flush(), flush=True)
i = 1000
while True:
    append(i)
    i += 1
    if mode == "self" and i == 2000:
        os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.subprocess
@pytest.mark.parametrize("killer", ["parent", "self"])
def test_a_writer_killed_with_sigkill_leaves_a_contiguous_readable_journal(
    path: Path, killer: str
) -> None:
    path.parent.mkdir(parents=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(path), killer],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "1000"  # flushed before the kill
        if killer == "parent":
            time.sleep(0.2)  # the child keeps appending and committing batches
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr = proc.stderr.read() if proc.stderr is not None else ""
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == -signal.SIGKILL, stderr

    records = list(open_reader(path).read())
    committed = len(records)
    assert committed >= 1000
    if killer == "self":
        assert committed <= 2000
    assert seqs(records) == list(range(1, committed + 1))
    for record in records:
        payload = decode(record, TYPES)
        assert record.run_id == "killed"
        i = record.seq - 1
        if i % 5 == 0:
            assert isinstance(payload, OrderEvent)
            assert (payload.client_order_id, record.correlation_id) == (f"c{i}", f"chain-{i}")
        else:
            assert isinstance(payload, KlineEvent)
            assert payload.start_ts == i

    # The dead process's lock went with it: a new run continues right after the committed tail.
    with EventJournal(path, "after-kill") as journal:
        assert journal.last_seq == committed
        assert journal.append(ORDER, order(0)) == committed + 1
        assert journal.append(KLINE, kline(1)) == committed + 2
    records = list(open_reader(path).read())
    assert seqs(records) == list(range(1, committed + 3))
    assert [r.run_id for r in records[-3:]] == ["killed", "after-kill", "after-kill"]


# -- the writer process ----------------------------------------------------------------------


def test_the_writer_process_lives_as_long_as_the_journal_is_open(
    make_journal: MakeJournal,
) -> None:
    journal = make_journal()
    process = journal._process  # the process itself is what this test is about
    assert process is not None
    assert process.poll() is None
    journal.append(ORDER, order(0))
    os.kill(process.pid, signal.SIGTERM)  # a signal to the whole group: ignored, no flush lost
    os.kill(process.pid, signal.SIGINT)
    assert journal.flush(5) == 1
    journal.close()
    assert process.returncode == 0  # it ended at EOF, after its last commit
    assert seqs(journal.read()) == [1]


def test_a_writer_process_that_dies_fails_appends_and_flushes_with_the_reason(
    make_journal: MakeJournal,
) -> None:
    journal = make_journal(flush_interval_s=0)
    journal.append(ORDER, order(0))
    assert journal.flush(5) == 1
    process = journal._process  # killed from outside, as the OOM killer would
    assert process is not None
    with capture_logs() as logs:
        os.kill(process.pid, signal.SIGKILL)
        with contextlib.suppress(JournalError):  # the write after the kill finds it gone
            journal.append(ORDER, order(1))
        wait_until(lambda: any(e["event"] == "journal.writer_died" for e in logs))
    with pytest.raises(JournalError, match=r"writer of journal .* died .*after seq 1"):
        journal.append(ORDER, order(2))
    with pytest.raises(JournalError, match="died"):
        journal.flush(5)
    with pytest.raises(JournalError, match="died"):  # closing releases the file, then reports
        journal.close()
    assert seqs(journal.read()) == [1]  # what was committed stays readable
    with EventJournal(journal.path, "next-run") as after:  # and the lock went with the process
        assert after.append(ORDER, order(3)) == 2


def test_open_does_not_wait_for_the_writer_process_and_rows_queue_meanwhile(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A writer that takes its time to start (as on a loaded machine): open() returns at once,
    # appends (full batches included) queue, and everything is committed once it is up.
    slow = path.parent.parent / "slow_writer.py"
    slow.write_text(
        "import runpy, sys, time\n"
        "time.sleep(0.5)\n"
        f"sys.argv[0] = {journal_module.journal_writer.__file__!r}\n"
        f"runpy.run_path({journal_module.journal_writer.__file__!r}, run_name='__main__')\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(journal_module.journal_writer, "__file__", str(slow))
    journal = EventJournal(path, "run-1", batch_size=4, queue_size=1_000)
    started = time.monotonic()
    journal.open()
    try:
        assert time.monotonic() - started < 0.4
        assert journal.wait_started(0) is False
        seqs_given = [journal.append(ORDER, order(i)) for i in range(10)]
        assert seqs_given == list(range(1, 11))
        assert journal.queue_depth == 10  # nobody to hand the full batches to yet
        assert journal.flush(30) == 10
        assert journal.wait_started(0) is True
    finally:
        journal.close()
    assert seqs(journal.read()) == list(range(1, 11))


def test_a_writer_process_that_fails_to_start_fails_the_journal_with_the_reason(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = path.parent.parent / "broken_writer.py"
    broken.write_text("import sys\nsys.exit(3)\n", encoding="utf-8")
    monkeypatch.setattr(journal_module.journal_writer, "__file__", str(broken))
    journal = EventJournal(path, "run-1", flush_interval_s=0)
    with capture_logs() as logs:
        journal.open()  # the file itself is fine: open() prepared it
        with pytest.raises(JournalError, match=r"failed to start: .*exited \(status 3\)"):
            journal.wait_started(30)
    assert any(e["event"] == "journal.writer_died" for e in logs)
    with pytest.raises(JournalError, match=r"failed to start"):
        journal.append(ORDER, order(0))
    with pytest.raises(JournalError, match=r"failed to start"):
        journal.flush(5)
    with pytest.raises(JournalError, match=r"failed to start"):
        journal.close()
    monkeypatch.undo()
    with EventJournal(path, "next-run") as after:  # the lock was released
        assert after.append(ORDER, order(1)) == 1
        assert after.flush(30) == 1
