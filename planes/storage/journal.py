"""The EventJournal: every bus event, in order, in an append-only SQLite file in WAL mode.

The model, stated once:

* **seq.** Every accepted event gets the next integer ``seq`` of the file (1, 2, 3 ...) before
  ``append`` returns. A seq is never reused and never skipped: an event that is not accepted
  (sampled out) gets none. ``open()`` continues from the largest committed seq, and a killed
  process loses only its uncommitted tail, so the history stays contiguous, without gaps or
  duplicates, across runs and crashes. ``run_id`` tells the runs apart.
* **Off the hot path.** ``append`` runs on the bus thread: it serialises the payload with the
  contracts converter, assigns the seq and puts the row on a bounded in-memory queue, under a
  lock that only appenders take; it wakes nobody. Rows go to the **writer process**
  (``journal_writer``) in *rounds*: up to ``_ROUND_BATCHES`` batches of ``batch_size`` rows,
  each a ``marshal`` blob, in one pipe write; the process inserts each batch in one
  transaction and answers once for the round, with the committed seq. SQLite's work (binding,
  inserts, WAL writes) runs outside this process's GIL. One round is in flight at a time.
* **Who hands rows over.** A busy bus hands them over itself: the append that finds a full
  batch sends the full batches once the round before is answered (it reads the answer
  without waiting, every ``_POLL_EVERY`` appends while it is due), so in a backtest no other
  thread of this process needs the GIL per batch. A writer thread does the rest, waking only
  now and then: rows that waited ``flush_interval_s`` go, full batch or not; full batches go
  when appends have stopped; and ``flush()``, ``close()`` and a blocked appender make it hand
  over what there is at once and wait for the answer. An event waits at most about
  ``flush_interval_s`` plus one commit. Nobody holds the answer pipe's read lock while waiting
  for an answer (only while reading one), so a waiting thread that is slow to get the GIL back
  from a busy bus does not stop the appenders from taking the answer and going on.
* **Start.** ``open()`` prepares the file in this process, then starts the writer thread,
  which starts the writer process, and returns without waiting for it (the interpreter's
  start is tens of milliseconds): rows queue meanwhile and go once it says READY
  (``wait_started()`` waits for that). The appenders look for READY too, as for answers: a
  busy bus may not give the writer thread the GIL for a whole short backtest. A process that
  fails to start fails the journal as a dying one does.
* **When the queue is full** (``queue_size`` rows waiting), the topic decides
  (``full_policy``). Topics starting with one of ``sample_prefixes`` (market data) are
  SAMPLED: of each such topic one event in ``sample_every`` is kept and waits for room, the
  others are dropped and counted in ``metrics.sampled``. Every other topic BLOCKS: ``append``
  waits for room, so trading events are never dropped; the bus slows to the disk's pace.
* **Durability.** ``last_seq`` is the last seq assigned, ``durable_seq`` the last one committed.
  ``flush()`` waits until everything assigned so far is committed; ``close()`` flushes and stops
  the writer. What a commit survives depends on ``synchronous`` (see ``SYNCHRONOUS``). The
  writer thread is a daemon and the writer process dies with it: a process that exits without
  ``close()`` loses its unflushed tail, as a killed one does. A writer process that dies on its
  own fails every later ``append`` and ``flush`` with the reason (``metrics``, the log).
* **Write errors** (disk full, a lock held too long) are logged, counted in
  ``metrics.write_errors`` and retried with backoff, forever and with the same batch: nothing is
  skipped. Meanwhile the queue fills and trading topics block.
* **One writer per file.** ``open()`` holds an exclusive ``flock`` on ``<file>.lock``, so a
  second writer, in this process or another, gets a ``JournalError``; the kernel releases the
  lock when the process and its writer process are gone, even after a SIGKILL (``open()``
  waits a moment for a dead run's writer process to go, never for a live writer).
* **Readers** (``EventJournal.read``, ``open_reader``) use their own read-only connections:
  they see every committed event while the writer runs, and work on a closed journal file.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import itertools
import json
import marshal
import os
import select
import sqlite3
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Generator, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import attrs
import structlog

from contracts.converter import fast_dumps, fast_loads
from contracts.meta import Payload, Source
from contracts.topics import Topic
from planes.storage import journal_writer

log = structlog.get_logger("planes.storage.journal")

T = TypeVar("T")

SCHEMA_VERSION = 1
"""Version of the table layout, kept in ``meta``; a file of another version is refused."""

SYNCHRONOUS: Mapping[str, str] = {
    "off": "no fsync at all: an OS crash or power loss may lose or corrupt recent commits",
    "normal": (
        "fsync at checkpoints only: a killed process loses nothing committed, "
        "an OS crash or power loss may lose the last commits (never corrupts)"
    ),
    "full": "fsync at every commit: every commit survives an OS crash and a power loss",
}
"""The ``synchronous`` levels (SQLite's, in WAL mode) and what a committed event survives."""

_SCHEMA = (
    "CREATE TABLE events(seq INTEGER PRIMARY KEY, run_id TEXT NOT NULL, topic TEXT NOT NULL, "
    "source TEXT NOT NULL, ts INTEGER NOT NULL, correlation_id TEXT, payload TEXT NOT NULL)",
    "CREATE INDEX events_topic_seq ON events(topic, seq)",
    # Partial: market data carries no correlation id, so most rows stay out of this index.
    "CREATE INDEX events_correlation_id ON events(correlation_id) WHERE correlation_id NOTNULL",
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)",
)
_FIELDS = ("seq", "run_id", "topic", "source", "ts", "correlation_id")
_COLUMNS = journal_writer.COLUMNS
_MAX_STATEMENT_ROWS = 1_024
"""Most rows one INSERT statement carries; a bigger batch is split, in one transaction."""
_READ_PAGE = 1_000
"""Rows a reader fetches per query; each page is its own short read transaction."""
_PARSED_PAGE = 2_000
"""Rows the reader process fetches per query (``JournalReader.parsed``), one frame each."""
_BUSY_TIMEOUT_S = 5.0
"""How long a connection waits for a lock another connection holds before it fails."""
_RETRY_INITIAL_S = 0.05
_RETRY_MAX_S = 5.0
_WRITER_START_S = 30.0
"""How long the writer thread waits for the writer process to open the file (say READY)."""
_WRITER_EXIT_S = 30.0
"""How long ``close()`` waits for the writer process to exit once it has everything."""
_ORPHAN_WAIT_S = 5.0
"""How long ``open()`` waits for a dead run's writer process to release the lock."""
_SOURCE_TEXT: Mapping[Source, str] = {source: source.value for source in Source}
"""The ``source`` column of each ``Source``, without an enum ``.value`` look-up per event."""
_ROUND_BATCHES = 64
"""Most batches handed to the writer process in one round (one answer for all of them)."""
_POLL_EVERY = 32
"""While a round is in flight and a batch is full, an appender reads the answer this often."""
_GRACE_S = 0.005
"""How soon the writer thread first looks again at full batches an appender may hand over."""
_PIPE_BYTES = 1 << 20
"""The pipe size asked for (Linux ``F_SETPIPE_SZ``), so a round fits without waiting."""
_ROOM_POLL_S = 0.05
"""How often a blocked appender looks for room even if the writer did not tell it."""

