"""``planes journal export``: JSON Lines out of a real journal, filters, errors, pipes."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from cli.main import main
from contracts.control import ControlCommand
from contracts.enums import Severity
from contracts.market import KlineEvent, TickerEvent
from contracts.meta import EventMeta, Payload, Source
from contracts.system import Alert
from contracts.topics import STATE_REGISTRY, BotEventMap
from planes.storage.journal import EventJournal, JournalRecord, decode, open_reader

ROOT = Path(__file__).resolve().parents[2]
CSV = ROOT / "tests" / "data" / "ohlcv" / "btcusdt_1h_500.csv"
PLANES = str(Path(sys.executable).parent / "planes")
KEYS = ["seq", "run_id", "topic", "source", "ts", "correlation_id", "payload"]
TYPES = {name: topic.payload for name, topic in BotEventMap.items()}
TYPES[STATE_REGISTRY.name] = STATE_REGISTRY.payload


def kline(ts: int) -> KlineEvent:
    one = Decimal(1)
    return KlineEvent(
        EventMeta(Source.MARKET, ts), "x", "BTCUSDT", "1", ts - 999, ts, one, one, one, one, one,
        True,
    )  # fmt: skip


def ticker(ts: int) -> TickerEvent:
    return TickerEvent(EventMeta(Source.MARKET, ts), "x", "ETHUSDT", Decimal("3000.5"), ts)


def command(ts: int, correlation_id: str) -> ControlCommand:
    return ControlCommand(EventMeta(Source.CLI, ts, correlation_id), "status")


def alert(ts: int, correlation_id: str) -> Alert:
    return Alert(EventMeta(Source.SYSTEM, ts, correlation_id), Severity.WARNING, "x", "msg")


EVENTS: list[tuple[str, Payload]] = [
    ("market:kline", kline(1_000)),
    ("market:ticker", ticker(1_100)),
    ("control:command", command(1_200, "c1")),
    ("observability:alert", alert(1_300, "c1")),
    ("market:kline", kline(2_000)),
    ("control:command", command(2_100, "c2")),
    ("market:ticker", ticker(2_200)),
    ("observability:alert", alert(2_300, "c2")),
    ("market:kline", kline(3_000)),
    ("control:command", command(3_100, "c1")),
]


def write_journal(data_dir: Path, events: list[tuple[str, Payload]] = EVENTS) -> Path:
    path = data_dir / "journal.sqlite3"
    with EventJournal(path, "run1") as journal:
        for topic, payload in events:
            journal.append(topic, payload)
    return path


def export(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    capsys.readouterr()  # what the test's own journal writer logged
    code = main(["journal", "export", *args])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def seqs(lines: list[str]) -> list[int]:
    return [json.loads(line)["seq"] for line in lines]


def test_every_event_is_one_json_line_in_seq_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = write_journal(tmp_path / "d")
    code, lines, err = export(capsys, "--data-dir", str(tmp_path / "d"))
    assert (code, err) == (0, "")
    assert lines == [record.to_json_line() for record in open_reader(journal).read()]
    assert seqs(lines) == list(range(1, len(EVENTS) + 1))
    for line, (topic, payload) in zip(lines, EVENTS, strict=True):
        data = json.loads(line)
        assert list(data) == KEYS
        assert isinstance(data["payload"], dict)
        assert (data["topic"], data["run_id"]) == (topic, "run1")
        assert data["ts"] == payload.meta.ts
        assert data["source"] == payload.meta.source.value
        assert data["correlation_id"] == payload.meta.correlation_id
        assert decode(JournalRecord.from_json_line(line), TYPES) == payload


@pytest.mark.parametrize(
    ("topics", "expected"),
    [
        (["market:kline"], [1, 5, 9]),
        (["market:*"], [1, 2, 5, 7, 9]),
        (["market:kline", "control:command"], [1, 3, 5, 6, 9, 10]),
        (["observability:*", "control:command"], [3, 4, 6, 8, 10]),
        (["*"], list(range(1, 11))),
        (["exec:order_event"], []),  # a known topic without events: a valid, empty export
        (["exec:*"], []),
    ],
)
def test_topic_filter_takes_names_and_prefix_patterns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], topics: list[str], expected: list[int]
) -> None:
    write_journal(tmp_path / "d")
    args = [arg for topic in topics for arg in ("--topic", topic)]
    code, lines, _ = export(capsys, "--data-dir", str(tmp_path / "d"), *args)
    assert code == 0
    assert seqs(lines) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--since", "3", "--until", "7"], [4, 5, 6, 7]),
        (["--since", "10"], []),
        (["--until", "0"], []),
        (["--correlation-id", "c1"], [3, 4, 10]),
        (["--correlation-id", "c1", "--topic", "control:*", "--since", "3"], [10]),
        (["--correlation-id", "nope"], []),
    ],
)
def test_seq_range_and_correlation_id_filters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: list[int]
) -> None:
    write_journal(tmp_path / "d")
    code, lines, _ = export(capsys, "--data-dir", str(tmp_path / "d"), *args)
    assert code == 0
    assert seqs(lines) == expected


def test_the_data_dir_defaults_to_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_journal(tmp_path / "var")  # runtime.data_dir is ./var and the test runs in tmp_path
    code, lines, _ = export(capsys, "--topic", "market:kline")
    assert (code, seqs(lines)) == (0, [1, 5, 9])
    write_journal(tmp_path / "elsewhere", EVENTS[:2])
    code, lines, _ = export(capsys, "--set", f"runtime.data_dir={tmp_path / 'elsewhere'}")
    assert (code, seqs(lines)) == (0, [1, 2])


def test_out_writes_the_same_lines_to_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_journal(tmp_path / "d")
    code, stdout_lines, _ = export(capsys, "--data-dir", str(tmp_path / "d"))
    out = tmp_path / "events.jsonl"
    code, lines, err = export(capsys, "--data-dir", str(tmp_path / "d"), "--out", str(out))
    assert (code, lines) == (0, [])
    assert f"10 events written to {out}" in err
    assert out.read_text().splitlines() == stdout_lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "events.jsonl"]


def test_a_journal_being_written_exports_what_is_committed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = EventJournal(tmp_path / "d" / "journal.sqlite3", "live")
    journal.open()
    try:
        for topic, payload in EVENTS[:4]:
            journal.append(topic, payload)
        journal.flush()
        code, lines, _ = export(capsys, "--data-dir", str(tmp_path / "d"))
        assert (code, seqs(lines)) == (0, [1, 2, 3, 4])
    finally:
        journal.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "5", "--until", "4"], "--until 4 is below --since 5"),
        (["--topic", "mar*ket"], "'*' may only end a pattern"),
        (["--topic", ""], "empty topic name"),
        (["--out", "/nonexistent-dir/x.jsonl"], "cannot write --out /nonexistent-dir/x.jsonl"),
    ],
)
def test_bad_arguments_are_named_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    write_journal(tmp_path / "d")
    code, lines, err = export(capsys, "--data-dir", str(tmp_path / "d"), *args)
    assert (code, lines) == (2, [])
    assert message in err


@pytest.mark.parametrize("flag", ["--since", "--until"])
@pytest.mark.parametrize("value", ["-1", "abc", "1.5", str(2**63), str(10**30)])
def test_a_bad_seq_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    # 2**63 is one past SQLite's INTEGER: it used to reach SQLite and fail with OverflowError.
    with pytest.raises(SystemExit) as exc:
        main(["journal", "export", flag, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: {value!r} is not a seq (an integer from 0 to {2**63 - 1})" in err


def test_the_largest_seq_is_a_valid_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_journal(tmp_path / "d")
    top = str(2**63 - 1)
    code, lines, err = export(capsys, "--data-dir", str(tmp_path / "d"), "--since", top)
    assert (code, lines, err) == (0, [], "")
    code, lines, _ = export(capsys, "--data-dir", str(tmp_path / "d"), "--until", top)
    assert (code, seqs(lines)) == (0, list(range(1, 11)))


def test_select_refuses_a_seq_beyond_sqlite_too(tmp_path: Path) -> None:
    from cli.journal import ExportError, select  # noqa: PLC0415

    journal = write_journal(tmp_path / "d")
    with pytest.raises(ExportError, match=r"--until must be a seq from 0 to \d+, got 9223"):
        select(journal, until=2**63)


@pytest.mark.parametrize(
    ("topics", "message"),
    [
        (["exec:orderEvent"], "--topic 'exec:orderEvent' is not a known topic; did you mean "
         "'exec:order_event'?"),
        (["market:klines"], "did you mean 'market:kline'?"),
        (["market:kline", "nope"], "--topic 'nope' is not a known topic (`planes topics`"),
        (["exce:*"], "--topic 'exce:*' matches no known topic; did you mean 'exec:*'?"),
    ],
)  # fmt: skip
def test_an_unknown_topic_is_named_with_the_closest_known_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], topics: list[str], message: str
) -> None:
    write_journal(tmp_path / "d")
    args = [arg for topic in topics for arg in ("--topic", topic)]
    code, lines, err = export(capsys, "--data-dir", str(tmp_path / "d"), *args)
    assert (code, lines) == (2, [])
    assert message in err
    assert "Traceback" not in err


_PLUGIN = """
import attrs
from contracts.meta import Payload
from contracts.topics import Topic
from plugins.hookspecs import hookimpl


