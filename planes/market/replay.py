"""The ``replay`` source: closed ``market:kline`` bars from an OHLCV file, in time order.

Formats (``market.replay.format``; ``auto`` goes by the extension, ``.json`` or ``.csv``, and
by the first character of the file otherwise):

* **CSV as pandas writes it**: a header row, then one bar a row. The time column is the first
  column named ``date``, ``datetime``, ``timestamp`` or ``time`` (any case), or else an unnamed
  first column (``DataFrame.to_csv()`` of a frame with a ``DatetimeIndex``). The columns ``open``,
  ``high``, ``low``, ``close`` and ``volume`` are found in any letter case and any order; an
  optional ``turnover`` column is read too, anything else (``Adj Close`` ...) is ignored.
  Times are ISO-8601 (``2024-01-01 00:00:00``, ``2024-01-01T00:00:00+02:00``, ``2024-01-01``;
  naive means UTC) or integer epoch timestamps: below ``10**11`` they are seconds (2001-09-09
  onward, so at least ``10**9``), from ``10**11`` up to ``10**14`` milliseconds (1973-03-03 to
  year 5138). The first row decides the kind and the unit; every row must then use the same.
* **Bybit kline JSON** as ``GET /v5/market/kline`` returns it: ``{"retCode": 0, "retMsg": "OK",
  "result": {"symbol": ..., "list": [[start, open, high, low, close, volume, turnover], ...]}}``,
  newest first (it is reversed). A ``retCode`` other than 0 is an error quoting ``retMsg``.

The whole file is read and checked at ``connect()``, before the first bar goes out: a malformed
row is a ``ReplayError`` whose message is ``<path>:<line>: <reason>`` (a bad number or date, high
below low, high below open or close, low above open or close, a price not above zero, a negative
volume, a timestamp not after the one before, bars that overlap). Nothing is skipped, nothing is
re-sorted. Through the MarketGateway that becomes a ``market:error`` with code
``connect_failed``, which fails the boot at once. A clean unquoted CSV is read column by column
(``_read_plain_columns``, the same parsers and checks mapped over whole columns); anything else,
and every error, is left to the row-by-row reader (``_read_rows``), which names the line. A
Bybit list of strings is read the same way (``_json_columns``, else ``_json_rows``).

The symbol is the JSON's ``result.symbol``; for a CSV ``market.replay.symbol`` or else the first
of ``market.symbols``. The interval is ``market.replay.interval`` or else the most common gap
between bars, labelled the Bybit way (``1``, ``5``, ``60`` minutes, ``D``, ``W``, ``M``; other
whole minutes as their count, anything else in seconds like ``90s``). A bar ends one
millisecond before the next interval starts (``end_ts = start_ts + interval - 1``).

Playback starts once the source is connected, was asked to subscribe and, when a control plane
is booting the bot, the lifecycle reached RUNNING (or PAUSED): bars played during the boot
would reach no running bot, and a short file could end before the boot saw it connect. With
``market.replay.speed = 0`` each bar is paced to its end with ``clock.pace``: under the historical
clock that jumps data time to the bar's end (so ``meta.ts == end_ts``) and the file plays as fast
as the planes take it, yielding to the loop every ``YIELD_EVERY`` bars for async handlers. With
``speed = N > 0`` under the real-time clock, bars are spaced by their data-time distance divided
by N (scaled real time, anchored at the first bar so errors do not accumulate). After the last
bar it publishes ``market:disconnected`` with reason ``end_of_data``. ``disconnect()`` pauses
(the next ``connect()`` resumes with the next bar); a bar is never published twice.
"""

from __future__ import annotations

import asyncio
import calendar
import csv
import decimal
import io
import itertools
import json
import operator
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Protocol, cast, overload

import attrs
import structlog

from contracts.control import ControlState
from contracts.enums import Lifecycle
from contracts.market import END_OF_DATA, KlineEvent, MarketDisconnected, MarketErrorEvent
from contracts.meta import EventMeta
from contracts.ports import ComponentContext
from contracts.topics import CONTROL_STATE, MARKET_DISCONNECTED, MARKET_ERROR, MARKET_KLINE
from planes.clock import HistoricalClock
from planes.collector import collector_paused
from planes.config import Config, ReplayFormat
from planes.tasks import cancel_and_wait

log = structlog.get_logger("planes.market.replay")

EXCHANGE = "replay"
CHANNELS = frozenset({"kline"})
YIELD_EVERY = 32
"""Bars between two turns given to the event loop under the historical clock.

A turn costs about as much as building a bar, so giving one per bar would tax a backtest by a
third; synchronous handlers see every bar at its own time regardless, and the historical clock
yields by itself whenever a sleeper becomes due.
"""

TIME_COLUMNS = ("date", "datetime", "timestamp", "time")
PRICE_COLUMNS = ("open", "high", "low", "close", "volume")
_NUMBER_NAMES = (*PRICE_COLUMNS, "turnover")

Bar = tuple[int, int, Decimal, Decimal, Decimal, Decimal, Decimal, Decimal | None]
"""``(start_ts, end_ts, open, high, low, close, volume, turnover)``."""
_Row = tuple[int, Decimal, Decimal, Decimal, Decimal, Decimal, Decimal | None]
_Columns = tuple[
    Sequence[int],
    Sequence[Decimal],
    Sequence[Decimal],
    Sequence[Decimal],
    Sequence[Decimal],
    Sequence[Decimal],
    Sequence[Decimal | None],
]
"""The rows of a file column by column: starts, opens, highs, lows, closes, volumes, turnovers."""
_Numbers = tuple[
    tuple[Decimal, ...],
    tuple[Decimal, ...],
    tuple[Decimal, ...],
    tuple[Decimal, ...],
    tuple[Decimal, ...],
    tuple[Decimal | None, ...],
]
"""A file's opens, highs, lows, closes, volumes and turnovers, as the column readers read them."""
_BarColumns = tuple[
    tuple[int, ...],
    tuple[int, ...],
    tuple[Decimal, ...],
    tuple[Decimal, ...],
    tuple[Decimal, ...],
    tuple[Decimal, ...],
    tuple[Decimal, ...],
    tuple[Decimal | None, ...],
]
"""The columns of ``Bars``: the ``_Columns`` of a file with the bars' ends after the starts."""

