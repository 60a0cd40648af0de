"""The journal's writer process: commits the batches an ``EventJournal`` sends it, nothing else.

The same script is also the journal's **reader process** for recovery (``"mode": "read"`` in
its configuration): it reads a journal's tail page by page and matches each payload against the
regex of its topic, so that SQLite's work and the matching run beside the process that rebuilds
the state from the groups (see ``read`` below and ``JournalReader.parsed``). What follows about
stdin, signals and the writer lock is the writer's: the reader reads nothing from stdin, holds
no lock, and dies with its parent like the writer.

``EventJournal`` starts this file as a script (``python -I -S journal_writer.py CONFIG``) so
that SQLite's work — binding the rows, the B-tree inserts, the WAL writes — runs on its own
interpreter and its own lock, not under the trading process's GIL. It uses the standard library
only, and the parent keeps everything else: the seq, the queue, the policies, the metrics.

The protocol, on the child's stdin and stdout (all integers little-endian):

* **parent -> child**: ``<u32 length><marshal of a list of rows>`` per batch, each row
  ``(seq, run_id, topic, source, ts, correlation_id, payload)``. End of input is the orderly
  end: everything sent has been answered, and the child exits 0.
* **child -> parent**: ``<u8 kind><u32 length><marshal of a tuple>`` frames:
  ``READY ()`` once the database is open; per batch any number of
  ``FAILED (attempt, error_type, error, retry_in_s, first_seq, last_seq)`` and
  ``RECOVERED (attempts, last_seq)``; and ``COMMITTED (last_seq, batches)`` once every batch
  received so far is committed (one answer for all the batches that were waiting, so a parent
  that sends a round of batches gets one answer); ``FATAL (error_type, error)`` before it gives
  up.

A reader thread takes every batch off the pipe as soon as it arrives, so the parent's write
returns at once however long a commit takes (the parent bounds what is in flight).

A batch is committed atomically (one multi-row INSERT, or several in one transaction) and
retried with backoff until it is, forever, with the same rows; after a failed COMMIT whose
outcome is unknown the child looks the batch's last row up before writing it again.

The child dies with its parent: on Linux ``PR_SET_PDEATHSIG`` kills it when the parent thread
that started it ends, SIGKILL included, so a batch that was in flight is lost with the parent's
queue, as it would be if the writer were a thread; elsewhere it ends at EOF. It holds the
parent's writer lock (the inherited descriptor) until it is gone, so a restart cannot write
beside an orphan. It ignores SIGINT and SIGTERM (and runs in a session of its own): a signal
to the whole group must not end it before the parent's last flush.
"""

from __future__ import annotations

# The imports are few and light on purpose: this process starts with every journal that opens,
# and its start-up (the interpreter and these imports, about 30 ms here) delays the first commit.
# Hence the C modules of signal and sqlite3: their packages import enum and datetime, 3 to 5 ms
# each here.
import _sqlite3 as sqlite3
import ctypes
import itertools
import marshal
import os
import struct
import sys
import threading
import time
from _queue import SimpleQueue

TYPE_CHECKING = False  # not typing's: importing typing (and re with it) costs milliseconds
if TYPE_CHECKING:
    import signal
    from typing import Any, BinaryIO
else:
    import _signal as signal  # no stub of its own: checked as signal, which it backs

READY, COMMITTED, FAILED, RECOVERED, FATAL, ROWS, DONE = range(7)
"""Kinds of the frames the child sends (ROWS and DONE: the reader's)."""
HEADER = struct.Struct("<I")
"""The length before each batch the parent sends."""
FRAME = struct.Struct("<BI")
"""The kind and length before each frame the child sends."""
COLUMNS = "seq, run_id, topic, source, ts, correlation_id, payload"
_PR_SET_PDEATHSIG = 1
_SWITCH_INTERVAL_S = 0.0002


def insert_sql(rows: int) -> str:
    """The INSERT of ``rows`` rows."""
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * rows)
    return f"INSERT INTO events({COLUMNS}) VALUES {values}"  # noqa: S608 - placeholders only


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies; elsewhere, rely on EOF."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


