"""The replay source: every format read exactly, every malformed row named, bars played once."""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.enums import Lifecycle
from contracts.market import END_OF_DATA, KlineEvent, MarketDisconnected, MarketErrorEvent
from contracts.meta import EventMeta, Payload, Source
from contracts.rights import rights_for
from contracts.topics import MARKET_DISCONNECTED, MARKET_KLINE, Topic
from planes.bus import EventBus
from planes.clock import HistoricalClock, RealtimeClock
from planes.config import Config, ReplayFormat, load_config
from planes.market.replay import (
    YIELD_EVERY,
    Bars,
    ReplayError,
    ReplaySource,
    _Entries,
    _iso_ms,
    _IsoCache,
    _json_columns,
    _json_rows,
    _read_plain_columns,
    _read_rows,
    _transpose,
    interval_label,
    interval_ms,
    iso,
    load_replay,
)
from planes.runtime import PlaneContext, Runtime, RuntimeStartError
from tests.planes.market import ohlcv_fixtures as fx

DATA = fx.DATA
SMALL = (
    "btcusdt_1h_pandas_index.csv",
    "btcusdt_1h_pandas_date.csv",
    "btcusdt_1h_epoch_ms.csv",
    "btcusdt_1h_bybit.json",
)
BASE = (
    "runtime.mode=backtest",
    "observability.status_interval_s=0",
    "plugins.entry_points=false",
    "market.source=replay",
    'market.symbols=["BTCUSDT"]',
)
HOUR = 3_600_000
Events = list[tuple[str, Payload]]


def config(*sets: str) -> Config:
    return load_config(None, [*BASE, *sets], environ={}, use_default_file=False)


async def run(*sets: str, within_s: float = 10) -> tuple[Runtime, Events]:
    """Run a runtime until it stops by itself; return it with every event it published."""
    runtime = Runtime(config(*sets))
    runtime.assemble()
    events: Events = []

    def tap(topic: Topic[Any], payload: Payload) -> None:
        events.append((topic.name, payload))

    runtime.bus.subscribe_all(tap)
    await asyncio.wait_for(runtime.run(), within_s)
    return runtime, events


def klines(events: Events) -> list[KlineEvent]:
    return [p for _, p in events if isinstance(p, KlineEvent)]


def expected(bars: list[fx.Bar], *, turnover: bool = False, label: str = "60") -> list[KlineEvent]:
    """The events a historical-clock replay of ``bars`` must publish."""
    return [
        KlineEvent(
            EventMeta(Source.MARKET, b.start + interval(label) - 1),
            exchange="replay",
            symbol="BTCUSDT",
            interval=label,
            start_ts=b.start,
            end_ts=b.start + interval(label) - 1,
            open=b.open,
            high=b.high,
            low=b.low,
            close=b.close,
            volume=b.volume,
            closed=True,
            turnover=b.turnover if turnover else None,
        )
        for b in bars
    ]


def interval(label: str) -> int:
    """The length of a fixed interval (not ``M``)."""
    length = interval_ms(label)
    assert length is not None
    return length


