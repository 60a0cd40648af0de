"""Recovery's read path: the journal's reader process (``JournalReader.parsed``) and ``ReplayPlan``.

The reader process reads a journal's tail and matches each payload against its topic's regex
beside the process that rebuilds the state; the plan builds views and payloads from the groups
and must end with exactly what it builds from the JSON text.
"""

from __future__ import annotations

import gc
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from contracts.converter import fast_dumps, view_groups
from contracts.market import KlineEvent
from contracts.meta import Payload
from contracts.topics import EXEC_ORDER_EVENT, MARKET_KLINE, BotEventMap
from planes.execution.paper import BarView
from planes.state import StateError, StateHub
from planes.storage import journal as journal_module
from planes.storage.journal import EventJournal, JournalError, ParsedRow, open_reader
from planes.storage.rebuild import ReplayPlan
from tests.planes.storage.test_journal import kline, order

TYPES: dict[str, type[Payload]] = {name: topic.payload for name, topic in BotEventMap.items()}
KLINE, ORDER = MARKET_KLINE.name, EXEC_ORDER_EVENT.name
BAR_PATTERN = view_groups(KlineEvent, BarView)
assert BAR_PATTERN is not None
PATTERNS = {KLINE: BAR_PATTERN[0]}


def write(path: Path, events: list[tuple[str, Payload]]) -> None:
    journal = EventJournal(path, "run-1")
    journal.open()
    try:
        for topic, payload in events:
            journal.append(topic, payload)
    finally:
        journal.close()


def mixed(n: int) -> list[tuple[str, Payload]]:
    return [(ORDER, order(i)) if i % 4 == 0 else (KLINE, kline(i)) for i in range(n)]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal.sqlite3"


def expected(path: Path, patterns: Mapping[str, str], **query: Any) -> list[ParsedRow]:
    """What ``parsed`` must yield: ``payloads`` with each matching text turned into groups."""
    rows: list[ParsedRow] = []
    for seq, topic, text in open_reader(path).payloads(**query):
        found = re.fullmatch(patterns[topic], text) if topic in patterns else None
        rows.append((seq, topic, text if found is None else found.groups()))
    return rows


