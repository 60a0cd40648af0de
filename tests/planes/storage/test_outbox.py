"""The outbox: persisted before sending, deduped, retried with capped backoff, dead-lettered,
and at-least-once across a crash."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from structlog.testing import capture_logs

from contracts.enums import ScenarioState
from planes.storage.outbox import Outbox, OutboxError, OutboxItem, OutboxState
from planes.storage.registry import Registry

ROOT = Path(__file__).resolve().parents[3]
PENDING, SENDING, SENT, FAILED, DEAD = (
    OutboxState.PENDING,
    OutboxState.SENDING,
    OutboxState.SENT,
    OutboxState.FAILED,
    OutboxState.DEAD_LETTER,
)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "registry.sqlite3"


@pytest.fixture
def outbox(path: Path) -> Iterator[Outbox]:
    with Outbox(path, max_attempts=4, backoff_initial_ms=1_000, backoff_max_ms=5_000) as box:
        yield box


def enqueue(box: Outbox, key: str = "k1", now: int = 100, body: str = "hello") -> OutboxItem:
    return box.enqueue("telegram", body, dedupe_key=key, now_ms=now)


def state_on_disk(path: Path, item_id: int) -> tuple[str, int]:
    """Read an item's state from a separate connection: what a restart would see."""
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT state, attempts FROM outbox WHERE id = ?", (item_id,)).fetchone()
    conn.close()
    return str(row[0]), int(row[1])


# -- enqueue and dedupe --------------------------------------------------------------------


def test_enqueue_persists_before_anything_is_sent(outbox: Outbox, path: Path) -> None:
    item = enqueue(outbox, now=100)
    assert (item.state, item.attempts, item.next_attempt_ms, item.last_error) == (
        PENDING,
        0,
        100,
        None,
    )
    assert (item.channel, item.body, item.dedupe_key) == ("telegram", "hello", "k1")
    assert state_on_disk(path, item.id) == ("pending", 0)
    with Outbox(path) as other:
        assert other.item(item.id) == item


def test_the_same_dedupe_key_returns_the_existing_message(outbox: Outbox) -> None:
    first = enqueue(outbox, "alert:42")
    with capture_logs() as logs:
        again = enqueue(outbox, "alert:42", now=500)
    assert again == first
    assert outbox.backlog()["pending"] == 1
    assert logs == [
        {
            "event": "outbox_duplicate",
            "log_level": "debug",
            "dedupe_key": "alert:42",
            "id": first.id,
            "same_content": True,
        }
    ]


def test_a_key_reused_with_other_content_keeps_the_first_and_warns(outbox: Outbox) -> None:
    first = enqueue(outbox, "k", body="one")
    with capture_logs() as logs:
        again = enqueue(outbox, "k", body="two")
    assert again.body == "one"
    assert again.id == first.id
    assert [(e["log_level"], e["same_content"]) for e in logs] == [("warning", False)]


def test_dedupe_holds_after_delivery_and_across_a_reopen(path: Path) -> None:
    with Outbox(path) as box:
        item = enqueue(box)
        box.claim_due(200)
        box.mark_sent(item.id, 300)
    with Outbox(path) as box:
        again = enqueue(box, now=400)
        assert (again.id, again.state) == (item.id, SENT)
        assert box.claim_due(10_000) == []


@pytest.mark.parametrize(
    ("channel", "body", "key", "message"),
    [
        ("", "b", "k", "outbox channel must be a non-empty string"),
        ("t", "b", "", "outbox dedupe_key must be a non-empty string"),
        ("t", b"b", "k", "outbox body must be a string, got bytes"),
    ],
)
def test_bad_messages_are_refused(
    outbox: Outbox, channel: str, body: Any, key: str, message: str
) -> None:
    with pytest.raises(OutboxError, match=message):
        outbox.enqueue(channel, body, dedupe_key=key, now_ms=1)
    assert outbox.items() == []


# -- claiming ------------------------------------------------------------------------------


def test_claim_due_marks_sending_persistently_and_counts_the_attempt(
    outbox: Outbox, path: Path
) -> None:
    item = enqueue(outbox, now=100)
    assert outbox.claim_due(99) == []  # not due yet
    [claimed] = outbox.claim_due(100)
    assert (claimed.id, claimed.state, claimed.attempts, claimed.updated_ms) == (
        item.id,
        SENDING,
        1,
        100,
    )
    assert state_on_disk(path, item.id) == ("sending", 1)
    assert outbox.claim_due(10_000) == []  # a message in flight is never claimed twice