def write(tmp_path: Path, text: str, name: str = "bars.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- the fixtures --------------------------------------------------------------------------


def test_the_fixtures_are_what_the_generator_renders() -> None:
    for name, text in fx.rendered().items():
        assert (DATA / name).read_text(encoding="utf-8") == text, f"regenerate {name}"
    assert len((DATA / "btcusdt_1h_500.csv").read_text().splitlines()) == 501


@pytest.mark.parametrize("name", SMALL)
def test_each_format_is_read_exactly(name: str) -> None:
    data = load_replay(DATA / name, default_symbol="BTCUSDT")
    assert data.format is (ReplayFormat.BYBIT_JSON if name.endswith(".json") else ReplayFormat.CSV)
    assert (data.symbol, data.interval, len(data.bars)) == ("BTCUSDT", "60", 24)
    json_file = name.endswith(".json")
    # The first and last rows, copied from the files by hand.
    assert data.bars[0] == (
        1_704_067_200_000,
        1_704_070_799_999,
        Decimal("42283.58"),
        Decimal("42791.26"),
        Decimal("42273.37"),
        Decimal("42559.17"),
        Decimal("238.41297"),
        Decimal("10127030.7727") if json_file else None,
    )
    assert data.bars[-1][:7] == (
        1_704_150_000_000,
        1_704_153_599_999,
        Decimal("43180.83"),
        Decimal("43903.74"),
        Decimal("42999.18"),
        Decimal("43686.68"),
        Decimal("361.89594"),
    )
    # Every row, against the walk the files were rendered from.
    assert [bar[:7] for bar in data.bars] == [
        (b.start, b.start + HOUR - 1, b.open, b.high, b.low, b.close, b.volume) for b in fx.small()
    ]
    if json_file:
        assert [bar[7] for bar in data.bars] == [b.turnover for b in fx.small()]
    for bar in data.bars:
        assert all(isinstance(x, Decimal) for x in bar[2:7])


PANDAS_VARIANTS = {
    "tz offsets are converted to UTC": (
        "Date,Open,High,Low,Close,Volume\n"
        "2024-01-01 01:00:00+01:00,1.5,2,1.0,1.8,10.0\n"
        "2024-01-01 02:00:00+01:00,1.8,2.5,1.5,2.0,20.0\n",
        "60",
    ),
    "date-only index (daily bars)": (
        ",Open,High,Low,Close,Volume\n2024-01-01,1.5,2,1.0,1.8,10.0\n2024-01-02,1.8,2.5,1.5,2.0,20\n",
        "D",
    ),
    "reset_index(): a RangeIndex first, then a timestamp column": (
        ",timestamp,Open,High,Low,Close,Volume\n"
        "0,2024-01-01 00:00:00,1.5,2,1.0,1.8,10.0\n"
        "1,2024-01-01 01:00:00,1.8,2.5,1.5,2.0,20.0\n",
        "60",
    ),
    "epoch seconds": (
        "timestamp,Open,High,Low,Close,Volume\n1704067200,1.5,2,1.0,1.8,10.0\n"
        "1704070800,1.8,2.5,1.5,2.0,20.0\n",
        "60",
    ),
    "upper-case names in another order, extra columns, a BOM, CRLF, trailing blank lines": (
        "\ufeffTIME,VOLUME,CLOSE,LOW,HIGH,OPEN,TRADES\r\n"
        "2024-01-01T00:00:00Z,10.0,1.8,1.0,2,1.5,7\r\n"
        "2024-01-01T01:00:00Z,20.0,2.0,1.5,2.5,1.8,9\r\n\r\n\r\n",
        "60",
    ),
}


@pytest.mark.parametrize("name", list(PANDAS_VARIANTS))
def test_csv_variants_pandas_and_exports_write(tmp_path: Path, name: str) -> None:
    text, label = PANDAS_VARIANTS[name]
    data = load_replay(write(tmp_path, text), symbol="ETHUSDT")
    assert data.symbol == "ETHUSDT"
    assert data.interval == label
    length = interval(label)
    assert data.bars == (
        (
            1_704_067_200_000,
            1_704_067_200_000 + length - 1,
            *map(Decimal, ["1.5", "2", "1.0", "1.8", "10"]),
            None,
        ),
        (
            1_704_067_200_000 + length,
            1_704_067_200_000 + 2 * length - 1,
            *map(Decimal, ["1.8", "2.5", "1.5", "2.0", "20"]),
            None,
        ),
    )


def test_a_turnover_column_is_read(tmp_path: Path) -> None:
    text = "timestamp,open,high,low,close,volume,turnover\n1704067200000,1,2,1,2,3,4.5\n"
    data = load_replay(write(tmp_path, text), symbol="BTCUSDT", interval="1")
    values = map(Decimal, ["1", "2", "1", "2", "3", "4.5"])
    assert data.bars == ((1_704_067_200_000, 1_704_067_259_999, *values),)
    bad = write(tmp_path, text.replace("4.5", "Infinity"), "bad.csv")
    with pytest.raises(ReplayError, match=r"bad\.csv:2: bad number Infinity in turnover"):
        load_replay(bad, symbol="BTCUSDT", interval="1")


def test_the_format_is_sniffed_when_the_extension_says_nothing(tmp_path: Path) -> None:
    json_text = (DATA / "btcusdt_1h_bybit.json").read_text()
    csv_text = (DATA / "btcusdt_1h_epoch_ms.csv").read_text()
    as_json = load_replay(write(tmp_path, json_text, "bars.txt"))
    as_csv = load_replay(write(tmp_path, csv_text, "bars.dat"), symbol="BTCUSDT")
    assert as_json.format is ReplayFormat.BYBIT_JSON
    assert as_csv.format is ReplayFormat.CSV
    assert [b[:7] for b in as_json.bars] == [b[:7] for b in as_csv.bars]


def test_the_bars_are_a_read_only_sequence_of_bar_tuples() -> None:
    data = load_replay(DATA / "btcusdt_1h_bybit.json")
    bars = data.bars
    listed = list(bars)  # held at once: one tuple each, not one reused
    assert len({id(bar) for bar in listed}) == len(listed) == len(bars) == 24
    assert isinstance(bars, Sequence)
    assert repr(bars) == "<24 bars>"
    assert [bars[i] for i in range(-24, 24)] == listed + listed
    with pytest.raises(IndexError):
        bars[24]
    assert isinstance(bars[3:7], Bars)
    assert bars[3:7] == tuple(listed[3:7])
    assert bars[::-1] == tuple(reversed(listed))
    assert list(reversed(bars)) == listed[::-1]
    assert listed[5] in bars
    assert bars.index(listed[5]) == 5
    # Equal to the tuple of its bars either way round, hashed alike, and like a tuple not
    # equal to a list.
    assert bars == tuple(listed)
    assert tuple(listed) == bars
    assert bars != listed
    assert hash(bars) == hash(tuple(listed))
    again = load_replay(DATA / "btcusdt_1h_bybit.json")
    assert again == data
    assert hash(again) == hash(data)
    with pytest.raises(ValueError, match="different lengths"):
        Bars(((1,), (1,), (), (), (), (), (), ()))


def test_the_bars_are_left_alone_by_the_garbage_collector() -> None:
    data = load_replay(DATA / "btcusdt_1h_500.csv", symbol="BTCUSDT")
    gc.collect()
    # Tuples of numbers only: a collection stops tracking them, so the full collections of a
    # long backtest do not walk every bar (a list would be walked every time).
    assert not any(map(gc.is_tracked, data.bars._columns))


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_paused_while_a_file_is_parsed_then_left_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, enabled: bool
) -> None:
    during: list[bool] = []
    path_open = Path.open

    # The readers open the file to read text (format detection reads bytes, before the pause).
    # Spied on at Path.open: replay may be compiled (mypyc), and then its own functions cannot be.
    def spy(self: Path, *args: Any, **kwargs: Any) -> Any:
        mode = args[0] if args else kwargs.get("mode", "r")
        if "r" in mode and "b" not in mode:
            during.append(gc.isenabled())
        return path_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", spy)
    bad = write(tmp_path, GOOD_CSV.replace(",110,90,", ",110,x,"))
    if not enabled:
        gc.disable()
    try:
        load_replay(DATA / "btcusdt_1h_pandas_index.csv", symbol="BTCUSDT")
        load_replay(DATA / "btcusdt_1h_bybit.json")
        with pytest.raises(ReplayError, match="bad number"):
            load_replay(bad, symbol="BTCUSDT")
        after = gc.isenabled()
    finally:
        gc.enable()
    assert during == [False, False, False]
    assert after is enabled