_MINUTE = 60_000
_DAY = 1440 * _MINUTE
_WEEK = 7 * _DAY
_MONTH = "M"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)  # naive times in a file are UTC
_ONE_MS = timedelta(milliseconds=1)
_SECONDS_FROM, _MS_FROM, _MS_UNTIL = 10**9, 10**11, 10**14
_INTEGER = re.compile(r"\s*[+-]?\d+\s*")
_LABEL = re.compile(
    r"(?P<minutes>[1-9]\d*)|(?P<seconds>[1-9]\d*)s|(?P<millis>[1-9]\d*)ms|(?P<fixed>[DW])|M"
)


class ReplayError(ValueError):
    """An OHLCV file cannot be replayed; ``str()`` is ``<path>:<line>: <reason>``."""

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}" if line else f"{path}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


class Bars(Sequence[Bar]):
    """The bars of a file, read-only, in time order: a sequence of ``Bar`` tuples over columns.

    The file is kept as eight tuples, one per field (starts, ends, opens, ..., turnovers), not as
    a tuple per bar: a bar's tuple is built when it is indexed, and iterating zips the columns,
    so a loop that unpacks each bar (``for start, end, *_ in bars``) reuses one tuple for every
    bar. Equal to a ``Bars`` with equal columns and to the tuple of the same bars, and hashed as
    that tuple; a slice is a ``Bars``.
    """

    __slots__ = ("_columns",)

    def __init__(self, columns: _BarColumns) -> None:
        if len(set(map(len, columns))) != 1:
            msg = f"columns of different lengths: {[len(column) for column in columns]}"
            raise ValueError(msg)
        self._columns = columns

    def __len__(self) -> int:
        return len(self._columns[0])

    @overload
    def __getitem__(self, index: int) -> Bar: ...

    @overload
    def __getitem__(self, index: slice) -> Bars: ...

    def __getitem__(self, index: int | slice) -> Bar | Bars:
        s, e, o, h, low, c, v, t = self._columns
        if isinstance(index, slice):
            return Bars(
                (s[index], e[index], o[index], h[index], low[index], c[index], v[index], t[index])
            )
        return s[index], e[index], o[index], h[index], low[index], c[index], v[index], t[index]

    def __iter__(self) -> Iterator[Bar]:
        # zip reuses its result tuple when the one it gave last is no longer held.
        return cast("Iterator[Bar]", zip(*self._columns, strict=True))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Bars):
            return self._columns == other._columns
        if isinstance(other, tuple):
            return tuple(self) == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"<{len(self)} bars>"


@attrs.frozen
class ReplayData:
    """A validated file: its bars in time order, with symbol and interval."""

    path: str
    format: ReplayFormat
    symbol: str
    interval: str
    bars: Bars


def iso(ts_ms: int) -> str:
    """``ts_ms`` as an ISO-8601 UTC instant (``2024-01-01T00:00:00Z``)."""
    text = (_EPOCH + ts_ms * _ONE_MS).isoformat()
    return text.removesuffix("+00:00") + "Z"