@attrs.frozen
class Ping(Payload):
    n: int


PING = Topic("demo:ping", Ping, "a test topic")


@hookimpl
def planes_register_topics():
    return [PING]
"""


def test_topics_of_configured_plugins_and_of_the_journal_are_known(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_journal(tmp_path / "d")
    data_dir = ["--data-dir", str(tmp_path / "d")]
    (tmp_path / "journal_cli_topics.py").write_text(_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    with_plugin = ["--set", 'plugins.modules=["journal_cli_topics"]']
    for topic in ("demo:ping", "demo:*"):
        code, lines, err = export(capsys, *data_dir, *with_plugin, "--topic", topic)
        assert (code, lines, err) == (0, [], "")
        code, _, err = export(capsys, *data_dir, "--topic", topic)
        assert code == 2
        assert repr(topic) in err

    # A plugin that cannot load leaves the built-in names, and says so when a topic is unknown.
    broken = ["--set", 'plugins.modules=["journal_cli_no_such_module"]']
    code, lines, _ = export(capsys, *data_dir, *broken, "--topic", "market:kline")
    assert (code, seqs(lines)) == (0, [1, 5, 9])
    code, _, err = export(capsys, *data_dir, *broken, "--topic", "demo:ping")
    assert code == 2
    assert "plugin topics are not known" in err
    assert "journal_cli_no_such_module" in err

    # A topic only the journal holds (its plugin since removed) is exported, by name or pattern.
    import journal_cli_topics  # noqa: PLC0415

    ping = journal_cli_topics.Ping(EventMeta(Source.SYSTEM, 5_000), 7)
    write_journal(tmp_path / "old", [*EVENTS[:2], ("demo:ping", ping)])
    old = ["--data-dir", str(tmp_path / "old")]
    for topic in ("demo:ping", "demo:*"):
        code, lines, err = export(capsys, *old, "--topic", topic)
        assert (code, seqs(lines), err) == (0, [3], "")


@pytest.mark.parametrize("given", ["--data-dir", "--set"])
def test_a_data_dir_that_is_a_file_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], given: str
) -> None:
    path = tmp_path / "e.txt"
    path.write_text("not a directory\n")
    if given == "--data-dir":
        args, flag = ["--data-dir", str(path)], "--data-dir"
    else:
        args, flag = ["--set", f"runtime.data_dir={path}"], "runtime.data_dir"
    code, lines, err = export(capsys, *args)
    assert (code, lines) == (2, [])
    assert f"{flag} {path} names a file, not a directory" in err


def test_a_missing_or_foreign_journal_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = export(capsys, "--data-dir", str(tmp_path / "none"))
    assert code == 2
    assert f"no event journal at {tmp_path / 'none' / 'journal.sqlite3'}" in err

    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "journal.sqlite3").write_text("hello, not a database\n" * 100)
    code, _, err = export(capsys, "--data-dir", str(tmp_path / "text"))
    assert code == 2
    assert "is not an event journal" in err
    assert str(tmp_path / "text" / "journal.sqlite3") in err

    (tmp_path / "other").mkdir()
    with sqlite3.connect(tmp_path / "other" / "journal.sqlite3") as conn:
        conn.execute("CREATE TABLE t(x)")
    conn.close()
    code, _, err = export(capsys, "--data-dir", str(tmp_path / "other"))
    assert code == 2
    assert "has no events and meta tables" in err


@pytest.mark.subprocess
def test_a_recorded_run_exports_contiguously_and_stops_quietly_at_a_closed_pipe(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "var"
    run = subprocess.run(
        [
            PLANES, "run", "--headless",
            "--set", "runtime.mode=backtest",
            "--set", "market.source=replay",
            "--set", f"market.replay.path={CSV}",
            "--set", 'market.symbols=["BTCUSDT"]',
            "--set", f"runtime.data_dir={data_dir}",
            "--set", "logging.level=warning",
        ],
        capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    result = subprocess.run(
        [PLANES, "journal", "export", "--data-dir", str(data_dir)],
        capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert seqs(lines) == list(range(1, len(lines) + 1))
    records = [JournalRecord.from_json_line(line) for line in lines]
    assert len({record.run_id for record in records}) == 1
    topics = {record.topic for record in records}
    assert {"market:kline", "strategy:intent", "exec:order_event", "state:recovery"} <= topics
    for record in records:
        assert decode(record, TYPES).meta.ts == record.ts
    assert len(result.stdout) > 256 * 1024  # more than a pipe holds: the writer must block

    # `planes journal export | head -n 1`: the reader leaves after one line.
    proc = subprocess.Popen(
        [PLANES, "journal", "export", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    code = proc.wait(timeout=60)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert first.decode().rstrip("\n") == lines[0]
    assert (code, err) == (0, "")
