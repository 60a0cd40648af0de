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

A topic name must be known: one of the topic map's (the built-in topics and those of the
plugins the configuration loads, as ``planes topics`` lists them) or one the journal holds (a
plugin that recorded it may since have been removed); a pattern must match a known topic or
one the journal holds. Any other is a misspelling, refused with the closest known names
(difflib), rather than exported as nothing; a known topic without events is a valid, empty
export.

Exit status: 0 done (also when the reader of a pipe went away early, as ``| head`` does), 2 bad
input (no journal, a data dir that is a file, a file that is not a journal, a bad seq, an
unknown topic or a bad pattern, an unwritable ``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import sys
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import TextIO

import attrs

from contracts.topics import STATE_REGISTRY, BotEventMap
from planes.config import Config, load_config
from planes.logs import configure_logging
from planes.storage.journal import JournalError, JournalReader, JournalRecord, open_reader
from planes.storage.plane import data_paths

EXIT_OK = 0
EXIT_USAGE = 2

_PROG = "planes journal export"
_LISTED = " (`planes topics` lists them)"
_CLOSE = 0.6
"""A suggestion's least similarity to a misspelt topic (difflib's ratio; its usual cutoff)."""
_NEAR_BEST = 0.1
"""How much less similar than the closest name another may be and still be suggested."""

MAX_SEQ = 2**63 - 1
"""The largest seq a journal can hold: SQLite's INTEGER is a signed 64-bit number."""

BUILTIN_TOPICS: frozenset[str] = frozenset([*BotEventMap, STATE_REGISTRY.name])
"""The topics every configuration knows: the BotEventMap and the storage plane's own."""

TopicNames = Callable[[Config], tuple[Collection[str], str | None]]
"""How the export learns the topic map: ``(names, why plugin topics are missing or None)``."""


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

    def check(self, known: Collection[str], reader: JournalReader, note: str | None = None) -> None:
        """Raise ``ExportError`` naming the first name or pattern that no topic can match.

        A name passes when it is in ``known`` or the journal has an event on it (one lookup in
        the journal's topic index); a pattern when a name in ``known`` starts with its prefix,
        or else a topic in the journal does (a walk of the journal, as the export of a pattern
        is, that stops at the first match). ``note`` is added to the message (why plugin
        topics may be missing from ``known``).
        """
        tail = f"; {note}" if note else ""
        for name in sorted(self.exact):
            if name in known or _recorded(reader, name):
                continue
            hint = _did_you_mean(name, known)
            raise ExportError(f"--topic {name!r} is not a known topic{hint}{_LISTED}{tail}")
        for prefix in self.prefixes:
            if any(name.startswith(prefix) for name in known):
                continue
            if any(topic.startswith(prefix) for _, topic, _ in reader.payloads()):
                continue
            hint = _did_you_mean(prefix, {name.partition(":")[0] + ":" for name in known}, "*")
            msg = f"--topic {prefix + '*'!r} matches no known topic{hint}"
            raise ExportError(f"{msg}{_LISTED}{tail}")


def _recorded(reader: JournalReader, topic: str) -> bool:
    return next(reader.read(topics=(topic,), limit=1), None) is not None


def _did_you_mean(word: str, known: Iterable[str], suffix: str = "") -> str:
    """``"; did you mean 'x'?"`` naming the names closest to ``word``; "" when none is close.

    Only those nearly as close as the closest are named: topics share their plane's prefix,
    so ``market:klines`` is somewhat like every ``market:`` topic but a typo of one.
    """
    scored = sorted((-difflib.SequenceMatcher(None, word, name).ratio(), name) for name in known)
    if not scored or -scored[0][0] < _CLOSE:
        return ""
    best = -scored[0][0]
    close = [name for score, name in scored[:3] if -score >= max(_CLOSE, best - _NEAR_BEST)]
    return "; did you mean " + " or ".join(repr(c + suffix) for c in close) + "?"


def select(
    journal: Path,
    *,
    since: int = 0,
    until: int | None = None,
    topics: TopicFilter | None = None,
    correlation_id: str | None = None,
    known: Collection[str] | None = None,
    known_note: str | None = None,
) -> Iterator[JournalRecord]:
    """Yield the committed events of the journal file ``journal`` that pass every filter.

    Raise ``ExportError`` for a bad seq range, and for a topic that is neither in ``known``
    nor in the journal when ``known`` is given (``TopicFilter.check``); ``JournalError``
    (naming the file) when the file is missing or not a journal; all before the first event
    is read.
    """
    for flag, seq in (("--since", since), ("--until", until)):
        if seq is not None and not 0 <= seq <= MAX_SEQ:
            raise ExportError(f"{flag} must be a seq from 0 to {MAX_SEQ}, got {seq}")
    if until is not None and until < since:
        raise ExportError(f"--until {until} is below --since {since}: no event can match")
    reader = open_reader(journal)
    if topics is not None and known is not None:
        topics.check(known, reader, known_note)
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
    """An argparse type: a journal seq, an integer from 0 to ``MAX_SEQ``."""
    expected = f"{text!r} is not a seq (an integer from 0 to {MAX_SEQ})"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(expected) from None
    if not 0 <= value <= MAX_SEQ:
        raise argparse.ArgumentTypeError(expected)
    return value


def not_a_directory(path: Path, name: str) -> str | None:
    """Why ``path`` (``name``: its flag or key) cannot be a data dir, or None when it can.

    A missing one is created; what cannot work is a path that is, or runs through, a file.
    """
    for step in (path, *path.parents):
        if not step.exists():
            continue
        if step.is_dir():
            return None
        if step == path:
            return f"{name} {path} names a file, not a directory"
        return f"{name} {path}: {step} is a file, not a directory"
    return None


def builtin_topics(config: Config) -> tuple[Collection[str], str | None]:
    """The ``TopicNames`` of the built-in topic map alone (no plugin is loaded)."""
    del config
    return BUILTIN_TOPICS, None


def cmd_journal(args: argparse.Namespace, topic_names: TopicNames = builtin_topics) -> int:
    """``planes journal``: dispatch to its subcommand (only ``export`` so far)."""
    if args.journal_command == "export":
        return cmd_export(args, topic_names)
    msg = f"unknown journal subcommand {args.journal_command!r}"  # argparse refuses it first
    raise AssertionError(msg)


def cmd_export(args: argparse.Namespace, topic_names: TopicNames = builtin_topics) -> int:
    """``planes journal export``: see the module docstring.

    ``topic_names`` gives the topic map ``--topic`` is checked against (``cli.main`` passes
    one that loads the configured plugins); it is asked only when ``--topic`` is given.
    """
    # The config is read even with --data-dir, so a broken --config or --set is never ignored.
    config = load_config(args.config, args.sets)
    # Logs go to stderr: stdout carries the JSON Lines and nothing else.
    configure_logging("warning", config.logging.format.value, enabled=config.logging.enabled)
    if args.data_dir is not None:
        data_dir, flag = Path(args.data_dir), "--data-dir"
    else:
        data_dir, flag = Path(config.runtime.data_dir), "runtime.data_dir"
    journal, _, _ = data_paths(data_dir)
    problem = not_a_directory(data_dir, flag)
    if problem is not None:
        print(f"{_PROG}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        topics = TopicFilter.parse(args.topic)
        known, note = topic_names(config) if topics is not None else (None, None)
        records = select(
            journal,
            since=args.since,
            until=args.until,
            topics=topics,
            correlation_id=args.correlation_id,
            known=known,
            known_note=note,
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