def interval_label(gap_ms: int) -> str:
    """The Bybit-style label of a bar length: ``1``, ``60``, ``D``, ``W``; ``90s`` when odd."""
    if gap_ms == _DAY:
        return "D"
    if gap_ms == _WEEK:
        return "W"
    if gap_ms % _MINUTE == 0:
        return str(gap_ms // _MINUTE)
    if gap_ms % 1000 == 0:
        return f"{gap_ms // 1000}s"
    return f"{gap_ms}ms"


def interval_ms(label: str) -> int | None:
    """The length of an interval label in ms; ``None`` for ``M`` (months differ in length).

    Raises ``ValueError`` for a label that is none of ``<minutes>``, ``<seconds>s``, ``<ms>ms``,
    ``D``, ``W`` or ``M``.
    """
    match = _LABEL.fullmatch(label)
    if match is None:
        msg = f"{label!r} is not an interval like 1, 5, 60, D, W, M or 90s"
        raise ValueError(msg)
    if match["minutes"]:
        return int(match["minutes"]) * _MINUTE
    if match["seconds"]:
        return int(match["seconds"]) * 1000
    if match["millis"]:
        return int(match["millis"])
    if match["fixed"]:
        return _DAY if match["fixed"] == "D" else _WEEK
    return None


def _next_month(start_ms: int) -> int:
    day = _EPOCH + start_ms * _ONE_MS
    year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    return calendar.timegm((year, month, 1, 0, 0, 0)) * 1000


def _month_aligned(start_ms: int) -> bool:
    day = _EPOCH + start_ms * _ONE_MS
    return day.day == 1 and start_ms % _DAY == 0


# -- loading ------------------------------------------------------------------------------


def detect_format(path: Path) -> ReplayFormat:
    """``bybit_json`` for ``*.json``, ``csv`` for ``*.csv``, otherwise by the first character."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        return ReplayFormat.BYBIT_JSON
    if suffix == ".csv":
        return ReplayFormat.CSV
    with path.open("rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return ReplayFormat.BYBIT_JSON if head[:1] in (b"{", b"[") else ReplayFormat.CSV


def load_replay(
    path: str | Path,
    *,
    fmt: ReplayFormat = ReplayFormat.AUTO,
    symbol: str = "",
    default_symbol: str = "",
    interval: str = "",
) -> ReplayData:
    """Read and check a whole OHLCV file (see the module docstring); raise ``ReplayError``.

    ``symbol`` is the configured one (for JSON it must agree with the file's),
    ``default_symbol`` the fallback for a CSV, ``interval`` a label or empty to infer it.
    The cyclic garbage collector is paused while the file is parsed
    (``planes.collector.collector_paused``).
    """
    name = str(path)
    file = Path(path)
    if not name:
        raise ReplayError("market.replay.path", None, "is empty: name an OHLCV CSV or JSON file")
    if not file.is_file():
        raise ReplayError(name, None, "no such file")
    try:
        if fmt is ReplayFormat.AUTO:
            fmt = detect_format(file)
        with collector_paused():
            if fmt is ReplayFormat.CSV:
                columns, where = _read_csv(name, file)
                file_symbol = ""
            else:
                columns, where, file_symbol = _read_bybit_json(name, file)
    except (OSError, UnicodeDecodeError) as exc:
        raise ReplayError(name, None, f"cannot read the file: {exc}") from exc
    if file_symbol and symbol and file_symbol != symbol:
        reason = f"holds {file_symbol}, but market.replay.symbol is {symbol}"
        raise ReplayError(name, None, reason)
    resolved = file_symbol or symbol or default_symbol
    if not resolved:
        raise ReplayError(name, None, "no symbol: set market.replay.symbol")
    if not columns[0]:
        raise ReplayError(name, None, "holds no bars")
    label, bars = _bars(name, columns, where, interval)
    return ReplayData(name, fmt, resolved, label, bars)


class _Where(Protocol):
    """Where row ``i`` (in time order) came from: its line, and how a message names it."""

    def line(self, i: int) -> int | None:
        """The 1-based line of row ``i``, when known."""
        ...

    def name(self, i: int) -> str:
        """``line 12`` or ``result.list[3] (line 5)``."""
        ...


class _Lines:
    def __init__(self, lines: list[int]) -> None:
        self._lines = lines

    def line(self, i: int) -> int | None:
        return self._lines[i]

    def name(self, i: int) -> str:
        return f"line {self._lines[i]}"


class _Consecutive:
    """Rows on consecutive lines (no blank line between them), the first on line ``first``."""

    def __init__(self, first: int) -> None:
        self._first = first

    def line(self, i: int) -> int | None:
        return self._first + i

    def name(self, i: int) -> str:
        return f"line {self._first + i}"


class _Entries:
    """Entries of ``result.list``, read newest first: row ``i`` is entry ``count - 1 - i``."""

    def __init__(self, text: str, count: int) -> None:
        self._text = text
        self._count = count
        self._offsets: list[int] | None = None

    def entry_line(self, entry: int) -> int | None:
        # Only errors need lines, so the positions are found (once) when the first one asks.
        if self._offsets is None:
            self._offsets = _list_offsets(self._text) or []
        if entry >= len(self._offsets):
            return None
        return self._text.count("\n", 0, self._offsets[entry]) + 1

    def line(self, i: int) -> int | None:
        return self.entry_line(self._count - 1 - i)

    def name(self, i: int) -> str:
        entry = self._count - 1 - i
        line = self.entry_line(entry)
        return f"result.list[{entry}]" + (f" (line {line})" if line else "")


def _plausible(bar: _Row) -> bool:
    """The fast check of a bar (``_check_bar`` says what is wrong); NaN raises InvalidOperation.

    0 < low <= open, close <= high, with high finite, bounds every price; volume and turnover
    must be finite and not negative.
    """
    _, o, h, low, c, v, t = bar
    return (
        0 < low <= o <= h
        and low <= c <= h
        and v >= 0
        and h.is_finite()
        and v.is_finite()
        and (t is None or (t >= 0 and t.is_finite()))
    )


def _check_bar(row: _Row) -> str | None:  # noqa: PLR0911 - one return per rule, in order
    """Why a bar is impossible, or None."""
    _, o, h, low, c, v, t = row
    if not (
        o.is_finite()
        and h.is_finite()
        and low.is_finite()
        and c.is_finite()
        and v.is_finite()
        and (t is None or t.is_finite())
    ):
        named = zip(_NUMBER_NAMES, (o, h, low, c, v, t), strict=True)
        column, value = next((n, x) for n, x in named if x is not None and not x.is_finite())
        return f"bad number {value} in {column}"
    if h < low:
        return f"high < low ({h} < {low})"
    if h < o or h < c:
        return f"high < max(open, close) ({h} < {max(o, c)})"
    if low > o or low > c:
        return f"low > min(open, close) ({low} > {min(o, c)})"
    if low <= 0:
        return f"price not above zero (low {low})"
    if v < 0:
        return f"negative volume {v}"
    if t is not None and t < 0:
        return f"negative turnover {t}"
    return None


def _columns(path: str, line: int, header: list[str]) -> tuple[int, list[int], int | None]:
    names = [h.strip().lower() for h in header]
    wanted = (*PRICE_COLUMNS, "turnover")
    found: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in wanted or name in TIME_COLUMNS:
            if name in found:
                first = header[found[name]].strip()
                reason = f"column {first!r} appears twice (columns {found[name] + 1}, {index + 1})"
                raise ReplayError(path, line, reason)
            found[name] = index
    missing = [c.capitalize() for c in PRICE_COLUMNS if c not in found]
    if missing:
        noun = "column" if len(missing) == 1 else "columns"
        reason = f"missing {noun} {', '.join(missing)} (the header is {','.join(header)})"
        raise ReplayError(path, line, reason)
    named = [found[c] for c in TIME_COLUMNS if c in found]
    if named:
        time_column = min(named)
    elif names[0] == "":
        time_column = 0
    else:
        reason = (
            f"no time column: the first column is {header[0].strip()!r}; name it Date, "
            "Datetime, Timestamp or Time, or leave it unnamed (a pandas index)"
        )
        raise ReplayError(path, line, reason)
    return time_column, [found[c] for c in PRICE_COLUMNS], found.get("turnover")


def _iso_ms(text: str) -> int:
    """Unix ms of an ISO-8601 date or instant (naive: UTC)."""
    text = text.strip()
    try:
        # fromisoformat also takes the basic form, which would read 1704067200000 as 1704-07-08.
        if text[4:5] != "-":
            raise ValueError  # noqa: TRY301 - one message for every way to fail
        moment = datetime.fromisoformat(text)
    except ValueError:
        msg = "not an ISO-8601 date like 2024-01-01 00:00:00"
        raise ValueError(msg) from None
    return (moment - (_NAIVE_EPOCH if moment.tzinfo is None else _EPOCH)) // _ONE_MS


class _IsoCache:
    """``_iso_ms`` with the date and the rest of the stamp looked up apart, each parsed once.

    ``YYYY-MM-DD<rest>`` is the date's midnight plus what ``<rest>`` (separator, time of day,
    offset) adds to 1970-01-01, so a file of hourly bars parses 24 times of day and one date a
    day instead of every stamp. Anything else goes through ``_iso_ms`` as it is.
    """

    __slots__ = ("_days", "_rests")

    def __init__(self) -> None:
        self._days: dict[str, int] = {}
        self._rests: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        text = text.strip()
        day, rest = text[:10], text[10:]
        ms = self._days.get(day)
        if ms is None:
            if len(day) != 10 or not day[:4].isdigit():
                return _iso_ms(text)
            ms = self._days[day] = _iso_ms(day)
        offset = self._rests.get(rest)
        if offset is None:
            if rest and rest[0] not in " T":
                return _iso_ms(text)
            offset = self._rests[rest] = _iso_ms("1970-01-01" + rest)
        return ms + offset


def _epoch_unit(first: str) -> tuple[int, int, int, str]:
    """``(low, high, scale, unit)`` of integer timestamps like the first row's ``first``."""
    value = int(first)
    if _SECONDS_FROM <= value < _MS_FROM:
        return _SECONDS_FROM, _MS_FROM, 1000, "seconds"
    if _MS_FROM <= value < _MS_UNTIL:
        return _MS_FROM, _MS_UNTIL, 1, "milliseconds"
    msg = (
        "not an epoch timestamp (milliseconds from 10**11 up to 10**14, "
        "or seconds from 10**9 up to 10**11)"
    )
    raise ValueError(msg)


def _epoch_parser(first: str) -> Callable[[str], int]:
    """A parser of integer timestamps in the unit that the first row's value implies."""
    low, high, scale, unit = _epoch_unit(first)

    def parse(text: str) -> int:
        number = int(text) if _INTEGER.fullmatch(text) else -1
        if not low <= number < high:
            msg = f"not epoch {unit} like the first row's {first.strip()}"
            raise ValueError(msg)
        return number * scale

    return parse


class _SplitReader:
    """``csv.reader`` for text without quotes: ``str.split`` per line, physical line numbers."""

    def __init__(self, text: str) -> None:
        self._lines = text.split("\n")
        if self._lines and not self._lines[-1]:
            self._lines.pop()  # the file's last newline ends a line, it does not start one
        self.line_num = 0

    def __iter__(self) -> _SplitReader:
        return self

    def __next__(self) -> list[str]:
        if self.line_num >= len(self._lines):
            raise StopIteration
        line = self._lines[self.line_num]
        self.line_num += 1
        return (line[:-1] if line.endswith("\r") else line).split(",") if line else []


def _read_csv(path: str, file: Path) -> tuple[_Columns, _Where]:
    with file.open(newline="", encoding="utf-8-sig") as fh:
        text = fh.read()
    # Quotes need the csv module; plain numbers and dates (nearly every OHLCV file) do not.
    plain = '"' not in text and "\r" not in text.replace("\r\n", "")
    if plain:
        fast = _read_plain_columns(path, text)
        if fast is not None:
            return fast
    rows, where = _read_rows(path, text, plain=plain)
    return _transpose(rows), where


def _read_rows(path: str, text: str, *, plain: bool) -> tuple[list[_Row], _Where]:
    """Read and check ``text`` row by row: the reader that names the line and the problem."""
    rows: list[_Row] = []
    lines: list[int] = []
    reader: Any = _SplitReader(text) if plain else csv.reader(io.StringIO(text))
    header = next((row for row in reader if any(cell.strip() for cell in row)), None)
    if header is None:
        raise ReplayError(path, None, "the file is empty")
    tc, columns, it = _columns(path, reader.line_num, header)
    width = len(header)
    parse_time: Callable[[str], int] | None = None
    dec, pick = Decimal, operator.itemgetter(*columns)
    for row in reader:
        line = reader.line_num
        if len(row) != width:
            if not any(cell.strip() for cell in row):
                continue  # a blank line holds no bar
            raise ReplayError(path, line, f"expected {width} fields, got {len(row)}")
        stamp = row[tc]
        try:
            if parse_time is None:
                is_iso = _INTEGER.fullmatch(stamp) is None
                parse_time = _IsoCache() if is_iso else _epoch_parser(stamp)
            start = parse_time(stamp)
        except (ValueError, OverflowError) as exc:
            column = header[tc].strip() or "the index column"
            reason = f"bad date {stamp.strip()!r} in {column}: {exc}"
            raise ReplayError(path, line, reason) from None
        try:
            o, h, low, c, v = tuple(map(dec, pick(row)))
            bar = (start, o, h, low, c, v, None if it is None else dec(row[it]))
            good = _plausible(bar)
        except InvalidOperation:
            good = False
        if not good:
            raise ReplayError(path, line, _csv_problem(row, header, start, columns, it))
        rows.append(bar)
        lines.append(line)
    return rows, _Lines(lines)


class _Irregular(Exception):  # noqa: N818 - a signal to the caller, not an error to report
    """Something the column reader leaves to the row reader (which explains it if it is bad)."""


class _Parsed(dict[str, int]):
    """A dict that computes a missing key's value with ``parse`` once (``__missing__``)."""

    __slots__ = ("_parse",)

    def __init__(self, parse: Callable[[str], int]) -> None:
        super().__init__()
        self._parse = parse

    def __missing__(self, key: str) -> int:
        value = self[key] = self._parse(key)
        return value


def _day_ms(day: str) -> int:
    """What ``_IsoCache`` takes for the date part of a stamp; ``_Irregular`` where it would not."""
    if len(day) != 10 or not day[:4].isdigit():
        raise _Irregular
    return _iso_ms(day)


def _rest_ms(rest: str) -> int:
    """What ``_IsoCache`` takes for the rest of a stamp; ``_Irregular`` where it would not."""
    if rest and rest[0] not in " T":
        raise _Irregular
    return _iso_ms("1970-01-01" + rest)


_EXACT = decimal.Context(
    prec=decimal.MAX_PREC,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    traps=[decimal.InvalidOperation, decimal.Rounded, decimal.Overflow],
)
"""The column reader's numbers: ``create_decimal`` here is ``Decimal(text)`` or raises.

It parses a little faster than the constructor; a number it would round (traps ``Rounded``) or a
text only the constructor takes (spaces, underscores) raises, and the row reader reads the file.
"""

_DAY_PART = operator.itemgetter(slice(None, 10))
_REST_PART = operator.itemgetter(slice(10, None))


def _read_plain_columns(path: str, text: str) -> tuple[_Columns, _Where] | None:
    """Read an unquoted file column by column, or None to leave it to ``_read_rows``.

    The result equals ``_read_rows``'s: the same header rules, the same parsers applied to the
    same cells, the same checks, only run over whole columns (``map`` and ``zip`` loop in C).
    Anything that is not a clean file - a blank line, a short row, a bad number, date or bar,
    a date ``_IsoCache`` would parse whole - gives None, and the row reader then reads the file
    again and names the line and the problem.
    """
    lines = (text.replace("\r\n", "\n") if "\r" in text else text).split("\n")
    if lines and not lines[-1]:
        lines.pop()  # the file's last newline ends a line, it does not start one
    at = next((i for i, line in enumerate(lines) if line.replace(",", "").strip()), None)
    if at is None:
        return None
    header = lines[at].split(",")
    tc, picked, it = _columns(path, at + 1, header)
    body, width = lines[at + 1 :], len(header)
    # Every line with width - 1 commas (a blank line has none): the cells of all of them, in
    # one flat list, hold column k at k, k + width, ... (no list per row for the GC to track).
    if not body or set(map(str.count, body, itertools.repeat(","))) != {width - 1}:
        return None
    joined = ",".join(body)
    cells = joined.split(",")
    try:
        starts = _plain_starts(cells[tc::width])
        numbers = _number_columns(
            *(cells[k::width] for k in picked),
            turnovers=None if it is None else cells[it::width],
            finite="n" not in joined and "N" not in joined,
        )
    except (_Irregular, ValueError, ArithmeticError):  # InvalidOperation is an ArithmeticError
        return None
    if numbers is None:
        return None
    return (starts, *numbers), _Consecutive(at + 2)


def _number_columns(
    opens: Sequence[str],
    highs: Sequence[str],
    lows: Sequence[str],
    closes: Sequence[str],
    volumes: Sequence[str],
    *,
    turnovers: Sequence[str] | None,
    finite: bool,
) -> _Numbers | None:
    """The numbers of text columns, as the row readers read them; None if a bar is implausible.

    Each text goes through ``_EXACT`` (which raises ``ArithmeticError`` where ``Decimal()``
    might read it otherwise), then every bar must pass ``_plausible``, a column at a time.
    ``finite`` says that no text holds an n: every text of a number that is not finite (Inf,
    Infinity, NaN, sNaN, in any case) has one, so the finiteness passes can be left out.
    """
    dec = _EXACT.create_decimal
    h, low, c, v = (tuple(map(dec, column)) for column in (highs, lows, closes, volumes))
    chained = opens[1:] == closes[:-1]  # every bar opens at the close before it
    o = (dec(opens[0]), *c[:-1]) if chained else tuple(map(dec, opens))
    t = None if turnovers is None else tuple(map(dec, turnovers))
    le, is_finite = operator.le, Decimal.is_finite
    # _plausible, a column at a time: 0 < low <= open, close <= high; high, volume and
    # turnover finite; volume and turnover not negative. A NaN raises InvalidOperation.
    good = (
        min(low) > 0
        and all(map(le, low, o))
        and all(map(le, o, h))
        and all(map(le, low, c))
        and all(map(le, c, h))
        and min(v) >= 0
        and (finite or (all(map(is_finite, h)) and all(map(is_finite, v))))
        and (t is None or (min(t) >= 0 and (finite or all(map(is_finite, t)))))
    )
    if not good:
        return None
    return o, h, low, c, v, (None,) * len(h) if t is None else t


def _plain_starts(stamps: list[str]) -> tuple[int, ...]:
    """The start of every stamp, as ``_read_rows`` parses it; raises where it would not."""
    if _INTEGER.fullmatch(stamps[0]) is None:  # ISO dates: _IsoCache over the whole column
        stripped = list(map(str.strip, stamps))
        days = map(_Parsed(_day_ms).__getitem__, map(_DAY_PART, stripped))
        rests = map(_Parsed(_rest_ms).__getitem__, map(_REST_PART, stripped))
        return tuple(map(operator.add, days, rests))
    low, high, scale, _ = _epoch_unit(stamps[0])
    if not all(map(_INTEGER.fullmatch, stamps)):
        raise _Irregular
    numbers = tuple(map(int, stamps))
    if not (low <= min(numbers) and max(numbers) < high):
        raise _Irregular
    return numbers if scale == 1 else tuple(map(operator.mul, numbers, itertools.repeat(scale)))


def _csv_problem(
    row: list[str], header: list[str], start: int, columns: list[int], turnover: int | None
) -> str:
    """What is wrong with a row that failed the fast check."""
    for column in (*columns, turnover):
        if column is not None and not _is_number(row[column]):
            return f"bad number {row[column].strip()!r} in {header[column].strip()}"
    o, h, low, c, v = (Decimal(row[column]) for column in columns)
    t = None if turnover is None else Decimal(row[turnover])
    return _check_bar((start, o, h, low, c, v, t)) or "impossible bar"


def _number(value: Any) -> Decimal:
    kind = type(value)  # exact types: a JSON true is no number, though bool is an int
    if kind is str or kind is Decimal or kind is int:
        return Decimal(value)
    raise InvalidOperation


def _read_bybit_json(path: str, file: Path) -> tuple[_Columns, _Where, str]:
    text = file.read_text(encoding="utf-8-sig")
    try:
        document = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise ReplayError(
            path, exc.lineno, f"not valid JSON: {exc.msg} (column {exc.colno})"
        ) from None
    shape = 'a Bybit kline response like {"retCode": 0, "result": {"list": [...]}}'
    if not isinstance(document, dict):
        raise ReplayError(path, 1, f"not {shape}")
    code = document.get("retCode", 0)
    if code not in (0, "0"):
        reason = f"Bybit answered retCode {code}: {document.get('retMsg', '(no retMsg)')}"
        raise ReplayError(path, None, reason)
    result = document.get("result")
    entries = result.get("list") if isinstance(result, dict) else None
    if not isinstance(result, dict) or not isinstance(entries, list):
        raise ReplayError(path, None, f"no result.list: not {shape}")
    symbol = result.get("symbol") or ""
    if not isinstance(symbol, str):
        raise ReplayError(path, None, f"result.symbol is {symbol!r}, not a symbol")
    where = _Entries(text, len(entries))
    columns = _json_columns(entries)
    if columns is None:
        columns = _transpose(_json_rows(path, entries, where))
    return columns, where, symbol


def _json_columns(entries: list[Any]) -> _Columns | None:
    """Read a clean ``result.list`` column by column, or None to leave it to ``_json_rows``.

    The usual shape only: every entry a list of seven strings (six without the turnover), as
    Bybit writes them, every start plain digits. The result equals ``_json_rows``'s: the same
    parsers and checks, run over whole columns. Anything else, and every error, gives None,
    and the row loop then names the entry and the problem.
    """
    if not entries or set(map(type, entries)) != {list} or set(map(len, entries)) not in ({7}, {6}):
        return None
    columns = list(zip(*reversed(entries), strict=True))  # in time order, a tuple per field
    try:
        texts = ["".join(column) for column in columns]  # TypeError: a cell that is no string
        digits = texts[0].isascii() and texts[0].isdigit()  # _json_ms over the column
        starts = tuple(map(int, columns[0])) if digits else ()  # ValueError: an empty string
        if not starts or min(starts) < _MS_FROM or max(starts) >= _MS_UNTIL:
            return None
        numbers = _number_columns(
            *columns[1:6],
            turnovers=columns[6] if len(columns) == 7 else None,
            finite=not any("n" in text or "N" in text for text in texts[1:]),
        )
    except (TypeError, ValueError, ArithmeticError):
        return None
    return None if numbers is None else (starts, *numbers)


def _json_rows(path: str, entries: list[Any], where: _Entries) -> list[_Row]:
    """Read and check ``result.list`` entry by entry: the reader that names the entry."""
    rows: list[_Row] = []
    for entry, item in zip(range(len(entries) - 1, -1, -1), reversed(entries), strict=True):
        if not isinstance(item, list) or len(item) not in (6, 7):
            reason = "expected [start, open, high, low, close, volume, turnover]"
            raise ReplayError(path, where.entry_line(entry), f"result.list[{entry}]: {reason}")
        start = _json_ms(item[0])
        if start is None:
            reason = f"result.list[{entry}]: bad date {item[0]!r}: not epoch milliseconds"
            raise ReplayError(path, where.entry_line(entry), reason)
        try:
            o, h, low, c, v = tuple(map(_number, item[1:6]))
            bar = (start, o, h, low, c, v, _number(item[6]) if len(item) == 7 else None)
            good = _plausible(bar)
        except InvalidOperation:
            good = False
        if not good:
            problem = _json_problem(item, start)
            raise ReplayError(path, where.entry_line(entry), f"result.list[{entry}]: {problem}")
        rows.append(bar)
    return rows


def _json_problem(item: list[Any], start: int) -> str:
    """What is wrong with an entry that failed the fast check."""
    for name, value in zip(_NUMBER_NAMES, item[1:], strict=False):
        if not _is_number(value):
            return f"bad number {value!r} in {name}"
    o, h, low, c, v = tuple(map(_number, item[1:6]))
    t = _number(item[6]) if len(item) == 7 else None
    return _check_bar((start, o, h, low, c, v, t)) or "impossible bar"


def _json_ms(value: Any) -> int | None:
    # A millisecond stamp has at most 16 digits; a longer text is no stamp (and int() of more
    # than 4,300 digits raises ValueError instead of giving one).
    if type(value) is str and value.isascii() and value.isdigit() and len(value) <= 20:
        value = int(value)
    if type(value) is int and _MS_FROM <= value < _MS_UNTIL:
        return value
    return None


def _is_number(value: Any) -> bool:
    try:
        _number(value)
    except InvalidOperation:
        return False
    return True


def _list_offsets(text: str) -> list[int] | None:
    """Character offsets of the entries of ``result.list`` in a valid JSON ``text``."""
    decoder = json.JSONDecoder()
    space = re.compile(r"\s*")

    def skip(i: int) -> int:
        match = space.match(text, i)
        return i if match is None else match.end()

    def value_of(i: int, key: str) -> int | None:
        """The offset of ``key``'s value in the object at ``i`` (its last occurrence)."""
        i = skip(i)
        if text[i : i + 1] != "{":
            return None
        found, i = None, skip(i + 1)
        while text[i : i + 1] == '"':
            name, i = decoder.raw_decode(text, i)
            i = skip(skip(i) + 1)  # past the colon
            if name == key:
                found = i
            _, i = decoder.raw_decode(text, i)
            i = skip(i)
            if text[i : i + 1] == ",":
                i = skip(i + 1)
        return found

    try:
        result = value_of(0, "result")
        start = None if result is None else value_of(result, "list")
        if start is None or text[start] != "[":
            return None
        offsets, i = [], skip(start + 1)
        while text[i : i + 1] not in ("]", ""):
            offsets.append(i)
            _, i = decoder.raw_decode(text, i)
            i = skip(i)
            if text[i : i + 1] == ",":
                i = skip(i + 1)
    except (ValueError, IndexError):
        return None
    return offsets


def _sequence_error(
    path: str, starts: Sequence[int], where: _Where, i: int, label: str
) -> ReplayError:
    """The error for row ``i``, which does not start after the end of the bar before it."""
    start, before = starts[i], starts[i - 1]
    if start == before:
        reason = f"duplicate timestamp {iso(start)} (also on {where.name(i - 1)})"
    elif start < before:
        reason = f"out-of-order timestamp {iso(start)}: before {iso(before)} on {where.name(i - 1)}"
    else:
        return ReplayError(
            path,
            where.line(i),
            f"bar at {iso(start)} overlaps the one on {where.name(i - 1)}: "
            f"it starts {start - before} ms after it, but the interval is {label}",
        )
    if isinstance(where, _Entries):
        reason = f"{where.name(i)}: {reason} (Bybit lists bars newest first)"
    return ReplayError(path, where.line(i), reason)


def _bars(path: str, columns: _Columns, where: _Where, label: str) -> tuple[str, Bars]:
    """Give each row its end; check that each bar starts after the one before has ended."""
    starts = columns[0]
    gaps = list(map(operator.sub, itertools.islice(starts, 1, None), starts))
    shortest = min(gaps, default=0)
    if gaps and shortest <= 0:  # out of order, whatever the interval
        raise _sequence_error(
            path, starts, where, next(i for i, g in enumerate(gaps, 1) if g <= 0), ""
        )
    if label:
        try:
            length = interval_ms(label)
        except ValueError as exc:
            raise ReplayError(path, None, f"market.replay.interval: {exc}") from None
    elif not gaps:
        raise ReplayError(path, None, "one bar: set market.replay.interval, it cannot be inferred")
    else:
        label, length = _infer_interval(starts, gaps, shortest)
    if length is None:  # months: each bar ends where its calendar month does
        ends = tuple(_next_month(start) - 1 for start in starts)
        late = next((i for i in range(1, len(starts)) if starts[i] <= ends[i - 1]), None)
        if late is not None:
            raise _sequence_error(path, starts, where, late, label)
    else:
        if gaps and shortest < length:
            late = next(i for i, gap in enumerate(gaps, 1) if gap < length)
            raise _sequence_error(path, starts, where, late, label)
        ends = tuple(map(operator.add, starts, itertools.repeat(length - 1, len(starts))))
    # Tuples, not lists: holding only numbers, the collector stops tracking them (a list of
    # 200k slots would be walked by every full collection of the run).
    _, o, h, low, c, v, t = columns
    return label, Bars(
        (tuple(starts), ends, tuple(o), tuple(h), tuple(low), tuple(c), tuple(v), tuple(t))
    )


def _transpose(rows: list[_Row]) -> _Columns:
    """``rows`` (start, open, high, low, close, volume, turnover) as columns."""
    if not rows:
        return (), (), (), (), (), (), ()
    starts, opens, highs, lows, closes, volumes, turnovers = zip(*rows, strict=True)
    return starts, opens, highs, lows, closes, volumes, turnovers


def _infer_interval(
    starts: Sequence[int], gaps: list[int], shortest: int
) -> tuple[str, int | None]:
    """The label and length of the most common gap (``shortest`` is the least of ``gaps``)."""
    if all(28 * _DAY <= gap <= 31 * _DAY for gap in gaps) and all(map(_month_aligned, starts)):
        return _MONTH, None
    if max(gaps) == shortest:  # one gap throughout, as in nearly every file: nothing to count
        return interval_label(shortest), shortest
    counts = Counter(gaps)
    top = max(counts.values())
    gap = min(g for g, n in counts.items() if n == top)  # ties: the shortest, so none overlap
    return interval_label(gap), gap


# -- the source ---------------------------------------------------------------------------


class ReplaySource:
    """The ``replay`` market source (see the module docstring)."""

    name = EXCHANGE

    def __init__(self, ctx: ComponentContext) -> None:
        config = ctx.config
        if not isinstance(config, Config):
            msg = "the replay source needs planes.config.Config"
            raise TypeError(msg)
        self._bus = ctx.bus
        self._clock = ctx.clock
        self._market = config.market
        self._config = config.market.replay
        self.endpoint = f"replay:{self._config.path}"
        self.data: ReplayData | None = None
        self.position = 0
        """How many bars have been published."""
        self._asked: list[str] = []
        self._subscribed = asyncio.Event()
        self._running = asyncio.Event()
        self._running.set()  # until a control plane says it is booting
        self._task: asyncio.Task[None] | None = None
        # Subscribed now, before anything starts: the Orchestrator says STARTING before it asks
        # for market:connect, and bars played during the boot would reach no running bot.
        ctx.bus.subscribe(CONTROL_STATE, self._on_state)

    def _on_state(self, state: ControlState) -> None:
        if state.lifecycle in (Lifecycle.RUNNING, Lifecycle.PAUSED):
            self._running.set()
        else:
            self._running.clear()

    async def connect(self) -> None:
        """Load and check the file (first time only), then play it from ``position``.

        Idempotent; raises ``ReplayError`` for a file that cannot be replayed.
        """
        if self._task is not None and not self._task.done():
            return
        if self.data is None:
            self.data = self._load()
            self._report_unknown(self._asked)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="replay-source")

    def _load(self) -> ReplayData:
        config, clock = self._config, self._clock
        began = time.perf_counter()
        data = load_replay(
            config.path,
            fmt=config.format,
            symbol=config.symbol,
            default_symbol=self._market.symbols[0],
            interval=config.interval,
        )
        first_end = data.bars[0][1]
        if not clock.is_realtime and first_end < clock.now_ms():
            reason = (
                f"the data starts at {iso(data.bars[0][0])}, before the historical clock "
                f"({iso(clock.now_ms())}, runtime.start); "
                f"set runtime.start={iso(data.bars[0][0])} or earlier"
            )
            raise ReplayError(data.path, None, reason)
        if config.speed and not clock.is_realtime:
            log.warning("replay.speed_ignored", speed=config.speed, clock="historical")
        log.info(
            "replay.loaded",
            path=data.path,
            format=data.format.value,
            symbol=data.symbol,
            interval=data.interval,
            bars=len(data.bars),
            first=iso(data.bars[0][0]),
            last=iso(data.bars[-1][0]),
            load_s=round(time.perf_counter() - began, 3),
        )
        return data

    async def disconnect(self) -> None:
        """Stop playback and wait for its task to end (idempotent); ``connect()`` resumes."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def subscribe(self, symbols: Sequence[str], channels: Sequence[str]) -> None:
        """Start playback; report channels other than ``kline`` and symbols not in the file."""
        bus = self._bus
        for channel in dict.fromkeys(channels or ("kline",)):
            if channel not in CHANNELS:
                message = f"the replay source streams {sorted(CHANNELS)}, not {channel!r}"
                bus.publish(
                    MARKET_ERROR,
                    MarketErrorEvent(
                        bus.meta(), self.name, "unsupported_channel", message, topic=channel
                    ),
                )
        if self.data is None:
            self._asked.extend(symbols)  # the symbol of a JSON file is known once it is read
        else:
            self._report_unknown(symbols)
        self._subscribed.set()

    def _report_unknown(self, symbols: Sequence[str]) -> None:
        data, bus = self.data, self._bus
        assert data is not None  # noqa: S101 - called once the file is loaded
        for symbol in dict.fromkeys(symbols):
            if symbol != data.symbol:
                message = f"no data for {symbol}: {data.path} holds {data.symbol} only"
                log.warning("replay.unknown_symbol", symbol=symbol, serves=data.symbol)
                bus.publish(
                    MARKET_ERROR,
                    MarketErrorEvent(
                        bus.meta(), self.name, "unknown_symbol", message, topic=symbol
                    ),
                )
        self._asked.clear()

    async def _run(self) -> None:
        await self._subscribed.wait()
        await self._running.wait()
        data, clock, bus = self.data, self._clock, self._bus
        assert data is not None  # noqa: S101 - connect() loaded it
        if self._config.speed and clock.is_realtime:
            await self._play_scaled(data, self._config.speed)
        else:
            await self._play(data)
        log.info("replay.end_of_data", path=data.path, bars=self.position)
        bus.publish(
            MARKET_DISCONNECTED,
            MarketDisconnected(bus.meta(), self.name, END_OF_DATA, will_reconnect=False),
        )

    async def _play(self, data: ReplayData) -> None:
        """Pace each bar to its end with the clock (full speed under the historical clock)."""
        bus, clock = self._bus, self._clock
        publish, meta, pace, sleep = bus.publish, bus.meta, clock.pace, asyncio.sleep
        # The historical clock's advance_to is pace without a coroutine per bar; once it has
        # advanced to the bar's end, that end is the time bus.meta() would stamp.
        advance = clock.advance_to if isinstance(clock, HistoricalClock) else None
        source, kline = bus.source, KlineEvent
        symbol, interval = data.symbol, data.interval
        done = self.position
        try:
            for start, end, o, h, low, c, v, t in itertools.islice(data.bars, done, None):
                if advance is None:
                    await pace(end)
                    stamp = meta()
                else:
                    if advance(end):  # a sleeper became due: let it (and what it starts) run
                        await sleep(0)
                        await sleep(0)
                    stamp = EventMeta(source, end)
                publish(
                    MARKET_KLINE,
                    kline(stamp, EXCHANGE, symbol, interval, start, end, o, h, low, c, v, True, t),
                )
                done += 1
                if not done % YIELD_EVERY:
                    await sleep(0)
        finally:
            self.position = done

    async def _play_scaled(self, data: ReplayData, speed: float) -> None:
        """Space bars by their data-time distance / ``speed``, anchored at the first one."""
        bus, clock = self._bus, self._clock
        symbol, interval = data.symbol, data.interval
        done = self.position
        if done >= len(data.bars):
            return
        anchor_wall, anchor_data = clock.now_ms(), data.bars[done][1]
        try:
            for start, end, o, h, low, c, v, t in itertools.islice(data.bars, done, None):
                await clock.sleep_until(anchor_wall + round((end - anchor_data) / speed))
                bus.publish(
                    MARKET_KLINE,
                    KlineEvent(
                        bus.meta(), EXCHANGE, symbol, interval, start, end, o, h, low, c, v, True, t
                    ),
                )
                done += 1
        finally:
            self.position = done