_Row = tuple[int, str, str, str, int, str | None, str]
"""``(seq, run_id, topic, source, ts, correlation_id, payload)``, the column order."""


class JournalError(Exception):
    """A journal cannot be opened, read or written; the message names the file."""


def make_dir(folder: Path) -> str | None:
    """``mkdir -p`` of ``folder``; why it failed (a file in the way, no permission), or None.

    The storage files' directories (the data dir, its snapshots) are made with it; each caller
    raises its own error with the reason.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        return f"{folder} is not a directory: a file is in the way"
    except OSError as exc:
        return f"cannot create the directory {folder}: {exc.strerror or exc}"
    return None


class JournalFullPolicy(enum.StrEnum):
    """What ``append`` does with an event while the queue is full."""

    BLOCK = "block"
    """Wait for room: the event is never dropped."""
    SAMPLE = "sample"
    """Keep one event in ``sample_every`` of the topic (it waits for room), drop the others."""


@attrs.frozen
class JournalRecord:
    """One stored event, as readers get it; ``payload`` is the JSON text of the payload."""

    seq: int
    run_id: str
    topic: str
    source: str
    ts: int
    correlation_id: str | None
    payload: str

    def to_json_line(self) -> str:
        """Render one JSON Lines line (no newline); ``payload`` is a JSON object, not a string."""
        return json.dumps(
            {
                "seq": self.seq,
                "run_id": self.run_id,
                "topic": self.topic,
                "source": self.source,
                "ts": self.ts,
                "correlation_id": self.correlation_id,
                "payload": json.loads(self.payload),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json_line(cls, line: str) -> JournalRecord:
        """Parse a line written by ``to_json_line``; a malformed line raises ``JournalError``."""
        try:
            data = json.loads(line)
            payload = data["payload"]
            fields = {name: data[name] for name in _FIELDS}
        except (ValueError, TypeError, KeyError) as exc:
            msg = f"not a journal line ({type(exc).__name__}: {exc}): {line[:200]!r}"
            raise JournalError(msg) from exc
        if not isinstance(payload, dict):
            msg = f"not a journal line (the payload is not an object): {line[:200]!r}"
            raise JournalError(msg)
        # json.dumps' default separators are the converter's, so the text round-trips.
        return cls(**fields, payload=json.dumps(payload))


def decode(record: JournalRecord, types: Mapping[str, type[Payload]]) -> Payload:
    """Rebuild the payload of ``record``; ``types`` maps topic names to payload classes.

    Build ``types`` from a topic registry: ``{name: t.payload for name, t in registry.items()}``.
    An unknown topic or a payload that does not fit its class raises ``JournalError``.
    """
    return decode_payload(record.seq, record.topic, record.payload, types)


def decode_payload(seq: int, topic: str, text: str, types: Mapping[str, type[Payload]]) -> Payload:
    """``decode`` of the parts of a record (what ``payloads`` yields)."""
    payload_type = types.get(topic)
    if payload_type is None:
        msg = f"journal seq {seq}: no payload class for topic {topic!r}"
        raise JournalError(msg)
    try:
        payload: Payload = fast_loads(text, payload_type)
    except Exception as exc:
        msg = (
            f"journal seq {seq} ({topic}): the payload does not decode as "
            f"{payload_type.__qualname__}: {exc}"
        )
        raise JournalError(msg) from exc
    return payload


def decode_view(seq: int, topic: str, text: str, read: Callable[[str], T]) -> T:
    """A view of a record's payload from its parts: ``read`` is a ``view_reader`` of the converter.

    A payload whose view does not decode raises ``JournalError``, as ``decode_payload`` does.
    """
    try:
        return read(text)
    except Exception as exc:
        msg = f"journal seq {seq} ({topic}): the payload does not decode as a view: {exc}"
        raise JournalError(msg) from exc


@attrs.define
class JournalMetrics:
    """Counters of one journal since ``open()``; written under the journal's locks."""

    appended: int = 0
    """Events accepted (given a seq)."""
    committed: int = 0
    """Events committed to the file."""
    batches: int = 0
    """Transactions committed."""
    sampled: int = 0
    """Market events dropped while the queue was full."""
    blocked: int = 0
    """Appends that had to wait for room in the queue."""
    max_queue_depth: int = 0
    """Most rows ever waiting in the queue."""
    write_errors: int = 0
    """Failed write attempts (each batch is retried until it is committed)."""


