"""The ``planes`` console script, run as a user runs it: a subprocess in the repository root."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from contracts.topics import BotEventMap

pytestmark = [pytest.mark.subprocess, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PLANES = Path(sys.executable).parent / "planes"


def _env() -> dict[str, str]:
    """The test's environment without ``PLANES__*`` overrides that would change the config."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PLANES__")}


def planes(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PLANES), *args],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every stderr line parsed as JSON (a line that is not JSON fails the test)."""
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


def lifecycle(records: list[dict[str, Any]]) -> list[str]:
    return [r["lifecycle"] for r in records if r.get("event") == "control.lifecycle"]


def test_run_headless_for_a_duration_logs_the_lifecycle_as_json(tmp_path: Path) -> None:
    started = time.monotonic()
    result = planes(
        "run",
        "--headless",
        "--duration",
        "5",
        "--set",
        "logging.format=json",
        "--set",
        f"runtime.data_dir={tmp_path}",
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    records = json_lines(result.stderr)
    assert lifecycle(records) == ["STARTING", "RUNNING", "STOPPING", "STOPPED"]
    for record in records:
        assert {"event", "level", "timestamp"} <= set(record)
    stopping = next(r for r in records if r.get("lifecycle") == "STOPPING")
    assert "duration" in stopping["detail"]
    assert records[-1]["event"] == "runtime.stopped"
    assert 5 <= elapsed < 15


def _read_lines(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_after_running_shuts_down_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [
            str(PLANES),
            "run",
            "--headless",
            "--duration",
            "30",  # a safety net: the signal, not the duration, must end the run
            "--set",
            "logging.format=json",
            "--set",
            f"runtime.data_dir={tmp_path}",
        ],
        cwd=ROOT,
        env=_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    assert proc.stderr is not None
    reader = threading.Thread(target=_read_lines, args=(proc.stderr, lines), daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 15
        while not any('"RUNNING"' in line for line in seen):
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            assert line is not None, f"exited before RUNNING: {''.join(seen)}"
            seen.append(line)
        proc.send_signal(sig)
        assert proc.wait(timeout=15) == 0, "".join(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
        assert proc.stdout is not None
        proc.stdout.close()
        proc.stderr.close()
    while (line := lines.get_nowait()) is not None:
        seen.append(line)
    records = json_lines("".join(seen))
    assert lifecycle(records) == ["STARTING", "RUNNING", "STOPPING", "STOPPED"]
    stopping = next(r for r in records if r.get("lifecycle") == "STOPPING")
    assert stopping["detail"] == f"signal {sig.name}"
    assert records[-1]["event"] == "runtime.stopped"


@pytest.mark.parametrize(
    ("assignment", "key"),
    [("runtime.mode=foo", "runtime.mode"), ("market.nope=1", "market.nope")],
)
def test_a_bad_set_exits_2_naming_the_key(assignment: str, key: str) -> None:
    result = planes("run", "--headless", "--duration", "1", "--set", assignment)
    assert result.returncode == 2
    assert key in result.stderr
    assert "STARTING" not in result.stderr


def test_a_missing_config_file_exits_2_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    result = planes("run", "--headless", "--duration", "1", "--config", str(missing))
    assert result.returncode == 2
    assert str(missing) in result.stderr


def test_an_unknown_market_source_exits_1_naming_the_known_ones(tmp_path: Path) -> None:
    result = planes(
        "run",
        "--headless",
        "--duration",
        "1",
        "--set",
        "market.source=nope",
        "--set",
        f"runtime.data_dir={tmp_path}",
    )
    assert result.returncode == 1
    assert "'nope'" in result.stderr
    assert "known: bybit, replay, synthetic" in result.stderr


@pytest.mark.parametrize("under", [False, True])
def test_a_data_dir_that_is_a_file_exits_2_naming_it(tmp_path: Path, under: bool) -> None:
    path = tmp_path / "e.txt"
    path.write_text("a file\n")
    data_dir = path / "sub" if under else path
    expected = (
        f"runtime.data_dir {data_dir}: {path} is a file, not a directory"
        if under
        else f"runtime.data_dir {path} names a file, not a directory"
    )
    result = planes("run", "--headless", "--duration", "1", "--set", f"runtime.data_dir={data_dir}")
    assert result.returncode == 2
    assert f"planes run: {expected}" in result.stderr
    assert "FileExistsError" not in result.stderr
    assert "STARTING" not in result.stderr
    # A backtest uses no data dir, unless storage is turned on.
    csv = ROOT / "tests" / "data" / "ohlcv" / "btcusdt_1h_500.csv"
    backtest = ["backtest", "--data", str(csv), "--strategy", "sma_cross"]
    sets = ["--set", f"runtime.data_dir={data_dir}"]
    assert planes(*backtest, *sets).returncode == 0
    result = planes(*backtest, *sets, "--set", "storage.enabled=true")
    assert result.returncode == 2
    assert f"planes backtest: {expected}" in result.stderr


def test_topics_lists_every_topic() -> None:
    result = planes("topics")
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    assert set(BotEventMap) <= set(names)


def test_topics_markdown_is_docs_topics_md() -> None:
    # Entry-point plugins installed in the environment would add their topics: leave them out.
    result = planes("topics", "--markdown", "--set", "plugins.entry_points=false")
    assert result.returncode == 0, result.stderr
    expected = (ROOT / "docs" / "topics.md").read_text(encoding="utf-8")
    assert result.stdout == expected, "docs/topics.md is out of date: run `make docs`"