class _Writer:
    def __init__(self, config: dict[str, Any], out: BinaryIO) -> None:
        self.out = out
        self.statement_rows = int(config["statement_rows"])
        self.retry_initial_s = float(config["retry_initial_s"])
        self.retry_max_s = float(config["retry_max_s"])
        self.conn = sqlite3.connect(
            config["path"], timeout=float(config["busy_timeout_s"]), isolation_level=None
        )
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={config['synchronous'].upper()}")
        self.cache: dict[int, str] = {}

    def send(self, kind: int, body: tuple[Any, ...]) -> None:
        data = marshal.dumps(body)
        self.out.write(FRAME.pack(kind, len(data)) + data)
        self.out.flush()

    def commit(self, batch: list[Any]) -> None:
        """Commit ``batch``, retrying with backoff until it is; report failures as they come."""
        delay = self.retry_initial_s
        attempt = 0
        first, last = batch[0][0], batch[-1][0]
        while True:
            try:
                self.insert(batch, retry=attempt > 0)
                break
            except sqlite3.Error as exc:
                attempt += 1
                self.send(FAILED, (attempt, type(exc).__name__, str(exc), delay, first, last))
                time.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
        if attempt:
            self.send(RECOVERED, (attempt + 1, last))

    def sql(self, rows: int) -> str:
        text = self.cache.get(rows)
        if text is None:
            text = self.cache[rows] = insert_sql(rows)
        return text

    def insert(self, batch: list[Any], *, retry: bool) -> None:
        conn = self.conn
        if retry and self.committed_already(batch[-1]):
            return  # the failed attempt's COMMIT did reach the file
        step = self.statement_rows
        if len(batch) <= step:  # a single statement is its own transaction
            conn.execute(self.sql(len(batch)), list(itertools.chain.from_iterable(batch)))
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            for start in range(0, len(batch), step):
                part = batch[start : start + step]
                conn.execute(self.sql(len(part)), list(itertools.chain.from_iterable(part)))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                try:  # noqa: SIM105 - no contextlib here: it costs start-up time
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the error that brought us here is the one to report
            raise

    def committed_already(self, last: Any) -> bool:
        row = self.conn.execute(
            "SELECT run_id, payload FROM events WHERE seq = ?", (last[0],)
        ).fetchone()
        return row is not None and (row[0], row[1]) == (last[1], last[6])


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    if not data:
        return None
    while len(data) < size:
        more = stream.read(size - len(data))
        if not more:
            msg = f"the journal's parent closed the pipe inside a batch ({len(data)}/{size} bytes)"
            raise EOFError(msg)
        data += more
    return data


def _read_batch(stream: BinaryIO, size: int) -> bytes:
    data = _read_exactly(stream, size)
    if data is None:
        msg = "the journal's parent closed the pipe before a batch"
        raise EOFError(msg)
    return data


def _receive(stream: BinaryIO, inbox: SimpleQueue[bytes | BaseException | None]) -> None:
    """Move every batch off the pipe into ``inbox``; None at the end, or the error."""
    try:
        while header := _read_exactly(stream, HEADER.size):
            (length,) = HEADER.unpack(header)
            inbox.put(_read_batch(stream, length))
        inbox.put(None)
    except BaseException as exc:  # noqa: BLE001 - the committing thread reports it
        inbox.put(exc)


def _fatal(out: BinaryIO, exc: Exception) -> int:
    """Send ``FATAL`` for ``exc`` (if the parent still listens); the exit status."""
    body = marshal.dumps((type(exc).__name__, str(exc)))
    try:
        out.write(FRAME.pack(FATAL, len(body)) + body)
        out.flush()
    except OSError:
        pass  # the parent is gone too
    return 1