# -- intervals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gap_ms", "label"),
    [
        (60_000, "1"),
        (300_000, "5"),
        (HOUR, "60"),
        (4 * HOUR, "240"),
        (24 * HOUR, "D"),
        (7 * 24 * HOUR, "W"),
        (120_000, "2"),
        (90_000, "90s"),
        (1_500, "1500ms"),
    ],
)
def test_interval_labels(gap_ms: int, label: str) -> None:
    assert interval_label(gap_ms) == label
    assert interval_ms(label) == gap_ms


def test_bad_interval_labels_are_refused(tmp_path: Path) -> None:
    for label in ("0", "1h", "d", "5m", "-1", ""):
        if label:
            with pytest.raises(ValueError, match="is not an interval"):
                interval_ms(label)
    path = write(tmp_path, (DATA / "btcusdt_1h_epoch_ms.csv").read_text())
    with pytest.raises(ReplayError, match=r"market.replay.interval: '1h' is not an interval"):
        load_replay(path, symbol="BTCUSDT", interval="1h")


def test_the_most_common_gap_is_the_interval_and_holes_are_allowed(tmp_path: Path) -> None:
    starts = [0, 1, 2, 5, 6, 7, 9]  # minutes: gaps 1,1,3,1,1,2
    rows = "".join(f"{1_704_067_200_000 + m * 60_000},1,1,1,1,1\n" for m in starts)
    path = write(tmp_path, "timestamp,open,high,low,close,volume\n" + rows)
    data = load_replay(path, symbol="BTCUSDT")
    assert data.interval == "1"
    assert [b[1] - b[0] for b in data.bars] == [59_999] * len(starts)


def test_monthly_bars_end_at_the_end_of_their_month(tmp_path: Path) -> None:
    months = ["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01"]
    text = "Date,open,high,low,close,volume\n" + "".join(f"{m},1,1,1,1,1\n" for m in months)
    data = load_replay(write(tmp_path, text), symbol="BTCUSDT")
    assert data.interval == "M"
    assert [iso(b[1] + 1) for b in data.bars] == [
        "2024-02-01T00:00:00Z",
        "2024-03-01T00:00:00Z",
        "2024-04-01T00:00:00Z",
        "2024-05-01T00:00:00Z",
    ]


# -- malformed files -----------------------------------------------------------------------

GOOD_CSV = (
    "Date,Open,High,Low,Close,Volume\n"  # line 1
    "2024-01-01 00:00:00,100,110,90,105,5\n"  # line 2
    "2024-01-01 01:00:00,105,115,100,110,6\n"  # line 3
    "2024-01-01 02:00:00,110,120,105,115,7\n"  # line 4
    "2024-01-01 03:00:00,115,125,110,120,8\n"  # line 5
)


def _replace_line(number: int, text: str) -> Callable[[str], str]:
    def edit(csv_text: str) -> str:
        lines = csv_text.splitlines()
        lines[number - 1] = text
        return "\n".join(lines) + "\n"

    return edit


MALFORMED_CSV: dict[str, tuple[Callable[[str], str], int | None, str]] = {
    "bad number": (
        _replace_line(3, "2024-01-01 01:00:00,105,11x5,100,110,6"),
        3,
        "bad number '11x5' in High",
    ),
    "empty number": (
        _replace_line(4, "2024-01-01 02:00:00,110,120,,115,7"),
        4,
        "bad number '' in Low",
    ),
    "NaN": (_replace_line(2, "2024-01-01 00:00:00,100,110,90,NaN,5"), 2, "bad number NaN in close"),
    "Infinity": (
        _replace_line(3, "2024-01-01 01:00:00,105,Infinity,100,110,6"),
        3,
        "bad number Infinity in high",
    ),
    "infinite volume": (
        _replace_line(4, "2024-01-01 02:00:00,110,120,105,115,inf"),
        4,
        "bad number Infinity in volume",
    ),
    "bad date": (
        _replace_line(3, "2024-13-01 01:00:00,105,115,100,110,6"),
        3,
        "bad date '2024-13-01 01:00:00' in Date",
    ),
    "high < low": (
        _replace_line(4, "2024-01-01 02:00:00,110,104,105,104,7"),
        4,
        "high < low (104 < 105)",
    ),
    "high < max(open, close)": (
        _replace_line(2, "2024-01-01 00:00:00,100,104,90,105,5"),
        2,
        "high < max(open, close) (104 < 105)",
    ),
    "low > min(open, close)": (
        _replace_line(5, "2024-01-01 03:00:00,115,125,116,120,8"),
        5,
        "low > min(open, close) (116 > 115)",
    ),
    "zero price": (
        _replace_line(5, "2024-01-01 03:00:00,1,2,0,1,8"),
        5,
        "price not above zero (low 0)",
    ),
    "negative volume": (
        _replace_line(3, "2024-01-01 01:00:00,105,115,100,110,-6"),
        3,
        "negative volume -6",
    ),
    "duplicate timestamp": (
        _replace_line(4, "2024-01-01 01:00:00,110,120,105,115,7"),
        4,
        "duplicate timestamp 2024-01-01T01:00:00Z (also on line 3)",
    ),
    "out-of-order timestamp": (
        _replace_line(4, "2024-01-01 00:30:00,110,120,105,115,7"),
        4,
        "out-of-order timestamp 2024-01-01T00:30:00Z: before 2024-01-01T01:00:00Z on line 3",
    ),
    "a missing field": (
        _replace_line(3, "2024-01-01 01:00:00,105,115,100,110"),
        3,
        "expected 6 fields, got 5",
    ),
    "a missing column": (
        _replace_line(1, "Date,Open,High,Low,Close,Vol"),
        1,
        "missing column Volume",
    ),
    "a column twice": (
        _replace_line(1, "Date,Open,High,Low,Close,close"),
        1,
        "column 'Close' appears twice",
    ),
    "no time column": (
        _replace_line(1, "When,Open,High,Low,Close,Volume"),
        1,
        "no time column: the first column is 'When'",
    ),
    "epoch after ISO": (
        _replace_line(3, "1704070800000,105,115,100,110,6"),
        3,
        "bad date '1704070800000' in Date: not an ISO-8601",
    ),
    "empty file": (lambda _: "\n\n", None, "the file is empty"),
    "no rows": (lambda text: text.splitlines()[0] + "\n", None, "holds no bars"),
}


