"""``planes journal export``: the event journal of a data dir as JSON Lines.

One event per line, in seq order, exactly the keys ``seq, run_id, topic, source, ts,
correlation_id, payload`` (``payload`` a JSON object, see ``JournalRecord.to_json_line``). The
export streams: the reader fetches the journal page by page and each line is written as it is
read, so memory stays flat whatever the journal's size, and a journal that a running bot is
still writing can be exported (it shows what was committed when each page was read).

Filters, all of which must match: ``--topic`` (repeatable; an exact name such as
``exec:order_event`` or a prefix pattern such as ``market:*``), ``--since SEQ`` (events after
it), ``--until SEQ`` (up to it, inclusive), ``--correlation-id``. Exact names alone go to the
journal's topic index; a pattern makes the export walk the seq range and test each topic.

Exit status: 0 done (also when the reader of a pipe went away early, as ``| head`` does), 2 bad
input (no journal, a file that is not one, a bad seq or topic pattern, an unwritable ``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import TextIO

import attrs

from planes.config import load_config
from planes.logs import configure_logging
from planes.storage.journal import JournalError, JournalRecord, open_reader
from planes.storage.plane import data_paths

EXIT_OK = 0
EXIT_USAGE = 2

_PROG = "planes journal export"


class ExportError(ValueError):
    """The export cannot run as asked; the message says what is wrong."""


@attrs.frozen
class TopicFilter:
    """The ``--topic`` arguments: exact names and ``prefix*`` patterns (either may match)."""

    exact: frozenset[str]
    prefixes: tuple[str, ...]

    @classmethod
    def parse(cls, patterns: Iterable[str]) -> TopicFilter | None:
        """Read ``--topic`` values; None when there are none (every topic is exported).

        ``market:*`` matches every topic starting with ``market:``; a lone ``*`` matches all.
        A ``*`` anywhere but at the end raises ``ExportError``.
        """
        exact: set[str] = set()
        prefixes: list[str] = []
        given = False
        for raw in patterns:
            given = True
            pattern = raw.strip()
            if not pattern:
                raise ExportError("--topic: an empty topic name")
            if "*" in pattern[:-1]:
                msg = f"--topic {raw!r}: '*' may only end a pattern, as in market:*"
                raise ExportError(msg)
            if pattern.endswith("*"):
                prefixes.append(pattern[:-1])
            else:
                exact.add(pattern)
        if not given:
            return None
        return cls(frozenset(exact), tuple(dict.fromkeys(prefixes)))

    @property
    def index_topics(self) -> Collection[str] | None:
        """What the journal's topic index can select: the exact names, unless a pattern is given."""
        return None if self.prefixes else self.exact

    def __call__(self, topic: str) -> bool:
        """True when ``topic`` is one of the names or starts with one of the prefixes."""
        return topic in self.exact or topic.startswith(self.prefixes)


def select(
    journal: Path,
    *,
    since: int = 0,
    until: int | None = None,
    topics: TopicFilter | None = None,
    correlation_id: str | None = None,
) -> Iterator[JournalRecord]:
    """Yield the committed events of the journal file ``journal`` that pass every filter.

    Raise ``ExportError`` for a bad seq range and ``JournalError`` (naming the file) when the
    file is missing or not a journal; both before the first event is read.
    """
    if since < 0:
        raise ExportError(f"--since must be a seq >= 0, got {since}")
    if until is not None and until < since:
        raise ExportError(f"--until {until} is below --since {since}: no event can match")
    reader = open_reader(journal)
    records = reader.read(
        since,
        until,
        topics=None if topics is None else topics.index_topics,
        correlation_id=correlation_id,
    )
    if topics is None or not topics.prefixes:
        return records
    return (record for record in records if topics(record.topic))


def write_lines(records: Iterable[JournalRecord], out: TextIO) -> int:
    """Write one JSON line per record to ``out``; return how many were written."""
    count = 0
    write = out.write
    for record in records:
        write(record.to_json_line())
        write("\n")
        count += 1
    return count


def parse_seq(text: str) -> int:
    """An argparse type: a journal seq, an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seq (an integer >= 0)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seq (an integer >= 0)")
    return value


def cmd_journal(args: argparse.Namespace) -> int:
    """``planes journal``: dispatch to its subcommand (only ``export`` so far)."""
    if args.journal_command == "export":
        return cmd_export(args)
    msg = f"unknown journal subcommand {args.journal_command!r}"  # argparse refuses it first
    raise AssertionError(msg)


def cmd_export(args: argparse.Namespace) -> int:
    """``planes journal export``: see the module docstring."""
    # The config is read even with --data-dir, so a broken --config or --set is never ignored.
    config = load_config(args.config, args.sets)
    # Logs go to stderr: stdout carries the JSON Lines and nothing else.
    configure_logging("warning", config.logging.format.value, enabled=config.logging.enabled)
    data_dir = Path(args.data_dir) if args.data_dir is not None else Path(config.runtime.data_dir)
    journal, _, _ = data_paths(data_dir)
    try:
        records = select(
            journal,
            since=args.since,
            until=args.until,
            topics=TopicFilter.parse(args.topic),
            correlation_id=args.correlation_id,
        )
        if args.out is None:
            return _to_stdout(records)
        return _to_file(records, Path(args.out))
    except (ExportError, JournalError) as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _to_stdout(records: Iterable[JournalRecord]) -> int:
    try:
        write_lines(records, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader left (| head): stop quietly. Point stdout at /dev/null so the interpreter's
        # final flush of what is still buffered does not fail a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return EXIT_OK


def _to_file(records: Iterable[JournalRecord], out: Path) -> int:
    """Write to a temporary file beside ``out``, renamed over it once complete."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            count = write_lines(records, fh)
        tmp.replace(out)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ExportError(f"cannot write --out {out}: {exc.strerror or exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    print(f"{_PROG}: {count} events written to {out}", file=sys.stderr)
    return EXIT_OK
