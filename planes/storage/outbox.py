"""The outbox: notifications persisted before they are sent, retried until delivered or dead.

Rows of the ``outbox`` table in the registry file (WAL, ``synchronous=FULL``), each one
message for one ``channel`` with a ``body`` the notifier understands. Life of a message::

    enqueue -> pending --claim_due--> sending --mark_sent--> sent
                  ^                      |
                  |                      +--mark_failed--> failed --(due again)--> sending ...
                  |                      |                   (or dead_letter after max_attempts)
                  +------resume----------+  (a crash left it 'sending')

* **Persisted first.** ``enqueue`` commits the message before anyone tries to send it, so a
  crash never loses an accepted notification.
* **Dedupe.** ``dedupe_key`` is unique: enqueueing a key again returns the existing message
  (whatever its state) and stores nothing, so a replayed event does not notify twice.
* **Claiming.** ``claim_due`` moves due ``pending``/``failed`` messages to ``sending`` in one
  committed transaction and counts the attempt there, before the send: a message whose sending
  crashes the process is still dead-lettered after ``max_attempts`` tries.
* **Retries.** ``mark_failed`` schedules the next try after ``backoff_ms(attempts)``:
  ``backoff_initial_ms * 2 ** (attempts - 1)``, capped at ``backoff_max_ms``. A ``retry_after_ms``
  from the channel (HTTP 429) replaces the backoff, uncapped: sending earlier would be refused
  again. After ``max_attempts`` attempts, or for a ``permanent`` failure, the message becomes a
  ``dead_letter`` and is never tried again unless ``requeue`` brings it back.
* **At least once.** ``resume`` (at boot) returns messages left in ``sending`` by a crash to
  ``pending``, due at once: one may have gone out just before the crash and go out again.
"""

from __future__ import annotations

import contextlib
import enum
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import attrs
import structlog

from planes.storage.registry import RegistryError, check_schema, open_database, transaction

SCHEMA_VERSION = 1
"""The outbox schema this build writes; a newer one in the file is refused."""

log = structlog.get_logger("planes.storage.outbox")


class OutboxError(Exception):
    """An outbox operation was refused or failed; the message names the item and why."""


class OutboxState(enum.StrEnum):
    """Where a message stands."""

    PENDING = "pending"
    """Waiting for its first (or, after ``resume``, its next) attempt; due at once."""
    SENDING = "sending"
    """Claimed by a sender; its attempt is counted."""
    SENT = "sent"
    """Delivered (final)."""
    FAILED = "failed"
    """The last attempt failed; due again at ``next_attempt_ms``."""
    DEAD_LETTER = "dead_letter"
    """Given up on; only ``requeue`` brings it back."""


@attrs.frozen
class OutboxItem:
    """One message of the outbox."""

    id: int
    dedupe_key: str
    channel: str
    body: str
    state: OutboxState
    attempts: int
    next_attempt_ms: int
    last_error: str | None
    created_ms: int
    updated_ms: int


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS outbox(
        id INTEGER PRIMARY KEY,
        dedupe_key TEXT NOT NULL UNIQUE,
        channel TEXT NOT NULL,
        body TEXT NOT NULL,
        state TEXT NOT NULL
            CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'dead_letter')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL,
        last_error TEXT,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt_ms)",
)


def _item(row: sqlite3.Row) -> OutboxItem:
    return OutboxItem(
        id=row["id"],
        dedupe_key=row["dedupe_key"],
        channel=row["channel"],
        body=row["body"],
        state=OutboxState(row["state"]),
        attempts=row["attempts"],
        next_attempt_ms=row["next_attempt_ms"],
        last_error=row["last_error"],
        created_ms=row["created_ms"],
        updated_ms=row["updated_ms"],
    )