@pytest.mark.parametrize("case", list(MALFORMED_CSV))
def test_a_malformed_csv_names_file_line_and_reason(tmp_path: Path, case: str) -> None:
    edit, line, reason = MALFORMED_CSV[case]
    path = write(tmp_path, edit(GOOD_CSV))
    with pytest.raises(ReplayError) as info:
        load_replay(path, symbol="BTCUSDT")
    error = info.value
    assert (error.path, error.line) == (str(path), line)
    assert reason in error.reason
    where = f"{path}:{line}: " if line else f"{path}: "
    assert str(error).startswith(where)


EPOCH_CASES = {
    "a RangeIndex is no timestamp": (
        "0,1,2,1,2,1\n1,1,2,1,2,1\n",
        2,
        "'0' in the index column: not an epoch",
    ),
    "seconds then milliseconds": (
        "1704067200,1,2,1,2,1\n1704070800000,1,2,1,2,1\n",
        3,
        "'1704070800000' in the index column: not epoch seconds like the first row's 1704067200",
    ),
    "microseconds": ("1704067200000000,1,2,1,2,1\n", 2, "not an epoch timestamp"),
    "a fraction": (
        "1704067200000,1,2,1,2,1\n1704070800000.5,1,2,1,2,1\n",
        3,
        "not epoch milliseconds",
    ),
}


@pytest.mark.parametrize("case", list(EPOCH_CASES))
def test_epoch_timestamps_must_be_unambiguous(tmp_path: Path, case: str) -> None:
    rows, line, reason = EPOCH_CASES[case]
    path = write(tmp_path, ",open,high,low,close,volume\n" + rows)
    with pytest.raises(ReplayError) as info:
        load_replay(path, symbol="BTCUSDT", interval="60")
    assert info.value.line == line
    assert reason in info.value.reason


def test_bars_that_overlap_the_configured_interval_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_CSV)
    with pytest.raises(ReplayError) as info:
        load_replay(path, symbol="BTCUSDT", interval="120")
    assert info.value.line == 3
    assert (
        "overlaps the one on line 2: it starts 3600000 ms after it, but the interval is 120"
        in str(info.value)
    )


def _json(entries: list[str], code: int = 0, message: str = "OK", symbol: str = "BTCUSDT") -> str:
    body = ",\n".join(entries)
    return (
        f'{{"retCode":{code},"retMsg":"{message}","result":{{"category":"linear",'
        f'"symbol":"{symbol}","list":[\n{body}\n]}},"retExtInfo":{{}},"time":1}}\n'
    )


NEWEST_FIRST = [
    '["1670612400000","17060","17080","17050","17070","10","170700"]',  # line 2
    '["1670608800000","17071","17073","17027","17055.5","268611","15.74462667"]',  # line 3
]


def test_bybit_json_is_reversed_into_time_order(tmp_path: Path) -> None:
    data = load_replay(write(tmp_path, _json(NEWEST_FIRST), "k.json"), symbol="BTCUSDT")
    assert [b[0] for b in data.bars] == [1_670_608_800_000, 1_670_612_400_000]
    assert data.bars[0][2:] == tuple(
        map(Decimal, ["17071", "17073", "17027", "17055.5", "268611", "15.74462667"])
    )


def test_bybit_json_numbers_need_not_be_strings_and_turnovers_are_optional(tmp_path: Path) -> None:
    as_strings = load_replay(write(tmp_path, _json(NEWEST_FIRST), "s.json"))
    unquoted = [entry.replace('"', "").replace("[", '["', 1) for entry in NEWEST_FIRST]
    unquoted = [entry.replace(",", '",', 1) for entry in unquoted]  # the start stays a string
    as_numbers = load_replay(write(tmp_path, _json(unquoted), "n.json"))
    assert as_numbers.bars == as_strings.bars
    six = [entry.rsplit(",", 1)[0] + "]" for entry in NEWEST_FIRST]  # no turnover
    no_turnover = load_replay(write(tmp_path, _json(six), "6.json")).bars
    assert no_turnover == tuple((*bar[:7], None) for bar in as_strings.bars)


