"""``planes backtest``: its output paths, the plot and the progress line on a terminal."""

from __future__ import annotations

import json
import math
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import cli.main
from cli.main import main

ROOT = Path(__file__).resolve().parents[2]
CSV = ROOT / "tests" / "data" / "ohlcv" / "btcusdt_1h_500.csv"
PLANES = str(Path(sys.executable).parent / "planes")
BASE = ["backtest", "--data", str(CSV), "--strategy", "sma_cross", "--symbol", "BTCUSDT"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PROGRESS = re.compile(r"\r[\d,]+ bars  [\d,]+ bars/s  \d+ trades")


def run_here(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([*BASE, *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--report", "/nonexistent/dir/r.json"], "--report /nonexistent/dir/r.json: the "
         "directory /nonexistent/dir does not exist"),
        (["--report", "{tmp}"], "--report {tmp}: it is a directory"),
        (["--report", "{tmp}/file.txt/r.json"], "{tmp}/file.txt is not a directory"),
        (["--plot", "/nonexistent/dir/p.png"], "--plot /nonexistent/dir/p.png: the directory "
         "/nonexistent/dir does not exist"),
        (["--plot", "{tmp}/p.xyz"], "--plot {tmp}/p.xyz: matplotlib cannot write 'xyz' files "
         "(it writes "),
        (["--report", "{tmp}/ok.json", "--plot", "{tmp}/p.XYZ"], "cannot write 'xyz' files"),
    ],
)  # fmt: skip
def test_a_bad_output_path_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    (tmp_path / "file.txt").write_text("a file, not a directory\n")
    code, out, err = run_here(capsys, *(arg.format(tmp=tmp_path) for arg in args))
    assert code == 2
    assert message.format(tmp=tmp_path) in err
    assert out == ""  # no summary line: nothing ran
    assert not (tmp_path / "ok.json").exists()


def test_a_pgf_plot_without_tex_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no TeX system on the PATH
    code, out, err = run_here(capsys, "--plot", str(tmp_path / "p.pgf"))
    assert (code, out) == (2, "")
    assert "matplotlib writes 'pgf' files with" in err
    assert "which is not installed" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any directory")
def test_an_unwritable_directory_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, out, err = run_here(capsys, "--report", str(locked / "r.json"))
    finally:
        locked.chmod(0o700)
    assert (code, out) == (2, "")
    assert f"the directory {locked} is not writable" in err


def test_a_write_that_fails_after_the_run_is_named_and_keeps_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    kept_dir = tmp_path / "kept"
    kept_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(kept_dir))
    real = cli.main.run_backtest

    async def run_then_remove_the_directory(*args: Any, **kwargs: Any) -> Any:
        result = await real(*args, **kwargs)
        shutil.rmtree(out_dir)  # the directory went away while the backtest ran
        return result

    monkeypatch.setattr(cli.main, "run_backtest", run_then_remove_the_directory)
    report, image = out_dir / "r.json", out_dir / "p.png"
    code, out, err = run_here(capsys, "--report", str(report), "--plot", str(image))
    assert code == 1
    assert f"cannot write --report {report}: No such file or directory" in err
    assert f"cannot write --plot {image}: No such file or directory" in err
    assert "Traceback" not in err
    assert "500 bars in" in out  # the summary is printed all the same
    (kept,) = kept_dir.glob("planes-backtest-*.json")
    assert f"the report is saved in {kept} instead" in err
    data = json.loads(kept.read_text())
    assert data["bars"] == 500
    assert data["stats"]["n_trades"] == len(data["trades"]) > 0

    # Nowhere to keep it either: the report goes to stdout, after the error that says so.
    monkeypatch.setattr(cli.main, "keep_report", lambda text: None)
    out_dir.mkdir()
    code, out, err = run_here(capsys, "--report", str(report))
    assert code == 1
    assert "the report follows on stdout" in err
    text, summary = out.rsplit("}\n", 1)
    assert json.loads(text + "}")["bars"] == 500
    assert "500 bars in" in summary


@pytest.mark.subprocess
def test_plot_writes_a_png(tmp_path: Path) -> None:
    image, bare = tmp_path / "equity.png", tmp_path / "equity"
    for target in (image, bare):
        result = subprocess.run(
            [PLANES, *BASE, "--plot", str(target)],
            capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        data = target.read_bytes()
        assert data.startswith(PNG_SIGNATURE)  # no extension: PNG, at the name given
        assert len(data) > 10_000  # two panels with lines, axes and a title, not an empty canvas
    assert sorted(p.name for p in tmp_path.iterdir()) == ["equity", "equity.png"]


@pytest.fixture(scope="module")
def long_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120k one-minute bars: about 1.5 s of backtest here, several progress ticks (0.25 s)."""
    path = tmp_path_factory.mktemp("ohlcv") / "long.csv"
    start = 1_704_067_200_000
    rows = ["timestamp,open,high,low,close,volume"]
    for i in range(120_000):
        price = 40_000 + 2_000 * math.sin(i / 50)
        rows.append(f"{start + i * 60_000},{price:.2f},{price + 5:.2f},{price - 5:.2f},"
                    f"{price + 1:.2f},1")  # fmt: skip
    path.write_text("\n".join(rows) + "\n")
    return path


def _args(data: Path, report: Path) -> list[str]:
    return [PLANES, "backtest", "--data", str(data), "--strategy", "sma_cross",
            "--symbol", "BTCUSDT", "--report", str(report)]  # fmt: skip


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_terminal_shows_the_progress_line(long_csv: Path, tmp_path: Path) -> None:
    master, slave = pty.openpty()
    report = tmp_path / "r.json"
    try:
        proc = subprocess.Popen(
            _args(long_csv, report),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, cwd=tmp_path,
        )  # fmt: skip
        os.close(slave)
        slave = -1
        chunks: list[bytes] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed its end of the terminal
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            elif proc.poll() is not None:
                break
        out, _ = proc.communicate(timeout=60)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert proc.returncode == 0
    elapsed = json.loads(report.read_text())["elapsed_s"]
    assert elapsed > 0.3, "the run was too short to show a progress tick"
    terminal = b"".join(chunks).decode()
    assert PROGRESS.search(terminal), terminal
    assert terminal.endswith("\r\n")  # the line is ended before the summary (onlcr: \n -> \r\n)
    assert b"120000 bars in" in out


@pytest.mark.slow
@pytest.mark.subprocess
def test_without_a_terminal_there_is_no_progress_line(long_csv: Path, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    result = subprocess.run(
        _args(long_csv, report),
        capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(report.read_text())["elapsed_s"] > 0.3
    assert not PROGRESS.search(result.stderr)
    assert "\r" not in result.stderr
    assert "bars/s" not in result.stderr
    assert "120000 bars in" in result.stdout


def test_a_report_through_a_link_replaces_its_target_and_a_pipe_is_written_in_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "reports" / "latest.json"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "r.json"
    link.symlink_to(target)
    code, _, err = run_here(capsys, "--report", str(link))
    assert code == 0, err
    assert link.is_symlink()  # the link stays, its target holds the new report
    assert json.loads(target.read_text())["bars"] == 500
    assert sorted(p.name for p in target.parent.iterdir()) == ["latest.json"]

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    code, _, err = run_here(capsys, "--report", str(fifo))
    reader.join(30)
    assert code == 0, err
    assert json.loads(got[0])["bars"] == 500
    assert not list(tmp_path.glob(".pipe.tmp-*"))