def test_claim_due_takes_the_oldest_due_first_up_to_the_limit(outbox: Outbox) -> None:
    for n, now in enumerate((300, 100, 200, 900)):
        enqueue(outbox, f"k{n}", now=now)
    claimed = outbox.claim_due(500, limit=2)
    assert [c.dedupe_key for c in claimed] == ["k1", "k2"]
    assert [c.dedupe_key for c in outbox.claim_due(500)] == ["k0"]
    assert outbox.claim_due(500, limit=0) == []
    assert outbox.next_due_ms() == 900


def test_mark_sent(outbox: Outbox) -> None:
    item = enqueue(outbox)
    outbox.claim_due(100)
    sent = outbox.mark_sent(item.id, 150)
    assert (sent.state, sent.updated_ms, sent.attempts) == (SENT, 150, 1)
    assert outbox.next_due_ms() is None
    with pytest.raises(
        OutboxError, match=r"outbox item 1 is sent, not sending: cannot mark it sent"
    ):
        outbox.mark_sent(item.id, 160)


def test_marking_an_unclaimed_or_unknown_item_is_refused(outbox: Outbox) -> None:
    item = enqueue(outbox)
    with pytest.raises(OutboxError, match=r"is pending, not sending: cannot mark it failed"):
        outbox.mark_failed(item.id, "x", 200)
    with pytest.raises(OutboxError, match=r"^unknown outbox item 999$"):
        outbox.mark_sent(999, 200)
    assert outbox.item(item.id) == item


# -- retries -------------------------------------------------------------------------------


def fail_once(box: Outbox, item_id: int, now: int, **kwargs: Any) -> OutboxItem:
    [claimed] = box.claim_due(now)
    assert claimed.id == item_id
    return box.mark_failed(item_id, "HTTP 502", now, **kwargs)


def test_backoff_doubles_and_is_capped(path: Path) -> None:
    with Outbox(path, max_attempts=10, backoff_initial_ms=1_000, backoff_max_ms=5_000) as box:
        assert [box.backoff_ms(n) for n in range(7)] == [
            0,
            1_000,
            2_000,
            4_000,
            5_000,
            5_000,
            5_000,
        ]
        assert box.backoff_ms(10_000) == 5_000
        item = enqueue(box, now=0)
        now, waits = 0, []
        for _ in range(6):
            failed = fail_once(box, item.id, now)
            assert failed.state is FAILED
            assert failed.last_error == "HTTP 502"
            waits.append(failed.next_attempt_ms - now)
            assert box.claim_due(failed.next_attempt_ms - 1) == []  # not before its time
            now = failed.next_attempt_ms
        assert waits == [1_000, 2_000, 4_000, 5_000, 5_000, 5_000]


def test_retry_after_replaces_the_backoff_even_beyond_the_cap(outbox: Outbox) -> None:
    item = enqueue(outbox, now=0)
    failed = fail_once(outbox, item.id, 10, retry_after_ms=60_000)
    assert failed.next_attempt_ms == 60_010
    assert outbox.claim_due(60_009) == []
    assert [c.id for c in outbox.claim_due(60_010)] == [item.id]
    short = outbox.mark_failed(item.id, "429", 60_010, retry_after_ms=10)
    assert short.next_attempt_ms == 60_020


def test_dead_letter_after_max_attempts(outbox: Outbox) -> None:
    item = enqueue(outbox, now=0)
    now = 0
    for attempt in range(1, 5):
        result = fail_once(outbox, item.id, now)
        now = result.next_attempt_ms
        assert result.attempts == attempt
    assert result.state is DEAD
    assert outbox.claim_due(10**12) == []
    assert outbox.next_due_ms() is None
    assert outbox.backlog() == {
        "pending": 0,
        "sending": 0,
        "sent": 0,
        "failed": 0,
        "dead_letter": 1,
    }
    assert [i.id for i in outbox.items(DEAD)] == [item.id]


def test_a_permanent_failure_is_dead_at_once(outbox: Outbox) -> None:
    item = enqueue(outbox, now=0)
    with capture_logs() as logs:
        dead = fail_once(outbox, item.id, 5, permanent=True)
    assert (dead.state, dead.attempts) == (DEAD, 1)
    assert logs[0]["event"] == "outbox_dead_letter"
    assert logs[0]["permanent"] is True