MALFORMED_JSON: dict[str, tuple[str, int | None, str]] = {
    "retCode": (
        _json(NEWEST_FIRST, 10001, "params error: symbol invalid"),
        None,
        "retCode 10001: params error: symbol invalid",
    ),
    "oldest first": (
        _json(NEWEST_FIRST[::-1]),
        2,
        "result.list[0] (line 2): out-of-order timestamp 2022-12-09T18:00:00Z: before "
        "2022-12-09T19:00:00Z on result.list[1] (line 3) (Bybit lists bars newest first)",
    ),
    "a duplicate": (
        _json([NEWEST_FIRST[1], NEWEST_FIRST[1]]),
        2,
        "duplicate timestamp 2022-12-09T18:00:00Z (also on result.list[1] (line 3))",
    ),
    "a bad number": (
        _json([NEWEST_FIRST[0], NEWEST_FIRST[1].replace('"17027"', '"x"')]),
        3,
        "result.list[1]: bad number 'x' in low",
    ),
    "high < low": (
        _json([NEWEST_FIRST[0].replace('"17080"', '"17040"')]),
        2,
        "result.list[0]: high < low (17040 < 17050)",
    ),
    "an infinite high": (
        _json([NEWEST_FIRST[0], NEWEST_FIRST[1].replace('"17073"', '"Infinity"')]),
        3,
        "result.list[1]: bad number Infinity in high",
    ),
    "a NaN volume": (
        _json([NEWEST_FIRST[0], NEWEST_FIRST[1].replace('"268611"', '"NaN"')]),
        3,
        "result.list[1]: bad number NaN in volume",
    ),
    "an infinite turnover": (
        _json([NEWEST_FIRST[0].replace('"170700"', '"inf"'), NEWEST_FIRST[1]]),
        2,
        "result.list[0]: bad number Infinity in turnover",
    ),
    "a short entry": (
        _json(['["1670612400000","17060"]']),
        2,
        "result.list[0]: expected [start, open",
    ),
    "seconds": (
        _json(['["1670612400","17060","17080","17050","17070","10","170700"]']),
        2,
        "bad date '1670612400': not epoch milliseconds",
    ),
    "a start of 5,000 digits": (
        _json(['["' + "1" * 5000 + '","17060","17080","17050","17070","10","170700"]']),
        2,
        "bad date '111111",
    ),
    "not JSON": ('{"retCode":0,\n"result": {"list": [1,]}}', 2, "not valid JSON"),
    "no list": ('{"retCode":0,"retMsg":"OK","result":{}}', None, "no result.list"),
    "a symbol that contradicts the config": (
        _json(NEWEST_FIRST, symbol="ETHUSDT"),
        None,
        "holds ETHUSDT, but market.replay.symbol is BTCUSDT",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED_JSON))
def test_a_malformed_bybit_json_names_file_line_and_reason(tmp_path: Path, case: str) -> None:
    text, line, reason = MALFORMED_JSON[case]
    path = write(tmp_path, text, "kline.json")
    with pytest.raises(ReplayError) as info:
        load_replay(path, symbol="BTCUSDT")
    assert (info.value.path, info.value.line) == (str(path), line)
    assert reason in info.value.reason


def test_a_minified_bybit_answer_still_names_the_entry(tmp_path: Path) -> None:
    text = _json(NEWEST_FIRST).replace("\n", "")
    bad = text.replace('"17027"', '"17090"')
    path = write(tmp_path, bad, "kline.json")
    with pytest.raises(ReplayError, match=r"kline.json:1: result.list\[1\]: high < low"):
        load_replay(path)


# -- through a runtime ---------------------------------------------------------------------


@pytest.mark.parametrize("name", [*SMALL, "btcusdt_1h_500.csv"])
async def test_a_backtest_plays_every_bar_once_in_order_then_stops_by_itself(name: str) -> None:
    runtime, events = await run(f"market.replay.path={DATA / name}")
    bars = fx.large() if name.endswith("500.csv") else fx.small()
    assert klines(events) == expected(bars, turnover=name.endswith(".json"))
    ends = [
        i
        for i, (_, p) in enumerate(events)
        if isinstance(p, MarketDisconnected) and p.reason == END_OF_DATA
    ]
    assert len(ends) == 1
    assert klines(events[ends[0] :]) == []
    assert events[ends[0]][1].meta.ts == bars[-1].start + HOUR - 1
    assert runtime.lifecycle is Lifecycle.STOPPED
    assert not [p for _, p in events if isinstance(p, MarketErrorEvent)]
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "replay-source"]


async def test_a_malformed_file_fails_the_boot_at_once_naming_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, _replace_line(4, "2024-01-01 02:00:00,110,104,105,104,7")(GOOD_CSV))
    runtime = Runtime(config(f"market.replay.path={path}", "control.connect_timeout_s=30"))
    started = time.monotonic()
    with pytest.raises(RuntimeStartError) as info:
        await asyncio.wait_for(runtime.start(), 5)
    assert time.monotonic() - started < 2  # at once, not after the 30 s connect timeout
    message = str(info.value)
    assert "market source 'replay' failed to connect" in message
    assert f"connect_failed: ReplayError: {path}:4: high < low (104 < 105)" in message


async def test_data_older_than_the_historical_clock_fails_with_a_hint() -> None:
    path = DATA / "btcusdt_1h_epoch_ms.csv"
    runtime = Runtime(config(f"market.replay.path={path}", "runtime.start=2024-06-01T00:00:00Z"))
    with pytest.raises(RuntimeStartError) as info:
        await asyncio.wait_for(runtime.start(), 5)
    assert "the data starts at 2024-01-01T00:00:00Z, before the historical clock" in str(info.value)
    assert "set runtime.start=2024-01-01T00:00:00Z or earlier" in str(info.value)