def read(config: dict[str, Any], out: BinaryIO) -> int:
    """The reader: send the rows of ``config["sql"]``, page by page, matched; then DONE.

    The parent sends nothing; it reads frames on stdout: ``ROWS [(seq, topic, body), ...]``
    per page, where ``body`` is the groups of the topic's regex (``config["patterns"]``,
    ``re.fullmatch``) when it matched and the payload JSON otherwise; then ``DONE (rows,)``;
    ``FATAL (error_type, error)`` if SQLite fails. The statement takes the seq to start after
    as its first parameter and the page size as its last, as ``JournalReader``'s pages do.
    A full pipe holds it back: it reads no faster than the parent consumes.
    """
    import re  # noqa: PLC0415 - only the reader needs it: the writer starts without

    matchers = {topic: re.compile(p).fullmatch for topic, p in config["patterns"].items()}
    names: dict[str, str] = {}  # one object per topic name: marshal writes the others as refs
    sql, params, page = config["sql"], list(config["params"]), int(config["page"])
    conn = sqlite3.connect(config["uri"], uri=True, timeout=float(config["busy_timeout_s"]))
    count = 0
    try:
        while True:
            rows = conn.execute(sql, [*params, page]).fetchall()
            sent = []
            # A value repeated within a page (a symbol, a quantity) goes as one object: marshal
            # writes the others as references, and the parent builds it once, not per row.
            shared: dict[str | None, str | None] = {}
            share = shared.setdefault
            for seq, topic, text in rows:
                topic = names.setdefault(topic, topic)  # noqa: PLW2901 - the shared object
                match = matchers.get(topic)
                found = None if match is None or type(text) is not str else match(text)
                if found is None:
                    sent.append((seq, topic, text))
                else:
                    groups = found.groups()
                    sent.append((seq, topic, tuple(map(share, groups, groups))))
            data = marshal.dumps(sent)
            out.write(FRAME.pack(ROWS, len(data)) + data)
            out.flush()
            count += len(rows)
            if len(rows) < page:
                break
            params[0] = rows[-1][0]
    finally:
        conn.close()
    data = marshal.dumps((count,))
    out.write(FRAME.pack(DONE, len(data)) + data)
    out.flush()
    return 0


def main(argv: list[str]) -> int:
    """Run the writer (or the reader) on ``argv[1]``, its configuration (module docstring)."""
    config = marshal.loads(bytes.fromhex(argv[1]))  # noqa: S302 - our parent's config
    if config.get("mode") == "read":
        _die_with_parent(int(config["parent"]))
        out = sys.stdout.buffer
        try:
            return read(config, out)
        except BrokenPipeError:
            return 0  # the parent stopped reading: nobody to answer
        except Exception as exc:  # noqa: BLE001 - everything is reported to the parent
            return _fatal(out, exc)
    # Stopping is the parent's to decide (EOF on stdin), and its death ends this process: a
    # SIGTERM or SIGINT meant for the whole group must not cut the parent's last flush short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(int(config["parent"]))
    # The reader thread must take a batch off the pipe at once, not after the committing
    # thread's turn at this interpreter's GIL: the parent's write waits for room meanwhile.
    sys.setswitchinterval(_SWITCH_INTERVAL_S)
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    writer: _Writer | None = None
    try:
        writer = _Writer(config, out)
        inbox: SimpleQueue[bytes | BaseException | None] = SimpleQueue()
        threading.Thread(target=_receive, args=(inp, inbox), daemon=True).start()
        writer.send(READY, ())
        committed, batches = None, 0
        while True:
            data = inbox.get()
            if data is None or isinstance(data, BaseException):
                if batches:  # the end came right behind the last batch: answer it first
                    writer.send(COMMITTED, (committed, batches))
                if data is None:
                    return 0
                raise data  # noqa: TRY301 - reported as FATAL below, like every other error
            batch = marshal.loads(data)  # noqa: S302 - our parent's rows
            writer.commit(batch)
            committed, batches = batch[-1][0], batches + 1
            if inbox.empty():  # everything sent so far is committed: one answer for it all
                writer.send(COMMITTED, (committed, batches))
                batches = 0
    except BrokenPipeError:
        return 0  # the parent is gone: nobody to answer
    except Exception as exc:  # noqa: BLE001 - everything is reported to the parent
        return _fatal(out, exc)
    finally:
        if writer is not None:
            writer.conn.close()


if __name__ == "__main__":
    code = main(sys.argv)
    # Everything is committed or reported and the connection is closed: end here, without the
    # interpreter's teardown (about 15 ms of it, with the reader thread still blocked in read).
    # Every frame was flushed when it was sent.
    os._exit(code)