def test_requeue_gives_a_dead_letter_a_fresh_start(outbox: Outbox) -> None:
    item = enqueue(outbox, now=0)
    fail_once(outbox, item.id, 5, permanent=True)
    again = outbox.requeue(item.id, 50)
    assert (again.state, again.attempts, again.next_attempt_ms) == (PENDING, 0, 50)
    with pytest.raises(OutboxError, match=r"is pending, not dead_letter: cannot requeue"):
        outbox.requeue(item.id, 60)


# -- crash and resume ----------------------------------------------------------------------


def test_resume_returns_interrupted_sends_to_pending(path: Path) -> None:
    with Outbox(path, max_attempts=3) as box:
        a = enqueue(box, "a", now=0)
        b = enqueue(box, "b", now=0)
        box.claim_due(10)  # both 'sending' ... then the process dies
    assert state_on_disk(path, a.id) == ("sending", 1)
    with Outbox(path, max_attempts=3) as box:
        assert box.claim_due(10_000) == []  # still 'sending' until resumed
        assert box.resume(now_ms=500) == 2
        for item_id in (a.id, b.id):
            item = box.item(item_id)
            assert item is not None
            assert (item.state, item.attempts, item.next_attempt_ms) == (PENDING, 1, 500)
            assert item.last_error == "interrupted while sending (the process stopped)"
        assert [c.id for c in box.claim_due(500)] == [a.id, b.id]
        assert box.resume(now_ms=600) == 2
        assert box.resume(now_ms=700) == 0


def test_resume_dead_letters_a_message_that_used_all_its_attempts(path: Path) -> None:
    with Outbox(path, max_attempts=2) as box:
        item = enqueue(box, now=0)
        fail_once(box, item.id, 0)
        box.claim_due(10**9)  # second and last attempt: the crash comes mid-send
        assert box.resume(now_ms=5) == 0
        resumed = box.item(item.id)
        assert resumed is not None
        assert (resumed.state, resumed.attempts) == (DEAD, 2)