class JournalReader:
    """Read-only access to a journal file, safe while a writer appends to it.

    Every ``read`` opens its own read-only connection and fetches pages of rows in separate
    short transactions, so a slow consumer never holds the writer's checkpoints back.
    """

    __slots__ = ("_uri", "path")

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            msg = f"no event journal at {self.path}: the file does not exist"
            raise JournalError(msg)
        if not self.path.is_file():
            msg = f"{self.path} is not an event journal: it is not a file"
            raise JournalError(msg)
        self._uri = self.path.resolve().as_uri() + "?mode=ro"
        conn = self._connect()
        try:
            _check_schema(conn, self.path)
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        try:
            return sqlite3.connect(
                self._uri, uri=True, timeout=_BUSY_TIMEOUT_S, check_same_thread=False
            )
        except sqlite3.Error as exc:
            msg = f"cannot open the event journal {self.path}: {exc}"
            raise JournalError(msg) from exc

    def read(
        self,
        since_seq: int = 0,
        until_seq: int | None = None,
        topics: Collection[str] | None = None,
        correlation_id: str | None = None,
        limit: int | None = None,
    ) -> Iterator[JournalRecord]:
        """Yield committed events in seq order, filtered; every filter given must match.

        :param since_seq: only events after this seq (``seq > since_seq``): pass a snapshot's
            seq to get the tail that follows it.
        :param until_seq: only events up to this seq, inclusive.
        :param topics: only these topic names (an empty collection matches nothing).
        :param correlation_id: only events of this causal chain.
        :param limit: at most this many events.
        """
        rows = self._select(
            _COLUMNS,
            since_seq,
            until_seq=until_seq,
            topics=topics,
            correlation_id=correlation_id,
            limit=limit,
        )
        return (JournalRecord(*row) for row in rows)

    def payloads(
        self,
        since_seq: int = 0,
        until_seq: int | None = None,
        topics: Collection[str] | None = None,
    ) -> Iterator[tuple[int, str, str]]:
        """``(seq, topic, payload JSON)`` of the events ``read`` would yield: no record objects.

        What recovery reads: a journal's whole tail, a million rows in the worst case.
        """
        return self._select("seq, topic, payload", since_seq, until_seq=until_seq, topics=topics)

    def parsed(
        self,
        since_seq: int = 0,
        until_seq: int | None = None,
        topics: Collection[str] | None = None,
        patterns: Mapping[str, str] | None = None,
    ) -> ParsedRows:
        """The rows ``payloads`` yields, read and matched by a reader process, for recovery.

        Each row is ``(seq, topic, body)``: ``body`` is the groups of ``patterns[topic]`` (a
        regex, matched whole) when the payload matches it, its JSON text otherwise. The
        reader process (``journal_writer`` in read mode) runs SQLite and the regexes while
        this one consumes what came before, a page at a time. ``ParsedRows.text`` reads one
        payload again by seq. A reader that fails raises ``JournalError`` from the iteration.
        """
        found = self._query("seq, topic, payload", since_seq, until_seq, topics)
        if found is None:
            return ParsedRows(self, None, [], {})
        sql, params = found
        return ParsedRows(self, sql, params, dict(patterns or {}))

    def text(self, seq: int) -> str:
        """The payload JSON of the event at ``seq``; ``JournalError`` if there is none."""
        conn = self._connect()
        try:
            row = conn.execute("SELECT payload FROM events WHERE seq = ?", (seq,)).fetchone()
        except sqlite3.Error as exc:
            msg = f"cannot read the event journal {self.path}: {exc}"
            raise JournalError(msg) from exc
        finally:
            conn.close()
        if row is None:
            msg = f"the event journal {self.path} has no event at seq {seq}"
            raise JournalError(msg)
        text = row[0]
        if isinstance(text, bytes):  # a foreign or damaged row: decoding it names the problem
            return text.decode("utf-8", "replace")
        return str(text)

    def _select(
        self,
        columns: str,
        since_seq: int,
        *,
        until_seq: int | None,
        topics: Collection[str] | None,
        correlation_id: str | None = None,
        limit: int | None = None,
    ) -> Iterator[Any]:
        if limit is not None and limit < 0:
            msg = f"limit must be >= 0, got {limit}"
            raise ValueError(msg)
        found = self._query(columns, since_seq, until_seq, topics, correlation_id)
        if found is None or limit == 0:
            return iter(())
        return self._pages(*found, limit)

    @staticmethod
    def _query(
        columns: str,
        since_seq: int,
        until_seq: int | None,
        topics: Collection[str] | None,
        correlation_id: str | None = None,
    ) -> tuple[str, list[object]] | None:
        """The paged SELECT and its parameters, or None when nothing can match.

        The seq to start after is its first parameter; the page size, its last, is not given.
        """
        if isinstance(topics, str):
            msg = f"topics must be a collection of topic names, not the string {topics!r}"
            raise TypeError(msg)
        if topics is not None and not topics:
            return None
        names = sorted(set(topics)) if topics is not None else []
        clauses = ["seq > ?"]
        params: list[object] = [since_seq]
        if until_seq is not None:
            clauses.append("seq <= ?")
            params.append(until_seq)
        if len(names) == 1:
            clauses.append("topic = ?")  # a walk of the (topic, seq) index, in seq order
        elif names:
            # Not through the topic index: for several topics SQLite would fetch every
            # remaining match of each and sort them again for every page. A walk in seq order
            # that skips other topics stops at each page's end.
            clauses.append(f"+topic IN ({', '.join('?' * len(names))})")
        params.extend(names)
        if correlation_id is not None:
            clauses.append("correlation_id = ?")
            params.append(correlation_id)
        where = " AND ".join(clauses)
        # Only the fixed clauses above are joined in: every value is a bound parameter.
        sql = f"SELECT {columns} FROM events WHERE {where} ORDER BY seq LIMIT ?"  # noqa: S608
        return sql, params

    def _pages(self, sql: str, params: list[object], limit: int | None) -> Iterator[Any]:
        conn = self._connect()
        try:
            left = limit
            while left is None or left > 0:
                page = _READ_PAGE if left is None else min(left, _READ_PAGE)
                try:
                    rows = conn.execute(sql, [*params, page]).fetchall()
                except sqlite3.Error as exc:
                    msg = f"cannot read the event journal {self.path}: {exc}"
                    raise JournalError(msg) from exc
                yield from rows
                if len(rows) < page:
                    return
                params[0] = rows[-1][0]
                if left is not None:
                    left -= len(rows)
        finally:
            conn.close()


ParsedRow = tuple[int, str, "tuple[str | None, ...] | str"]
"""``(seq, topic, body)`` of ``JournalReader.parsed``: body the regex's groups or the JSON."""


class ParsedRows:
    """The rows of one ``JournalReader.parsed`` call; iterate once, ``close()`` when done.

    The reader process starts at the first ``next`` and runs ahead of the consumer as far as
    the pipe holds (about a megabyte of rows). ``close()`` (also at the end, after an error,
    by ``with``, and when the rows are dropped: the process belongs to the iteration, which
    holds no reference back) ends it; an iteration goes on after it only with the rest of the
    page already received.
    """

    def __init__(
        self, reader: JournalReader, sql: str | None, params: list[object], patterns: dict[str, str]
    ) -> None:
        self._reader = reader
        self._running: list[subprocess.Popen[bytes]] = []  # the process, while it runs
        self._frames = _read_frames(reader.path, sql, params, patterns, self._running)
        # Row by row in C: no generator frame resumed per row.
        self._rows: Iterator[ParsedRow] = itertools.chain.from_iterable(self._frames)

    @property
    def _process(self) -> subprocess.Popen[bytes] | None:
        return self._running[0] if self._running else None

    def __iter__(self) -> Iterator[ParsedRow]:
        return self._rows

    def __enter__(self) -> ParsedRows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def text(self, seq: int) -> str:
        """The payload JSON at ``seq`` (``JournalReader.text``): for a body of groups."""
        return self._reader.text(seq)

    def close(self) -> None:
        """Stop the reader process (if it runs): no page comes after the one being read."""
        self._frames.close()


