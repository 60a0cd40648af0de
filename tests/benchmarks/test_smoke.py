"""The benchmark scripts run and print what docs/performance.md and the issue notes quote.

Only a smoke test: tiny event counts, no assertion on speed (speed is judged by `make bench`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.subprocess
def test_bench_bus_prints_one_json_object_with_the_pinned_keys() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "bench_bus.py"),
            "--json",
            "--events",
            "500",
            "--repeats",
            "1",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result = json.loads(proc.stdout)
    for key in ("bus_eps", "blinker_eps", "plain_eps", "bus_eps_5", "blinker_eps_5", "plain_eps_5"):
        assert result[key] > 0


@pytest.mark.subprocess
def test_the_runner_collects_every_benchmark() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "run.py"),
            "--json",
            "bus",
            "--events",
            "500",
            "--repeats",
            "1",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(proc.stdout)["bus"]["bus_eps"] > 0