@pytest.mark.subprocess
def test_a_killed_sender_leaves_sending_and_resume_recovers_it(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from planes.storage.outbox import Outbox
        box = Outbox(Path({str(path)!r}))
        box.enqueue("telegram", "fill BTCUSDT", dedupe_key="fill:1", now_ms=1)
        box.enqueue("telegram", "later", dedupe_key="fill:2", now_ms=10_000)
        box.claim_due(5)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    with Outbox(path) as box:
        assert box.backlog() == {
            "pending": 1,
            "sending": 1,
            "sent": 0,
            "failed": 0,
            "dead_letter": 0,
        }
        assert box.resume(now_ms=20) == 1
        assert [c.body for c in box.claim_due(20)] == ["fill BTCUSDT"]


# -- housekeeping and sharing the file -----------------------------------------------------


def test_purge_sent_forgets_old_deliveries_only(outbox: Outbox) -> None:
    for key, now in (("old", 0), ("new", 1_000)):
        item = enqueue(outbox, key, now=now)
        outbox.claim_due(now)
        outbox.mark_sent(item.id, now)
    enqueue(outbox, "waiting", now=0)
    assert outbox.purge_sent(before_ms=500) == 1
    assert sorted(i.dedupe_key for i in outbox.items()) == ["new", "waiting"]


def test_items_by_state_and_limit(outbox: Outbox) -> None:
    for n in range(3):
        enqueue(outbox, f"k{n}", now=n)
    outbox.claim_due(0)
    assert [i.dedupe_key for i in outbox.items("pending")] == ["k1", "k2"]
    assert [i.dedupe_key for i in outbox.items(limit=1)] == ["k0"]
    with pytest.raises(OutboxError, match=r"'lost' is not an outbox state"):
        outbox.items("lost")


def test_the_outbox_shares_the_registry_file(path: Path) -> None:
    with Registry(path) as registry, Outbox(path) as box:
        registry.seed("demo", "sma_cross", {"fast": 3}, now_ms=1)
        enqueue(box)
        registry.set_status("demo", ScenarioState.DISABLED, actor="cli", command="d", now_ms=2)
        assert box.backlog()["pending"] == 1
    with Registry(path) as registry, Outbox(path) as box:
        assert [s.status for s in registry.scenarios()] == [ScenarioState.DISABLED]
        assert len(box.items()) == 1


def test_bad_settings_and_a_closed_outbox(path: Path) -> None:
    with pytest.raises(ValueError, match="max_attempts must be at least 1"):
        Outbox(path, max_attempts=0)
    with pytest.raises(ValueError, match="0 < backoff_initial_ms <= backoff_max_ms"):
        Outbox(path, backoff_initial_ms=10, backoff_max_ms=5)
    box = Outbox(path)
    box.close()
    box.close()
    with pytest.raises(OutboxError, match="the outbox is closed"):
        box.backlog()


def test_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(OutboxError, match=f"{path}: not a usable registry database"):
        Outbox(path)


# -- property: the outbox against a model --------------------------------------------------

MAX_ATTEMPTS = 3


def _open(path: Path) -> Outbox:
    return Outbox(path, max_attempts=MAX_ATTEMPTS, backoff_initial_ms=100, backoff_max_ms=400)


class OutboxMachine(RuleBasedStateMachine):
    """Any interleaving of enqueues, claims, outcomes, time and crashes matches a plain model:

    nothing is lost, nothing is claimed twice without an outcome or a crash in between, the
    schedule is the capped backoff (or Retry-After), and no message gets more than
    ``MAX_ATTEMPTS`` tries.
    """

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.path = Path(self.tmp.name) / "registry.sqlite3"
        self.box = _open(self.path)
        self.now = 0
        self.model: dict[int, dict[str, Any]] = {}  # id -> state, attempts, due
        self.in_flight: list[int] = []

    def teardown(self) -> None:
        self.box.close()
        self.tmp.cleanup()

    @rule(key=st.integers(0, 4))
    def enqueue(self, key: int) -> None:
        item = enqueue(self.box, f"k{key}", now=self.now)
        self.model.setdefault(item.id, {"state": PENDING, "attempts": 0, "due": self.now})

    @rule(ms=st.integers(0, 3_000))
    def tick(self, ms: int) -> None:
        self.now += ms

    @rule(limit=st.integers(1, 3))
    def claim(self, limit: int) -> None:
        due = sorted(
            (m["due"], i)
            for i, m in self.model.items()
            if m["state"] in (PENDING, FAILED) and m["due"] <= self.now
        )[:limit]
        claimed = self.box.claim_due(self.now, limit=limit)
        assert [c.id for c in claimed] == [i for _, i in due]
        for c in claimed:
            self.model[c.id].update(state=SENDING, attempts=self.model[c.id]["attempts"] + 1)
            self.in_flight.append(c.id)

    @precondition(lambda self: self.in_flight)
    @rule(pick=st.integers(0, 9))
    def sent(self, pick: int) -> None:
        item_id = self.in_flight.pop(pick % len(self.in_flight))
        self.box.mark_sent(item_id, self.now)
        self.model[item_id]["state"] = SENT

    @precondition(lambda self: self.in_flight)
    @rule(pick=st.integers(0, 9), retry_after=st.sampled_from([None, 1_000]))
    def failed(self, pick: int, retry_after: int | None) -> None:
        item_id = self.in_flight.pop(pick % len(self.in_flight))
        self.box.mark_failed(item_id, "boom", self.now, retry_after_ms=retry_after)
        attempts = self.model[item_id]["attempts"]
        if attempts >= MAX_ATTEMPTS:
            self.model[item_id]["state"] = DEAD
        else:
            wait = retry_after or min(400, 100 * 2 ** (attempts - 1))
            self.model[item_id].update(state=FAILED, due=self.now + wait)

    @rule()
    def crash_and_resume(self) -> None:
        self.box.close()
        self.box = _open(self.path)
        back = 0
        for item_id in self.in_flight:
            if self.model[item_id]["attempts"] >= MAX_ATTEMPTS:
                self.model[item_id]["state"] = DEAD
            else:
                self.model[item_id].update(state=PENDING, due=self.now)
                back += 1
        self.in_flight.clear()
        assert self.box.resume(self.now) == back

    @invariant()
    def matches_the_model(self) -> None:
        actual = {i.id: i for i in self.box.items()}
        assert set(actual) == set(self.model)
        for item_id, expected in self.model.items():
            got = actual[item_id]
            assert (got.state, got.attempts) == (expected["state"], expected["attempts"])
            assert got.attempts <= MAX_ATTEMPTS
            if got.state in (PENDING, FAILED):
                assert got.next_attempt_ms == expected["due"]
        counts = self.box.backlog()
        assert counts == {
            state.value: sum(m["state"] is state for m in self.model.values())
            for state in OutboxState
        }


OutboxMachine.TestCase.settings = settings(stateful_step_count=25)
test_outbox_matches_its_model = OutboxMachine.TestCase