def test_parsed_rows_are_the_payload_rows_with_the_groups_of_each_matching_regex(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(path, mixed(40))
    with sqlite3.connect(path) as conn:  # a valid kline in another key order: no match
        text = conn.execute("SELECT payload FROM events WHERE seq = 2").fetchone()[0]
        reordered = '{"closed": true, ' + text[1:].replace(', "closed": true', "")
        conn.execute("UPDATE events SET payload = ? WHERE seq = 2", (reordered,))
    monkeypatch.setattr(journal_module, "_PARSED_PAGE", 7)  # several pages, one frame each
    reader = open_reader(path)
    patterns = {**PATTERNS}
    order_pattern = view_groups(TYPES[ORDER], TYPES[ORDER])
    assert order_pattern is not None  # an order event is read whole through its own regex
    patterns[ORDER] = order_pattern[0]
    for query in ({}, {"since_seq": 5, "until_seq": 33}, {"topics": [KLINE]}, {"since_seq": 40}):
        with reader.parsed(patterns=patterns, **query) as rows:
            got = list(rows)
        assert got == expected(path, patterns, **query), query
    rows_of_all = expected(path, patterns)
    assert rows_of_all[1] == (2, KLINE, reordered)  # came as text
    assert all(isinstance(body, tuple) for seq, _, body in rows_of_all if seq != 2)
    with reader.parsed(topics=[]) as rows:
        assert list(rows) == []


def test_without_patterns_every_row_comes_as_its_text(path: Path) -> None:
    write(path, mixed(9))
    with open_reader(path).parsed() as rows:
        assert list(rows) == list(open_reader(path).payloads())


def test_text_reads_one_payload_again_by_seq(path: Path) -> None:
    events = mixed(5)
    write(path, events)
    reader = open_reader(path)
    assert reader.text(3) == fast_dumps(events[2][1])
    with pytest.raises(JournalError, match="no event at seq 99"):
        reader.text(99)


def started(rows: Iterator[ParsedRow], parsed: Any) -> Any:
    next(rows)  # the reader process starts with the first row
    process = parsed._process
    assert process is not None
    assert process.poll() is None  # blocked on a full pipe: the journal is bigger than it
    return process


def test_closing_the_rows_midway_ends_the_reader_process(path: Path) -> None:
    write(path, mixed(10_000))  # about 3 MB of JSON: more than the pipe holds
    parsed = open_reader(path).parsed()
    rows = iter(parsed)
    process = started(rows, parsed)
    parsed.close()
    assert process.poll() is not None
    assert parsed._process is None
    assert len(list(rows)) < journal_module._PARSED_PAGE  # the rest of the page already read


def test_rows_dropped_unclosed_end_the_reader_process_without_the_collector(path: Path) -> None:
    write(path, mixed(10_000))
    parsed = open_reader(path).parsed()
    rows = iter(parsed)
    gc.disable()  # recovery runs with the collector paused: no cycle may keep the child alive
    try:
        process = started(rows, parsed)
        del parsed, rows
        assert process.wait(5) is not None
    finally:
        gc.enable()


def test_a_reader_process_that_dies_midway_fails_the_iteration(path: Path) -> None:
    write(path, mixed(10_000))
    parsed = open_reader(path).parsed()
    rows = iter(parsed)
    started(rows, parsed).kill()
    with pytest.raises(JournalError, match=r"reader process exited \(status -9\) before the end"):
        list(rows)
    assert parsed._process is None


def test_a_damaged_file_fails_the_iteration_with_what_sqlite_said(path: Path) -> None:
    write(path, mixed(10))
    reader = open_reader(path)
    path.write_bytes(b"not a database at all, " * 100)
    with pytest.raises(JournalError, match=f"{re.escape(str(path))}: DatabaseError: file is not"):
        list(reader.parsed())


# -- the plan ----------------------------------------------------------------------------------


class Recorder:
    """A stateful component that keeps what recovery hands it: views, loads and payloads."""

    state_key = "recorder"
    state_topics = frozenset({KLINE, ORDER})
    replay_views: Mapping[str, type] = {KLINE: BarView}

    def __init__(self, fail_on: int | None = None) -> None:
        self.got: list[tuple[str, Any]] = []
        self.loads: list[Callable[[], Any]] = []
        self.fail_on = fail_on

    def export_state(self) -> dict[str, Any]:
        return {}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        pass

    def replay_event(self, topic: str, payload: Any) -> None:
        self.got.append((topic, payload))

    def replay_view(self, topic: str, view: Any, load: Callable[[], Any]) -> None:
        if self.fail_on is not None and view.start_ts == self.fail_on:
            raise ValueError("this bar")
        self.got.append((topic, view))
        self.loads.append(load)

    def recovered(self) -> None:
        pass


def plan_of(recorder: Recorder) -> ReplayPlan:
    hub = StateHub()
    hub.add(recorder, "recorder")
    return ReplayPlan(hub, TYPES)


def test_the_plan_builds_from_groups_what_it_builds_from_text(path: Path) -> None:
    events = mixed(30)
    write(path, events)
    reader = open_reader(path)
    by_text, by_groups = Recorder(), Recorder()
    plan = plan_of(by_groups)
    assert set(plan.patterns) == {KLINE, ORDER}  # the view's regex; the order event's own
    assert plan_of(by_text).replay(reader.payloads()) == 30
    with reader.parsed(patterns=plan.patterns) as rows:
        assert all(isinstance(body, tuple) for _, _, body in expected(path, plan.patterns))
        assert plan.replay(rows, rows.text) == 30
    assert by_groups.got == by_text.got
    assert [load() for load in by_groups.loads] == [load() for load in by_text.loads]
    assert [load() for load in by_groups.loads] == [p for t, p in events if t == KLINE]


def test_groups_that_do_not_convert_are_read_from_the_text() -> None:
    bar = kline(7)
    text = fast_dumps(bar)
    good = re.fullmatch(PATTERNS[KLINE], text)
    assert good is not None
    bad = ("BTCUSDT", "1m", "x", "y", "maybe")  # what no journal text can give
    by_text, by_groups = Recorder(), Recorder()
    plan_of(by_text).replay([(1, KLINE, text)])
    plan_of(by_groups).replay([(1, KLINE, bad)], {1: text}.__getitem__)
    assert by_groups.got == by_text.got
    with pytest.raises(JournalError, match="no way to read its text again"):
        plan_of(Recorder()).replay([(1, KLINE, bad)])


def test_a_payload_stored_as_bytes_is_read_as_its_text() -> None:
    event = order(3)
    by_text, by_bytes = Recorder(), Recorder()
    plan_of(by_text).replay([(1, ORDER, fast_dumps(event))])
    plan_of(by_bytes).replay([(1, ORDER, fast_dumps(event).encode())])  # type: ignore[list-item]
    assert by_bytes.got == by_text.got == [(ORDER, event)]


def test_a_component_that_fails_on_a_view_is_named() -> None:
    rows = [(i, KLINE, fast_dumps(kline(i))) for i in range(1, 4)]
    with pytest.raises(StateError, match=r"state 'recorder': replay of market:kline failed: "):
        plan_of(Recorder(fail_on=2)).replay(rows)