class Outbox:
    """The persistent notification queue; see the module docstring.

    Safe to call from several threads (one call at a time runs). ``now_ms`` is the caller's
    clock; every schedule is in the same milliseconds.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_attempts: int = 8,
        backoff_initial_ms: int = 1000,
        backoff_max_ms: int = 300_000,
    ) -> None:
        if max_attempts < 1:
            msg = f"max_attempts must be at least 1, got {max_attempts}"
            raise ValueError(msg)
        if not 0 < backoff_initial_ms <= backoff_max_ms:
            msg = (
                "backoff needs 0 < backoff_initial_ms <= backoff_max_ms, got "
                f"{backoff_initial_ms} and {backoff_max_ms}"
            )
            raise ValueError(msg)
        self.path = Path(path)
        self.max_attempts = max_attempts
        self.backoff_initial_ms = backoff_initial_ms
        self.backoff_max_ms = backoff_max_ms
        self._lock = threading.RLock()
        try:
            self._conn: sqlite3.Connection | None = open_database(self.path)
        except RegistryError as exc:
            raise OutboxError(str(exc)) from exc
        self._conn.row_factory = sqlite3.Row
        try:
            with transaction(self._conn) as conn:
                for statement in _SCHEMA:
                    conn.execute(statement)
                check_schema(conn, self.path, "outbox.schema", SCHEMA_VERSION)
        except (sqlite3.Error, RegistryError) as exc:
            self.close()
            msg = f"{self.path}: cannot create the outbox table: {exc}"
            raise OutboxError(msg) from exc

    def close(self) -> None:
        """Close the database connection (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            msg = f"{self.path}: the outbox is closed"
            raise OutboxError(msg)
        return self._conn

    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock; SQLite failures become ``OutboxError``."""
        with self._lock:
            conn = self._connection()
            try:
                with transaction(conn):
                    yield conn
            except sqlite3.Error as exc:
                msg = f"{self.path}: {what} failed: {exc}"
                raise OutboxError(msg) from exc

    def backoff_ms(self, attempts: int) -> int:
        """The wait after the ``attempts``-th failed attempt: exponential, capped."""
        if attempts < 1:
            return 0
        # Past 2**62 any sane initial value is over the cap; stop the ints from growing.
        exponent = min(attempts - 1, 62)
        return min(self.backoff_max_ms, self.backoff_initial_ms << exponent)

    # -- writing -------------------------------------------------------------------------

    def enqueue(self, channel: str, body: str, *, dedupe_key: str, now_ms: int) -> OutboxItem:
        """Persist a message, due at once; a ``dedupe_key`` seen before returns that message."""
        named: tuple[tuple[str, object], ...] = (("channel", channel), ("dedupe_key", dedupe_key))
        for what, value in named:
            if not isinstance(value, str) or not value:
                msg = f"outbox {what} must be a non-empty string, got {value!r}"
                raise OutboxError(msg)
        if not isinstance(cast(object, body), str):
            msg = f"outbox body must be a string, got {type(body).__name__}"
            raise OutboxError(msg)
        with self._write(f"enqueue {dedupe_key!r}") as conn:
            cursor = conn.execute(
                "INSERT INTO outbox(dedupe_key, channel, body, state, attempts, next_attempt_ms,"
                " created_ms, updated_ms) VALUES (?, ?, ?, 'pending', 0, ?, ?, ?)"
                " ON CONFLICT(dedupe_key) DO NOTHING",
                (dedupe_key, channel, body, now_ms, now_ms, now_ms),
            )
            inserted = cursor.rowcount == 1
            row = conn.execute("SELECT * FROM outbox WHERE dedupe_key = ?", (dedupe_key,))
            item = _item(row.fetchone())
        if not inserted:
            # A replayed event brings the same content; another one under the same key is a bug.
            same = item.channel == channel and item.body == body
            report = log.debug if same else log.warning
            report("outbox_duplicate", dedupe_key=dedupe_key, id=item.id, same_content=same)
        return item

    def claim_due(self, now_ms: int, limit: int = 10) -> list[OutboxItem]:
        """Move up to ``limit`` due messages to ``sending`` (persisted), counting the attempt.

        Due: ``pending`` or ``failed`` with ``next_attempt_ms <= now_ms``, oldest due first.
        The sender must then call ``mark_sent`` or ``mark_failed`` for each.
        """
        if limit < 1:
            return []
        with self._write("claim due messages") as conn:
            rows = conn.execute(
                "SELECT id FROM outbox WHERE state IN ('pending', 'failed')"
                " AND next_attempt_ms <= ? ORDER BY next_attempt_ms, id LIMIT ?",
                (now_ms, limit),
            ).fetchall()
            ids = [int(row[0]) for row in rows]
            conn.executemany(
                "UPDATE outbox SET state = 'sending', attempts = attempts + 1, updated_ms = ?"
                " WHERE id = ?",
                [(now_ms, item_id) for item_id in ids],
            )
            return [self._get(conn, item_id) for item_id in ids]

    def mark_sent(self, item_id: int, now_ms: int) -> OutboxItem:
        """Record that a claimed message was delivered."""
        with self._write(f"mark outbox item {item_id} sent") as conn:
            self._require_sending(conn, item_id, "mark it sent")
            conn.execute(
                "UPDATE outbox SET state = 'sent', last_error = NULL, updated_ms = ? WHERE id = ?",
                (now_ms, item_id),
            )
            return self._get(conn, item_id)

    def mark_failed(
        self,
        item_id: int,
        error: str,
        now_ms: int,
        retry_after_ms: int | None = None,
        *,
        permanent: bool = False,
    ) -> OutboxItem:
        """Record a failed attempt of a claimed message and schedule the next one.

        The next attempt comes ``retry_after_ms`` later when given (the channel said so),
        else after ``backoff_ms(attempts)``. After ``max_attempts`` attempts, or when the
        failure is ``permanent`` (retrying cannot help), the message is dead-lettered.
        """
        with self._write(f"mark outbox item {item_id} failed") as conn:
            item = self._require_sending(conn, item_id, "mark it failed")
            if permanent or item.attempts >= self.max_attempts:
                state, next_ms = OutboxState.DEAD_LETTER, item.next_attempt_ms
            elif retry_after_ms is not None:
                state, next_ms = OutboxState.FAILED, now_ms + max(0, retry_after_ms)
            else:
                state, next_ms = OutboxState.FAILED, now_ms + self.backoff_ms(item.attempts)
            conn.execute(
                "UPDATE outbox SET state = ?, next_attempt_ms = ?, last_error = ?, updated_ms = ?"
                " WHERE id = ?",
                (state.value, next_ms, str(error), now_ms, item_id),
            )
            result = self._get(conn, item_id)
        if state is OutboxState.DEAD_LETTER:
            log.warning(
                "outbox_dead_letter",
                id=item_id,
                dedupe_key=item.dedupe_key,
                channel=item.channel,
                attempts=item.attempts,
                permanent=permanent,
                error=str(error),
            )
        return result

    def resume(self, now_ms: int) -> int:
        """Return messages a crash left in ``sending`` to ``pending`` (due now); call at boot.

        A message that already used ``max_attempts`` attempts is dead-lettered instead.
        Returns how many went back to ``pending``.
        """
        error = "interrupted while sending (the process stopped)"
        with self._write("resume interrupted sends") as conn:
            dead = conn.execute(
                "UPDATE outbox SET state = 'dead_letter', last_error = ?, updated_ms = ?"
                " WHERE state = 'sending' AND attempts >= ?",
                (error, now_ms, self.max_attempts),
            ).rowcount
            back = conn.execute(
                "UPDATE outbox SET state = 'pending', next_attempt_ms = ?, last_error = ?,"
                " updated_ms = ? WHERE state = 'sending'",
                (now_ms, error, now_ms),
            ).rowcount
        if back or dead:
            log.warning("outbox_resumed", pending=back, dead_letter=dead)
        return back

    def requeue(self, item_id: int, now_ms: int) -> OutboxItem:
        """Give a dead letter a fresh start: ``pending``, due now, attempts reset (operator)."""
        with self._write(f"requeue outbox item {item_id}") as conn:
            item = self._require(conn, item_id)
            if item.state is not OutboxState.DEAD_LETTER:
                msg = (
                    f"outbox item {item_id} is {item.state.value}, not dead_letter: cannot requeue"
                )
                raise OutboxError(msg)
            conn.execute(
                "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_ms = ?,"
                " updated_ms = ? WHERE id = ?",
                (now_ms, now_ms, item_id),
            )
            return self._get(conn, item_id)

    def purge_sent(self, before_ms: int) -> int:
        """Delete ``sent`` messages last updated before ``before_ms``; return how many.

        Their dedupe keys are forgotten with them: purge only past the replay horizon.
        """
        with self._write("purge sent messages") as conn:
            return conn.execute(
                "DELETE FROM outbox WHERE state = 'sent' AND updated_ms < ?", (before_ms,)
            ).rowcount

    # -- reading -------------------------------------------------------------------------

    def item(self, item_id: int) -> OutboxItem | None:
        """One message by id, or None."""
        with self._lock:
            row = self._connection().execute("SELECT * FROM outbox WHERE id = ?", (item_id,))
            found = row.fetchone()
        return None if found is None else _item(found)

    def items(
        self, state: OutboxState | str | None = None, limit: int | None = None
    ) -> list[OutboxItem]:
        """Messages in ``state`` (every one if None), oldest first, at most ``limit``."""
        query = "SELECT * FROM outbox"
        args: list[object] = []
        if state is not None:
            query += " WHERE state = ?"
            args.append(_state(state).value)
        query += " ORDER BY id"
        if limit is not None:
            query += " LIMIT ?"
            args.append(max(0, limit))
        with self._lock:
            rows = self._connection().execute(query, args).fetchall()
        return [_item(row) for row in rows]

    def backlog(self) -> dict[str, int]:
        """How many messages are in each state (every state listed, zeros included)."""
        counts = {state.value: 0 for state in OutboxState}
        with self._lock:
            rows = self._connection().execute("SELECT state, count(*) FROM outbox GROUP BY state")
            counts.update({str(state): int(n) for state, n in rows})
        return counts

    def next_due_ms(self) -> int | None:
        """When the next ``pending``/``failed`` message falls due (None: nothing waits)."""
        with self._lock:
            row = self._connection().execute(
                "SELECT min(next_attempt_ms) FROM outbox WHERE state IN ('pending', 'failed')"
            )
            value = row.fetchone()[0]
        return None if value is None else int(value)

    def _get(self, conn: sqlite3.Connection, item_id: int) -> OutboxItem:
        return _item(conn.execute("SELECT * FROM outbox WHERE id = ?", (item_id,)).fetchone())

    def _require(self, conn: sqlite3.Connection, item_id: int) -> OutboxItem:
        row = conn.execute("SELECT * FROM outbox WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            msg = f"unknown outbox item {item_id}"
            raise OutboxError(msg)
        return _item(row)

    def _require_sending(self, conn: sqlite3.Connection, item_id: int, what: str) -> OutboxItem:
        item = self._require(conn, item_id)
        if item.state is not OutboxState.SENDING:
            msg = f"outbox item {item_id} is {item.state.value}, not sending: cannot {what}"
            raise OutboxError(msg)
        return item


def _state(state: OutboxState | str) -> OutboxState:
    try:
        return OutboxState(state)
    except ValueError:
        choices = " | ".join(s.value for s in OutboxState)
        msg = f"{state!r} is not an outbox state ({choices})"
        raise OutboxError(msg) from None