def _read_frames(
    path: Path,
    sql: str | None,
    params: list[object],
    patterns: dict[str, str],
    running: list[subprocess.Popen[bytes]],
) -> Generator[list[ParsedRow], None, None]:
    """The reader process's pages of rows; ``running`` holds the process while it runs."""
    if sql is None:
        return
    config = {
        "mode": "read",
        "uri": path.resolve().as_uri() + "?mode=ro",
        "sql": sql,
        "params": params,
        "page": _PARSED_PAGE,
        "patterns": patterns,
        "busy_timeout_s": _BUSY_TIMEOUT_S,
        "parent": os.getpid(),
    }
    try:
        process = subprocess.Popen(  # noqa: S603 - our own script, by absolute path
            [sys.executable, "-I", "-S", journal_writer.__file__, marshal.dumps(config).hex()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C to the terminal is the parent's to handle
        )
    except OSError as exc:
        msg = f"cannot read the event journal {path}: the reader process: {exc}"
        raise JournalError(msg) from exc
    running.append(process)
    try:
        assert process.stdout is not None  # noqa: S101 - started with a PIPE
        fd = process.stdout.fileno()
        with contextlib.suppress(OSError, AttributeError):  # Linux only; 64 KiB elsewhere
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        buffer, head, frame = bytearray(), journal_writer.FRAME.size, journal_writer.FRAME
        while True:
            while len(buffer) < head or len(buffer) < head + frame.unpack_from(buffer)[1]:
                chunk = os.read(fd, _PIPE_BYTES)
                if not chunk:
                    code = process.wait(_WRITER_EXIT_S)
                    msg = (
                        f"cannot read the event journal {path}: the reader process "
                        f"exited (status {code}) before the end"
                    )
                    raise JournalError(msg)
                buffer += chunk
            kind, length = frame.unpack_from(buffer)
            body = marshal.loads(memoryview(buffer)[head : head + length])  # noqa: S302 - our own child's frames
            del buffer[: head + length]
            if kind == journal_writer.ROWS:
                yield body
            elif kind == journal_writer.DONE:
                return
            else:  # FATAL (what SQLite said), or a frame it never sends
                what = ": ".join(map(str, body)) if kind == journal_writer.FATAL else kind
                msg = f"cannot read the event journal {path}: {what}"
                raise JournalError(msg)
    finally:
        running.clear()
        if process.poll() is None:
            process.kill()
        process.wait(_WRITER_EXIT_S)
        if process.stdout is not None:
            process.stdout.close()


def open_reader(path: Path) -> JournalReader:
    """Open the journal file at ``path`` read-only; ``JournalError`` names it if it is unfit."""
    return JournalReader(path)


def _check_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Raise ``JournalError`` unless ``conn`` holds an event journal of ``SCHEMA_VERSION``."""
    try:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        if not {"events", "meta"} <= tables:
            msg = f"{path} is not an event journal: it has no events and meta tables"
            raise JournalError(msg)
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.Error as exc:
        msg = f"{path} is not an event journal: {exc}"
        raise JournalError(msg) from exc
    if row is None or row[0] != str(SCHEMA_VERSION):
        found = "none" if row is None else row[0]
        msg = f"{path}: journal schema version {found}, this code reads version {SCHEMA_VERSION}"
        raise JournalError(msg)


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class EventJournal:
    """The append-only journal of one data dir; see the module docstring for the model.

    The writer thread and process exist between ``open()`` and ``close()``; ``read`` works
    whenever the file exists. Usable as a context manager that opens and closes it.
    """

    def __init__(  # noqa: PLR0915 - one statement per attribute
        self,
        path: Path,
        run_id: str,
        *,
        synchronous: str = "normal",
        batch_size: int = 512,
        flush_interval_s: float = 0.05,
        queue_size: int = 65536,
        sample_prefixes: tuple[str, ...] = ("market:",),
        sample_every: int = 10,
    ) -> None:
        if synchronous not in SYNCHRONOUS:
            msg = f"synchronous must be one of {' | '.join(SYNCHRONOUS)}, got {synchronous!r}"
            raise ValueError(msg)
        if not run_id:
            msg = "run_id must not be empty"
            raise ValueError(msg)
        for name, value in (
            ("batch_size", batch_size),
            ("queue_size", queue_size),
            ("sample_every", sample_every),
        ):
            if value < 1:
                msg = f"{name} must be >= 1, got {value}"
                raise ValueError(msg)
        if not flush_interval_s >= 0:
            msg = f"flush_interval_s must be >= 0, got {flush_interval_s}"
            raise ValueError(msg)
        self.path = Path(path)
        self.run_id = run_id
        self.synchronous = synchronous
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.queue_size = queue_size
        self.sample_prefixes = tuple(sample_prefixes)
        self.sample_every = sample_every
        self.metrics = JournalMetrics()
        self._lock = threading.Lock()
        """Guards the lifecycle, the full-queue path and the counters the writer changes."""
        self._append_lock = threading.Lock()
        """Taken by appenders only (seq and queue order); the writer never takes it."""
        self._ship_lock = threading.Lock()
        """Held while rows move from the queue into the pipe (so they go in seq order)."""
        self._read_lock = threading.Lock()
        """Held while the writer process's answers are read."""
        self._wake = threading.Event()
        """Set to make the writer thread look at the journal before its timeout is up."""
        self._room = threading.Condition(self._lock)
        """Blocked appenders wait on it for room in the queue."""
        self._committed = threading.Condition(self._lock)
        """``flush()`` waits on it for ``durable_seq`` to advance."""
        self._queue: deque[_Row] = deque()
        self._threshold = 1 if flush_interval_s == 0 else min(batch_size, queue_size)
        self._last_seq = 0
        self._durable_seq = 0
        self._shipped_seq = 0
        """The last seq handed to the writer process; a round is in flight while > durable."""
        self._queued_since = 0.0
        """``time.monotonic()`` when the oldest row in the queue was queued (0: none)."""
        self._poll_countdown = _POLL_EVERY
        self._idle = False
        """True while the writer thread waits with nothing to do (no timeout)."""
        self._seen_appended = 0
        self._grace_s = _GRACE_S
        self._flush_target = 0
        self._state = _State.NEW
        self._accepting = False
        self._refusal = f"journal {self.path} is not open"
        self._stopping = False
        self._blocked_appenders = 0
        self._sample_counts: dict[str, int] = {}
        self._failure: BaseException | None = None
        self.on_failure: Callable[[str], object] | None = None
        """Called once, with the refusal text, when the writer dies (from whichever thread
        finds it: the bus thread or the writer thread)."""
        self._process: subprocess.Popen[bytes] | None = None
        self._ready = False
        """True once the writer process said READY (the writer thread starts it)."""
        self._started = threading.Event()
        """Set once the writer process said READY, or failed to."""
        self._inbox = bytearray()
        self._stdin_fd = -1
        self._stdout_fd = -1
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._reader: JournalReader | None = None
        self._statement_rows = _MAX_STATEMENT_ROWS

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Create the file and tables if needed, continue from the last seq, start the writer."""
        with self._lock:
            if self._state is not _State.NEW:
                msg = f"journal {self.path} was already opened (state {self._state.value})"
                raise JournalError(msg)
        problem = make_dir(self.path.parent)
        if problem is not None:
            raise JournalError(f"journal {self.path}: {problem} (runtime.data_dir)")
        lock_fd = _lock_writer(self.path)
        try:
            conn = self._connect_writer()
            try:
                last = _prepare(conn, self.path)
                variables = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            finally:
                conn.close()
        except BaseException:
            os.close(lock_fd)
            raise
        self._lock_fd = lock_fd
        self._statement_rows = max(1, min(_MAX_STATEMENT_ROWS, variables // (len(_FIELDS) + 1)))
        self._last_seq = self._durable_seq = self._shipped_seq = self._flush_target = last
        with self._lock:
            self._state = _State.OPEN
            self._accepting = True
        # The thread starts the writer process: Linux ties the process's life to the thread
        # that started it (PR_SET_PDEATHSIG), and this one lives as long as the journal. Open
        # does not wait for the process to be ready (its start-up is tens of milliseconds):
        # rows queue meanwhile, and a process that fails to start fails the journal as a
        # writer that dies does (appends and flushes raise, with the reason).
        self._thread = threading.Thread(
            target=self._run, name=f"journal-writer:{self.path.name}", daemon=True
        )
        self._thread.start()
        log.info(
            "journal.opened",
            path=str(self.path),
            run_id=self.run_id,
            last_seq=last,
            synchronous=self.synchronous,
        )

    def wait_started(self, timeout_s: float | None = None) -> bool:
        """Wait until the writer process is ready; False if ``timeout_s`` ran out first.

        ``open()`` does not wait for it. Raise ``JournalError`` if the process failed to start.
        """
        started = self._started.wait(timeout_s)
        if self._failure is not None:
            raise JournalError(self._refusal)
        return started

    def _start_process(self) -> subprocess.Popen[bytes]:
        """Start the writer process (see ``journal_writer``) and wait for it to say READY."""
        config = {
            "path": str(self.path),
            "synchronous": self.synchronous,
            "busy_timeout_s": _BUSY_TIMEOUT_S,
            "retry_initial_s": _RETRY_INITIAL_S,
            "retry_max_s": _RETRY_MAX_S,
            "statement_rows": self._statement_rows,
            "parent": os.getpid(),
        }
        lock_fd = self._lock_fd
        process = subprocess.Popen(  # noqa: S603 - our own script, by absolute path
            [sys.executable, "-I", "-S", journal_writer.__file__, marshal.dumps(config).hex()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            pass_fds=() if lock_fd is None else (lock_fd,),  # it holds the writer lock too
            start_new_session=True,  # a Ctrl-C to the terminal is the parent's to handle
        )
        assert process.stdin is not None  # noqa: S101 - started with PIPEs
        assert process.stdout is not None  # noqa: S101
        self._stdin_fd, self._stdout_fd = process.stdin.fileno(), process.stdout.fileno()
        with contextlib.suppress(OSError, AttributeError):  # Linux only; 64 KiB elsewhere
            fcntl.fcntl(self._stdin_fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        os.set_blocking(self._stdout_fd, False)  # appenders look for answers without waiting
        self._process = process
        try:
            ready = self._take_ready(_WRITER_START_S)
        except JournalError:
            ready = False
            raise
        finally:
            if not ready:  # it said something else than READY, or nothing in time
                process.kill()
                process.wait(_WRITER_EXIT_S)
        if not ready:
            raise JournalError(_frame_text(-1, ()))
        return process

    def _take_ready(self, timeout_s: float) -> bool:
        """Read the writer process's READY (the first frame); True once it has come.

        With ``timeout_s`` 0 only what has arrived, and nothing if another thread is reading:
        the appenders look for it too (every ``_POLL_EVERY`` appends once a batch is full),
        because the writer thread that waits for it may not get the GIL back from a busy bus
        for a long time (an event loop that keeps releasing and retaking the GIL around its
        polls is never made to hand it over). A frame other than READY raises.
        """
        return self._read_frames(self._is_ready, wait=timeout_s > 0, timeout_s=timeout_s)

    def _is_ready(self) -> bool:
        return self._ready

    def _next_frame(self, timeout_s: float | None) -> tuple[int, tuple[Any, ...]]:
        """The writer process's next frame, waiting up to ``timeout_s`` (None: forever).

        ``(-1, ())`` when none came in time; ``JournalError`` when the process ended instead.
        Reads whatever the pipe holds at once, so the answers to a round usually take one
        read. The caller holds ``_read_lock`` (or is the only reader, at start).
        """
        buffer, head, fd = self._inbox, journal_writer.FRAME.size, self._stdout_fd
        while (
            len(buffer) < head or len(buffer) < head + journal_writer.FRAME.unpack_from(buffer)[1]
        ):
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                if timeout_s == 0 or not select.select([fd], [], [], timeout_s)[0]:
                    return -1, ()
                continue
            if not chunk:
                process = self._process
                code = None if process is None else process.wait(_WRITER_EXIT_S)
                raise JournalError(f"the writer process exited (status {code})")
            buffer += chunk
        kind, length = journal_writer.FRAME.unpack_from(buffer)
        body = bytes(buffer[head : head + length])
        del buffer[: head + length]
        return kind, marshal.loads(body)  # noqa: S302 - our own child's frames

    def _stop_process(self) -> None:
        """End the writer process: EOF (it exits once its batch is answered), then a kill."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()
        try:
            process.wait(_WRITER_EXIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def _connect_writer(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            msg = f"cannot open the event journal {self.path}: {exc}"
            raise JournalError(msg) from exc
        try:
            # Check before switching to WAL: a foreign database must be left as it was.
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                _check_schema(conn, self.path)
            (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
            conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
        except sqlite3.Error as exc:
            conn.close()
            msg = f"{self.path} is not an event journal: {exc}"
            raise JournalError(msg) from exc
        except JournalError:
            conn.close()
            raise
        if str(mode).lower() != "wal":
            conn.close()
            msg = f"journal {self.path}: SQLite refused WAL mode (journal_mode={mode})"
            raise JournalError(msg)
        return conn

    def close(self, timeout_s: float | None = None) -> None:
        """Flush, stop the writer and close the file; idempotent.

        If the flush does not finish within ``timeout_s``, raise ``JournalError`` and leave the
        journal open (the writer keeps retrying), so nothing is silently lost.
        """
        with self._lock:
            if self._state is not _State.OPEN:
                if self._state is _State.NEW:
                    self._state = _State.CLOSED
                return
            self._state = _State.CLOSING
        failure: JournalError | None = None
        try:
            durable = self.flush(timeout_s)
        except JournalError as exc:  # the writer died: release the file, then report
            failure = exc
        else:
            if durable < self._last_seq:
                with self._lock:
                    self._state = _State.OPEN
                msg = (
                    f"journal {self.path}: events {durable + 1}..{self._last_seq} were not "
                    f"committed within {timeout_s} s; the journal stays open"
                )
                raise JournalError(msg)
        with self._lock, self._append_lock:  # the order the full-queue path takes them in
            self._accepting = False
            self._refusal = f"journal {self.path} is closed"
            self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self._stop_process()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # with the writer process gone, this releases the flock
        self._process = self._thread = self._lock_fd = None
        with self._lock:
            self._state = _State.CLOSED
        log.info("journal.closed", path=str(self.path), durable_seq=self._durable_seq)
        if failure is not None:
            raise failure

    def __enter__(self) -> EventJournal:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- appending -------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The last seq assigned (0 for an empty journal)."""
        return self._last_seq

    @property
    def durable_seq(self) -> int:
        """The last seq committed to the file."""
        return self._durable_seq

    @property
    def failure(self) -> str | None:
        """Why the journal stopped storing events (its writer died), or None while it works."""
        return self._refusal if self._failure is not None else None

    @property
    def writer_pid(self) -> int | None:
        """The writer process's pid while it runs (for an operator's tools, and the tests)."""
        process = self._process
        return None if process is None else process.pid

    @property
    def queue_depth(self) -> int:
        """Rows waiting for the writer."""
        return len(self._queue)

    def full_policy(self, topic: str) -> JournalFullPolicy:
        """What ``append`` does with an event on ``topic`` while the queue is full."""
        if topic.startswith(self.sample_prefixes):
            return JournalFullPolicy.SAMPLE
        return JournalFullPolicy.BLOCK

    def append(self, topic: str | Topic[Any], payload: Payload) -> int | None:
        """Journal ``payload`` published on ``topic``; return its seq, or None if sampled out.

        ``topic`` is a topic name or a ``Topic`` (so the bus's catch-all can call this as it
        is). Call it on the bus thread (any thread is safe). Only a SAMPLE topic, and only
        while the queue is full, can be sampled out; a BLOCK topic waits for room instead. A
        payload the converter cannot serialise raises, and no seq is used. Raise
        ``JournalError`` when the journal is not open or its writer died.

        The usual case takes one lock that only appenders use and wakes nobody. The append that
        finds a full batch hands the full batches to the writer process itself, once the round
        before is committed (it looks for that answer without waiting).
        """
        if not isinstance(topic, str):
            topic = topic.name
        if not self._accepting:
            raise JournalError(self._refusal)
        queue = self._queue
        if len(queue) >= self.queue_size:
            return self._append_when_full(topic, payload)
        text = fast_dumps(payload)
        meta = payload.meta
        source = _SOURCE_TEXT.get(meta.source) or _source_text(meta.source)
        with self._append_lock:
            if not self._accepting:  # close() began, or the writer died, while we serialised
                raise JournalError(self._refusal)
            seq = self._last_seq + 1
            queue.append((seq, self.run_id, topic, source, meta.ts, meta.correlation_id, text))
            self._last_seq = seq
            depth = len(queue)
            self.metrics.appended += 1  # (max_queue_depth is taken where the queue shrinks)
        if depth >= self._threshold:
            self._ship_due()
        elif depth == 1:
            self._queued()
        return seq

    def _append_when_full(self, topic: str, payload: Payload) -> int | None:
        """``append`` while ``queue_size`` rows wait: sample market data, block the rest."""
        with self._lock:
            if (
                len(self._queue) >= self.queue_size
                and topic.startswith(self.sample_prefixes)
                and self._sample_out(topic)
            ):
                return None
        text = fast_dumps(payload)
        meta = payload.meta
        with self._lock:
            self._wait_for_room()
            with self._append_lock:
                if not self._accepting:
                    raise JournalError(self._refusal)
                seq = self._last_seq + 1
                row = (seq, self.run_id, topic, _source_text(meta.source), meta.ts)
                self._queue.append((*row, meta.correlation_id, text))
                self._last_seq = seq
                depth = len(self._queue)
            metrics = self.metrics
            metrics.appended += 1
            metrics.max_queue_depth = max(metrics.max_queue_depth, depth)
        self._wake.set()
        return seq

    def _sample_out(self, topic: str) -> bool:
        """Count a full-queue event of ``topic``; True when it is to be dropped (lock held)."""
        count = self._sample_counts.get(topic, 0) + 1
        self._sample_counts[topic] = count
        if count % self.sample_every == 0:
            return False
        self.metrics.sampled += 1
        return True

    def _wait_for_room(self) -> None:
        """Block until the queue has room (lock held); the writer thread is told to hurry."""
        if len(self._queue) < self.queue_size:
            return
        self.metrics.blocked += 1
        self._blocked_appenders += 1
        try:
            while len(self._queue) >= self.queue_size:
                if not self._accepting:
                    raise JournalError(self._refusal)
                self._wake.set()
                # A timeout as well: the writer tells blocked appenders without the lock.
                self._room.wait(_ROOM_POLL_S)
        finally:
            self._blocked_appenders -= 1

    def flush(self, timeout_s: float | None = None) -> int:
        """Wait until every event assigned a seq so far is committed; return ``durable_seq``.

        With ``timeout_s``, return after that long even if not done: compare the result with
        ``last_seq``. Raise ``JournalError`` if the writer died.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._lock:
            if self._failure is not None:
                raise JournalError(self._refusal)
            target = self._last_seq
            if self._durable_seq >= target:
                return self._durable_seq
            self._flush_target = max(self._flush_target, target)
            self._wake.set()
            while self._durable_seq < target:
                if self._failure is not None:
                    raise JournalError(self._refusal)
                if deadline is None:
                    self._committed.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._committed.wait(remaining)
            return self._durable_seq

    # -- handing rows to the writer process --------------------------------------------------

    def _queued(self) -> None:
        """The queue was empty: its oldest row starts waiting now (tell an idle writer)."""
        self._queued_since = time.monotonic()
        if self._idle:
            self._wake.set()

    def _ship_due(self) -> None:
        """A batch is full: hand the full batches over, unless a round is still in flight.

        In flight, the answer is looked for every ``_POLL_EVERY`` appends, without waiting; the
        rows keep queueing meanwhile, and go in the next round.
        """
        if not self._ready:  # the process is starting: look for its READY now and then
            self._poll_countdown -= 1
            if self._poll_countdown > 0 or self._stdout_fd < 0:
                return
            self._poll_countdown = _POLL_EVERY
            try:
                if not self._take_ready(0):
                    return
            except JournalError as exc:
                self._writer_died(exc)
                raise JournalError(self._refusal) from exc
        in_flight = self._shipped_seq > self._durable_seq
        if in_flight:
            self._poll_countdown -= 1
            if self._poll_countdown > 0:
                return
            self._poll_countdown = _POLL_EVERY
        try:
            if in_flight and not self._read_answers(wait=False):
                return
            self._ship(rest=self._threshold == 1)
        except JournalError as exc:
            self._writer_died(exc)
            raise JournalError(self._refusal) from exc

    def _ship(self, *, rest: bool) -> None:
        """Hand the writer process the next round; nothing while the round before is in flight.

        A round is the full batches (with ``rest``, also the rows of a batch not yet full), at
        most ``_ROUND_BATCHES``, as one write of ``marshal`` blobs.
        """
        with self._ship_lock:
            if self._shipped_seq > self._durable_seq or self._failure is not None:
                return
            queue, size = self._queue, self.batch_size
            # The queue only shrinks here, so its deepest moment is seen here (or now).
            self.metrics.max_queue_depth = max(self.metrics.max_queue_depth, len(queue))
            popleft = queue.popleft  # the appenders only append: this end is the shipper's
            blobs: list[bytes] = []
            last = 0
            while len(blobs) < _ROUND_BATCHES and (len(queue) >= size or (rest and queue)):
                batch = [popleft() for _ in range(min(len(queue), size))]
                last = batch[-1][0]
                data = marshal.dumps(batch)
                blobs.append(journal_writer.HEADER.pack(len(data)))
                blobs.append(data)
            if not blobs:
                return
            self._shipped_seq = last
            self._queued_since = time.monotonic() if queue else 0.0
            try:
                data = b"".join(blobs)
                view, fd = memoryview(data), self._stdin_fd
                while view:
                    view = view[os.write(fd, view) :]
            except OSError as exc:
                msg = f"the writer process is gone: {exc}"
                raise JournalError(msg) from exc
        if self._idle:  # the writer thread sleeps without a timeout: it is to watch this round
            self._wake.set()
        if self._blocked_appenders:
            with self._lock:
                self._room.notify_all()

    def _read_answers(self, *, wait: bool, timeout_s: float | None = None) -> bool:
        """Take in the writer process's answers; True when no round is in flight any more.

        Without ``wait`` only what has arrived, and nothing if another thread is reading. With
        it, until the round is answered or ``timeout_s`` is up. A dead process raises.
        """
        return self._read_frames(self._answered, wait=wait, timeout_s=timeout_s)

    def _answered(self) -> bool:
        return self._shipped_seq <= self._durable_seq

    def _read_frames(
        self, done: Callable[[], bool], *, wait: bool, timeout_s: float | None
    ) -> bool:
        """Act on the writer process's frames until ``done()``; return ``done()``.

        Without ``wait`` only what has arrived, and nothing if another thread is reading. With
        it, until ``done()`` or ``timeout_s`` is up. The read lock is held only while arrived
        frames are read, never while waiting for one: a thread that waits (the writer thread,
        for a flush) needs the GIL back before it can read, which a busy bus thread may not
        give up for long, so meanwhile the appenders read the frames and go on.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not done():
            if self._read_lock.acquire(blocking=False):
                try:
                    while not done():
                        kind, body = self._next_frame(0)
                        if kind < 0:
                            break
                        self._answer(kind, body)
                finally:
                    self._read_lock.release()
            if not wait or done():
                break
            if self._failure is not None:  # another reader found the process gone
                raise JournalError(self._refusal)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            select.select([self._stdout_fd], [], [], remaining)
        return done()

    def _answer(self, kind: int, body: tuple[Any, ...]) -> None:
        """Act on one frame of the writer process (READY only as its first)."""
        if kind == journal_writer.READY and not self._ready:
            self._ready = True
            self._started.set()
        elif kind == journal_writer.COMMITTED and self._ready:
            last, batches = body
            with self._lock:
                self.metrics.committed += last - self._durable_seq
                self.metrics.batches += batches
                self._durable_seq = last
                self._committed.notify_all()
        elif kind == journal_writer.FAILED:
            attempt, error_type, error, delay, first, last = body
            with self._lock:
                self.metrics.write_errors += 1
            log.error(
                "journal.write_failed",
                path=str(self.path),
                first_seq=first,
                last_seq=last,
                attempt=attempt,
                retry_in_s=delay,
                error_type=error_type,
                error=error,
            )
        elif kind == journal_writer.RECOVERED:
            attempts, last = body
            log.warning(
                "journal.write_recovered", path=str(self.path), last_seq=last, attempts=attempts
            )
        else:
            raise JournalError(_frame_text(kind, body))

    # -- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        """Start the writer process, serve what appenders leave, and stop the process from here.

        What appenders leave: the interval, flushes, blocked appenders and the end.
        """
        try:
            self._process = self._start_process()
        except Exception as exc:  # noqa: BLE001 - appends and flushes report it from now on
            self._writer_died(JournalError(f"the writer process failed to start: {exc}"))
            self._started.set()
            return
        try:
            while self._serve():
                pass
            # From this thread: the process dies with the thread that started it, and it must
            # get to close its connection (SQLite's last checkpoint) first.
            self._stop_process()
        except BaseException as exc:  # noqa: BLE001 - a dead writer must fail appends, not hang them
            self._writer_died(exc)

    def _urgent(self) -> bool:
        """Somebody waits for the queue: ``flush()``, ``close()``, a blocked appender."""
        return (
            self._stopping or self._blocked_appenders > 0 or self._flush_target > self._durable_seq
        )

    def _serve(self) -> bool:
        """One turn of the writer thread; False once stopped with everything committed.

        Busy appenders hand full batches over themselves, so this thread needs the GIL only
        now and then: on its interval (rows that waited that long go, full batch or not), when
        somebody waits (``_urgent``, or every row with ``flush_interval_s=0``), and when full
        batches wait behind a round in flight and no append came since its last look (then
        nobody else will hand them over). In those cases it waits for the writer process's
        answer itself.
        """
        if self._failure is not None:  # an appender found the writer process dead
            return False
        interval, queue = self.flush_interval_s, self._queue
        eager = self._urgent() or self._threshold == 1
        due = bool(queue) and (eager or time.monotonic() - self._queued_since >= interval)
        full = len(queue) >= self.batch_size
        idle = self._appenders_idle()
        if self._shipped_seq > self._durable_seq:  # a round in flight
            wait = eager or due or (full and idle)
            if not self._read_answers(wait=wait, timeout_s=interval or None) and wait:
                return True  # the writer is slow (a stalled disk): keep waiting for it
        in_flight = self._shipped_seq > self._durable_seq
        if not in_flight:
            if due or full:
                self._ship(rest=due)
                return True  # and look for its answer
            if self._stopping and not queue:
                return False
        timeout: float | None
        if queue or in_flight:
            # An appender may fill a batch meanwhile, or stop: look again within the grace.
            timeout = self._grace_s
            if queue:
                timeout = max(0.001, min(timeout, self._queued_since + interval - time.monotonic()))
        else:
            timeout = None
            self._idle = True
            if self._queue or self._urgent():  # it came while we looked
                self._idle = False
                return True
        self._wake.wait(timeout)
        self._idle = False
        self._wake.clear()
        return True

    def _appenders_idle(self) -> bool:
        """True when nothing was appended since the last call.

        Each time something was, the next look comes later (``_grace_s`` doubles, up to the
        interval): busy appenders hand their batches over themselves.
        """
        appended = self.metrics.appended
        if appended == self._seen_appended:
            self._grace_s = _GRACE_S
            return True
        self._seen_appended = appended
        self._grace_s = min(self._grace_s * 2, max(self.flush_interval_s, _GRACE_S))
        return False

    def _writer_died(self, exc: BaseException) -> None:
        with self._lock:
            if self._failure is not None:
                return  # told already (the writer thread and an appender can both find it)
            self._failure = exc
            self._accepting = False
            self._refusal = (
                f"the writer of journal {self.path} died ({type(exc).__name__}: {exc}); "
                f"events after seq {self._durable_seq} are not stored"
            )
            self._room.notify_all()
            self._committed.notify_all()
        log.critical(
            "journal.writer_died",
            path=str(self.path),
            durable_seq=self._durable_seq,
            error_type=type(exc).__name__,
            error=str(exc),
            exc_info=exc,
        )
        with contextlib.suppress(Exception):
            self._stop_process()
        if self.on_failure is not None:
            try:
                self.on_failure(self._refusal)
            except Exception:
                log.exception("journal.on_failure_failed", path=str(self.path))

    # -- reading ---------------------------------------------------------------------------

    def read(
        self,
        since_seq: int = 0,
        until_seq: int | None = None,
        topics: Collection[str] | None = None,
        correlation_id: str | None = None,
        limit: int | None = None,
    ) -> Iterator[JournalRecord]:
        """Yield committed events in seq order; the filters are ``JournalReader.read``'s."""
        return self._open_reader().read(since_seq, until_seq, topics, correlation_id, limit)

    def payloads(
        self,
        since_seq: int = 0,
        until_seq: int | None = None,
        topics: Collection[str] | None = None,
    ) -> Iterator[tuple[int, str, str]]:
        """``(seq, topic, payload JSON)`` of committed events; see ``JournalReader.payloads``."""
        return self._open_reader().payloads(since_seq, until_seq, topics)

    def parsed(
        self,
        since_seq: int = 0,
        until_seq: int | None = None,
        topics: Collection[str] | None = None,
        patterns: Mapping[str, str] | None = None,
    ) -> ParsedRows:
        """Committed events read and matched by a reader process; see ``JournalReader.parsed``."""
        return self._open_reader().parsed(since_seq, until_seq, topics, patterns)

    def _open_reader(self) -> JournalReader:
        if self._reader is None:
            self._reader = JournalReader(self.path)
        return self._reader


def _source_text(source: object) -> str:
    """The ``source`` column of a ``meta.source`` (a ``Source``, or what a plugin put there)."""
    return str(getattr(source, "value", source))


def _alive(pid_text: str) -> bool:
    """Whether the process of ``pid_text`` (what a lock file holds) still runs; True if unsure."""
    try:
        pid = int(pid_text)
    except ValueError:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_writer(path: Path) -> int:
    """Take the exclusive writer lock of ``path`` (``<file>.lock``); return its descriptor."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + _ORPHAN_WAIT_S
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                # A run that died (a SIGKILL) leaves its writer process for a moment, dying
                # with it and still holding the lock: wait for that, not for a live writer.
                if _alive(holder) or time.monotonic() >= deadline:
                    msg = (
                        f"journal {path} is already open for writing "
                        f"(pid {holder} holds {lock_path})"
                    )
                    raise JournalError(msg) from None
                time.sleep(0.01)
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _prepare(conn: sqlite3.Connection, path: Path) -> int:
    """Create the tables in an empty file or check an existing journal; return its max seq."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            else:
                _check_schema(conn, path)
            last: Any = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        msg = f"cannot prepare the event journal {path}: {exc}"
        raise JournalError(msg) from exc
    return int(last or 0)


def _frame_text(kind: int, body: tuple[Any, ...]) -> str:
    """What an unexpected frame of the writer process says (kind -1: none came in time)."""
    if kind < 0:
        return f"the writer process did not say READY within {_WRITER_START_S:g} s"
    if kind == journal_writer.FATAL:
        error_type, error = body
        return f"the writer process failed: {error_type}: {error}"
    return f"the writer process sent an unexpected frame {kind} {body!r}"