async def test_other_symbols_and_channels_are_reported_and_the_file_still_plays() -> None:
    _, events = await run(
        f"market.replay.path={DATA / 'btcusdt_1h_bybit.json'}",
        'market.symbols=["ETHUSDT", "BTCUSDT", "SOLUSDT"]',
        'market.channels=["kline", "tickers"]',
    )
    errors = [(e.code, e.topic) for _, e in events if isinstance(e, MarketErrorEvent)]
    assert errors == [
        ("unsupported_channel", "tickers"),
        ("unknown_symbol", "ETHUSDT"),
        ("unknown_symbol", "SOLUSDT"),
    ]
    assert len(klines(events)) == 24


async def test_scaled_real_time_spaces_bars_by_data_time_over_speed(tmp_path: Path) -> None:
    bars = fx.small()[:4]
    path = write(tmp_path, fx.epoch_ms_csv(bars))
    seen: list[tuple[float, KlineEvent]] = []
    runtime = Runtime(
        config(
            "runtime.mode=paper",
            f"market.replay.path={path}",
            "market.replay.speed=36000",  # an hour of data in 0.1 s
        )
    )
    runtime.assemble()
    runtime.bus.subscribe(MARKET_KLINE, lambda k: seen.append((time.monotonic(), k)))
    await asyncio.wait_for(runtime.run(), 5)
    want = expected(bars)
    assert [attrs.evolve(k, meta=e.meta) for (_, k), e in zip(seen, want, strict=True)] == want
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(seen)]
    # 0.1 s apart. One hiccup of a loaded machine may delay a bar (the next one then comes
    # sooner: the pace is anchored at the first bar), so the middle gap is what is checked.
    assert 0.06 <= statistics.median(gaps) <= 0.25, gaps
    assert max(gaps) <= 0.8, gaps
    assert 0.15 <= seen[-1][0] - seen[0][0] <= 1.2
    for _, kline in seen:
        assert abs(kline.meta.ts - time.time() * 1000) < 5_000  # wall time, not data time
    assert runtime.lifecycle is Lifecycle.STOPPED


# -- the source alone ----------------------------------------------------------------------


def make_source(path: Path, *sets: str) -> tuple[ReplaySource, EventBus, HistoricalClock]:
    cfg = config(f"market.replay.path={path}", *sets)
    clock = HistoricalClock(start_ms=0)
    bus = EventBus(now_ms=clock.now_ms)
    ctx = PlaneContext(bus.handle("market", *rights_for("market")), clock, cfg, {}, {}, {}, {})
    return ReplaySource(ctx), bus, clock


def _playback_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "replay-source"]


async def test_disconnect_pauses_without_a_task_left_and_connect_resumes_exactly_once() -> None:
    source, bus, _ = make_source(DATA / "btcusdt_1h_500.csv")
    seen: list[KlineEvent] = []
    ended = asyncio.Event()
    bus.subscribe(MARKET_KLINE, seen.append)
    bus.subscribe(MARKET_DISCONNECTED, lambda _: ended.set())
    await source.connect()
    await source.connect()
    assert len(_playback_tasks()) == 1
    await asyncio.sleep(0)
    assert seen == []  # nothing plays before a subscription
    await source.subscribe(["BTCUSDT"], [])
    for _ in range(3):
        await asyncio.sleep(0)
    assert 0 < len(seen) < 500
    await source.disconnect()
    await source.disconnect()
    assert _playback_tasks() == []
    paused_at = len(seen)
    assert source.position == paused_at
    await asyncio.sleep(0)
    assert len(seen) == paused_at
    await source.connect()
    await asyncio.wait_for(ended.wait(), 5)
    assert seen == expected(fx.large())
    await source.connect()  # after the end: connects, and ends again at once
    await source.disconnect()
    assert _playback_tasks() == []


async def test_playback_gives_the_loop_a_turn_every_few_bars() -> None:
    source, bus, _ = make_source(DATA / "btcusdt_1h_500.csv")
    counts: list[int] = []
    seen: list[KlineEvent] = []
    bus.subscribe(MARKET_KLINE, seen.append)

    async def watcher() -> None:
        while len(seen) < 500:
            counts.append(len(seen))
            await asyncio.sleep(0)

    await source.subscribe(["BTCUSDT"], ["kline"])
    await source.connect()
    await asyncio.wait_for(watcher(), 5)
    steps = [b - a for a, b in itertools.pairwise(counts)]
    assert max(steps) <= YIELD_EVERY
    await source.disconnect()


# -- property: what is written is what is replayed -----------------------------------------

PRICE = st.integers(1, 10**9)


@st.composite
def ohlcv_files(draw: st.DrawFn) -> tuple[str, str, list[fx.Bar]]:
    """A CSV text in one of the time forms, its interval label (or ""), and its bars."""
    n = draw(st.integers(1, 25))
    step = draw(st.sampled_from([60_000, 300_000, HOUR, 24 * HOUR]))
    first = draw(st.integers(10**9, 4 * 10**9)) * 1000
    holes = draw(st.lists(st.integers(1, 3), min_size=n - 1, max_size=n - 1))
    starts = [first]
    for hole in holes:
        starts.append(starts[-1] + hole * step)
    bars = []
    for start in starts:
        scale = draw(st.integers(0, 8))
        low = draw(PRICE)
        high = draw(st.integers(low, low * 2))
        o, c = draw(st.integers(low, high)), draw(st.integers(low, high))
        volume = Decimal(draw(st.integers(0, 10**12))).scaleb(-draw(st.integers(0, 8)))
        o_, h_, l_, c_ = (Decimal(x).scaleb(-scale) for x in (o, high, low, c))
        bars.append(fx.Bar(start, o_, h_, l_, c_, volume, Decimal(0)))
    form = draw(st.sampled_from(["naive", "offset", "epoch_ms"]))
    names = ["open", "high", "low", "close", "volume"]
    order = draw(st.permutations(names))
    cases = draw(
        st.lists(st.sampled_from([str.lower, str.upper, str.capitalize]), min_size=5, max_size=5)
    )
    time_name = draw(st.sampled_from(["", "Date", "datetime", "TIMESTAMP", "time"]))
    # An ignored column, of numbers or of text (an n in the file: the column reader then checks
    # that every number is finite instead of knowing it).
    extra = draw(st.sampled_from(["", "0", "n/a"]))
    header = [time_name, *(case(name) for case, name in zip(cases, order, strict=True))]
    if extra:
        header.append("Adj Close")
    lines = [",".join(header)]
    for b in bars:
        if form == "epoch_ms":
            stamp = str(b.start)
        else:
            stamp = iso(b.start).replace("T", " ").removesuffix("Z")
            stamp += "+00:00" if form == "offset" else ""
        values = {
            "open": b.open,
            "high": b.high,
            "low": b.low,
            "close": b.close,
            "volume": b.volume,
        }
        cells = [stamp, *(str(values[name]) for name in order)]
        lines.append(",".join([*cells, extra] if extra else cells))
    uniform = len(set(holes)) <= 1 and n > 1
    label = "" if uniform else interval_label(step)
    return "\n".join(lines) + "\n", label, bars


@given(ohlcv_files())
def test_the_replayed_klines_equal_the_written_rows(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[str, str, list[fx.Bar]]
) -> None:
    text, label, bars = case
    path = tmp_path_factory.getbasetemp() / "property.csv"
    path.write_text(text, encoding="utf-8")
    inferred = label or interval_label(bars[1].start - bars[0].start)

    async def replay() -> list[KlineEvent]:
        source, bus, _ = make_source(path, f'market.replay.interval="{label}"')
        seen: list[KlineEvent] = []
        ended = asyncio.Event()
        bus.subscribe(MARKET_KLINE, seen.append)
        bus.subscribe(MARKET_DISCONNECTED, lambda _: ended.set())
        await source.subscribe(["BTCUSDT"], [])
        await source.connect()
        await asyncio.wait_for(ended.wait(), 5)
        await source.disconnect()
        return seen

    assert asyncio.run(replay()) == expected(bars, label=inferred)


async def test_scaled_playback_resumes_and_ends_again_after_the_end(tmp_path: Path) -> None:
    path = write(tmp_path, fx.epoch_ms_csv(fx.small()[:3]))
    cfg = config(f"market.replay.path={path}", "market.replay.speed=1e9")
    clock = RealtimeClock()
    bus = EventBus(now_ms=clock.now_ms)
    source = ReplaySource(
        PlaneContext(bus.handle("market", *rights_for("market")), clock, cfg, {}, {}, {}, {})
    )
    seen: list[KlineEvent] = []
    ends: list[MarketDisconnected] = []
    ended = asyncio.Event()
    bus.subscribe(MARKET_KLINE, seen.append)
    bus.subscribe(MARKET_DISCONNECTED, lambda e: (ends.append(e), ended.set()))
    await source.subscribe(["BTCUSDT"], ["kline"])
    for _ in range(2):
        ended.clear()
        await source.connect()
        await asyncio.wait_for(ended.wait(), 5)
        await source.disconnect()
    assert [k.start_ts for k in seen] == [b.start for b in fx.small()[:3]]
    assert [e.reason for e in ends] == [END_OF_DATA, END_OF_DATA]
    assert _playback_tasks() == []


_STAMPS = st.builds(
    lambda day, seconds, ms, sep, zone: (
        (datetime(2000, 1, 1) + timedelta(days=day, seconds=seconds, milliseconds=ms)).isoformat(
            sep=sep, timespec="milliseconds" if ms else "seconds"
        )
        + zone
    ),
    st.integers(0, 15_000),
    st.integers(0, 86_399),
    st.sampled_from([0, 0, 250]),
    st.sampled_from([" ", "T"]),
    st.sampled_from(["", "", "Z", "+00:00", "+05:30", "-08:00"]),
)


@given(st.lists(st.one_of(_STAMPS, st.sampled_from(["2024-01-01", "2024-02-30 00:00", "x"]))))
def test_the_cached_date_parser_agrees_with_the_plain_one(stamps: list[str]) -> None:
    cached = _IsoCache()
    for stamp in stamps:  # one cache for the whole list: what a file does
        try:
            expected: int | str = _iso_ms(stamp)
        except ValueError as exc:
            expected = str(exc)
        try:
            got: int | str = cached(stamp)
        except ValueError as exc:
            got = str(exc)
        assert got == expected, stamp


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_unquoted_and_quoted_csv_read_alike(tmp_path: Path, ending: str) -> None:
    rows = [
        "Date,Open,High,Low,Close,Volume",
        "2024-01-01 00:00:00,1.5,2,1.0,1.8,10",
        "",
        "2024-01-01 01:00:00,1.8,2.5,1.5,2.0,20",
    ]
    plain = tmp_path / "plain.csv"
    plain.write_bytes(ending.join(rows).encode() + ending.encode())
    quoted = tmp_path / "quoted.csv"
    quoted.write_bytes(ending.join(['"Date",' + rows[0][5:], *rows[1:]]).encode())
    assert load_replay(plain, symbol="X").bars == load_replay(quoted, symbol="X").bars
    assert len(load_replay(plain, symbol="X").bars) == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([*rows, "2024-01-01 02:00:00,1,2,x,1,1"]) + "\n")
    with pytest.raises(ReplayError, match=r"bad\.csv:5: bad number 'x' in Low"):
        load_replay(bad, symbol="X")


_CORRUPTIONS = ["", "x", "NaN", "-1", "0", "Infinity", " 7 ", "1e3", "1_000", "2024-13-01"]


def _chained(lines: list[str]) -> list[str]:
    """Every bar opening at the close before it (its high and low stretched to hold it)."""
    names = [name.strip().lower() for name in lines[0].split(",")]
    o, h, low, c = (names.index(name) for name in ("open", "high", "low", "close"))
    rows = [line.split(",") for line in lines[1:]]
    for before, row in itertools.pairwise(rows):
        row[o] = before[c]
        row[h] = max(row[h], row[o], key=Decimal)
        row[low] = min(row[low], row[o], key=Decimal)
    return [lines[0], *(",".join(row) for row in rows)]


@given(
    ohlcv_files(),
    st.booleans(),
    st.none() | st.tuples(st.integers(0, 10**6), st.integers(0, 6), st.sampled_from(_CORRUPTIONS)),
    st.sampled_from(["\n", "\r\n"]),
)
def test_the_column_reader_agrees_with_the_row_reader(
    case: tuple[str, str, list[fx.Bar]],
    chained: bool,
    corruption: tuple[int, int, str] | None,
    ending: str,
) -> None:
    text, _, _ = case
    lines = text.splitlines()
    if chained:  # the column reader reuses the closes as opens
        lines = _chained(lines)
    if corruption is not None:  # one cell replaced, a blank line, or a row cut short
        at, column, token = corruption
        row = 1 + at % (len(lines) - 1)
        cells = lines[row].split(",")
        if column == 6:
            lines.insert(row, "")
        else:
            cells[column % len(cells)] = token
            lines[row] = ",".join(cells[:-1] if token == "" and column == 5 else cells)
    text = ending.join(lines) + ending
    try:
        by_rows: Any = _read_rows("f.csv", text, plain=True)
    except ReplayError as exc:
        by_rows = str(exc)
    try:
        by_columns: Any = _read_plain_columns("f.csv", text)
    except ReplayError as exc:
        by_columns = str(exc)
    if corruption is None:
        assert by_columns is not None  # a clean file takes the column reader
    if by_columns is None:
        return  # left to the row reader, which is what load_replay then uses
    if isinstance(by_rows, str) or isinstance(by_columns, str):
        assert by_columns == by_rows  # a bad header: both say the same
        return
    rows, row_lines = by_rows
    columns, column_lines = by_columns

    def exact(cols: Any) -> list[list[str]]:  # Decimal("1.50") == Decimal("1.5"): compare text
        return [[repr(value) for value in col] for col in cols]

    assert exact(columns) == exact(_transpose(rows))
    n = len(rows)
    assert [column_lines.line(i) for i in range(n)] == [row_lines.line(i) for i in range(n)]


_JSON_CORRUPTIONS: list[Any] = [
    *_CORRUPTIONS,
    "+1",
    "\u0661",  # ARABIC-INDIC DIGIT ONE: a digit, but not an ASCII one
    7,
    Decimal("7.5"),
    True,
    None,
    ["7"],
    "drop",  # the entry loses its last field
    "entry",  # the entry is no list
]


@given(
    ohlcv_files(),
    st.booleans(),
    st.booleans(),
    st.none()
    | st.tuples(st.integers(0, 10**6), st.integers(0, 6), st.sampled_from(_JSON_CORRUPTIONS)),
)
def test_the_json_column_reader_agrees_with_the_entry_loop(
    case: tuple[str, str, list[fx.Bar]],
    chained: bool,
    six: bool,
    corruption: tuple[int, int, Any] | None,
) -> None:
    _, _, bars = case
    entries: list[Any] = json.loads(fx.bybit_json(bars), parse_float=Decimal)["result"]["list"]
    if chained:  # newest first: each entry opens at the close of the one after it
        for entry, older in itertools.pairwise(entries):
            entry[1] = older[4]
            entry[2] = max(entry[2], entry[1], key=Decimal)
            entry[3] = min(entry[3], entry[1], key=Decimal)
    if six:  # no turnovers
        for entry in entries:
            del entry[6]
    if corruption is not None:
        at, field, value = corruption
        entry = entries[at % len(entries)]
        if value == "drop":
            del entry[-1]
        elif value == "entry":
            entries[at % len(entries)] = "x"
        else:
            entry[field % len(entry)] = value
    try:
        by_rows: Any = _transpose(_json_rows("f.json", entries, _Entries("", len(entries))))
    except ReplayError as exc:
        by_rows = str(exc)
    by_columns = _json_columns(entries)
    if corruption is None:
        assert by_columns is not None  # a clean list takes the column reader
    if by_columns is None:
        return  # left to the entry loop, which is what load_replay then uses
    assert not isinstance(by_rows, str), by_rows

    def exact(cols: Any) -> list[list[str]]:  # Decimal("1.50") == Decimal("1.5"): compare text
        return [[repr(value) for value in col] for col in cols]

    assert exact(by_columns) == exact(by_rows)
