"""``planes.native``: the compiled hot modules are used only when built from the sources on disk."""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from planes import native
from planes.native import MANIFEST, check, module_source, source_digest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "ohlcv"
PLANES = str(Path(sys.executable).parent / "planes")
MODULES = ("pkg.alpha", "pkg.sub.beta")
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def tree(tmp_path: Path, *, built: tuple[str, ...] = MODULES, manifest: bool = True) -> Path:
    """Sources for ``MODULES``, empty files as their extensions, and the build's manifest."""
    for name in MODULES:
        source = module_source(tmp_path, name)
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_text(f"NAME = {name!r}\n")
        if name in built:
            source.with_suffix(SUFFIX).write_bytes(b"")
    if manifest:
        (tmp_path / "planes").mkdir(exist_ok=True)
        digests = {name: source_digest(module_source(tmp_path, name)) for name in MODULES}
        (tmp_path / "planes" / MANIFEST).write_text(json.dumps({"modules": digests}))
    return tmp_path


def test_extensions_built_from_the_sources_on_disk_are_used(tmp_path: Path) -> None:
    status = check(tree(tmp_path), MODULES)
    assert status.compiled
    assert status.describe() == "compiled (2 modules, mypyc)"


def test_a_source_changed_after_the_build_sends_every_module_to_its_source(
    tmp_path: Path,
) -> None:
    root = tree(tmp_path)
    module_source(root, "pkg.sub.beta").write_text("NAME = 'edited'\n")
    status = check(root, MODULES)
    assert not status.compiled
    assert status.reason.startswith("changed since compiled: pkg.sub.beta (rebuild")


def test_no_build_a_partial_build_and_a_lost_manifest_are_named(tmp_path: Path) -> None:
    assert check(tree(tmp_path / "a", built=()), MODULES).reason == "not built"
    partial = check(tree(tmp_path / "b", built=("pkg.alpha",)), MODULES)
    assert partial.reason == "not compiled: pkg.sub.beta"
    lost = check(tree(tmp_path / "c", manifest=False), MODULES)
    assert not lost.compiled
    assert "_native.json cannot be read" in lost.reason


def test_an_extension_of_a_module_no_longer_compiled_is_found(tmp_path: Path) -> None:
    """An editable install compiles into the checkout: a module dropped from the list leaves
    its extension there, ahead of its source; guard() routes it to the source."""
    root = tree(tmp_path / "t")
    old = root / "cli" / "backtest.py"
    old.parent.mkdir()
    old.write_text("")
    left = old.with_suffix(SUFFIX)
    left.write_bytes(b"")
    (root / "cli" / f"orphan{SUFFIX}").write_bytes(b"")  # no source beside it: not ours
    assert native.stray(root, MODULES) == {"cli.backtest": left}
    assert check(root, MODULES).compiled  # the listed modules are still fine


def test_planes_native_0_wins_over_a_good_build(tmp_path: Path) -> None:
    status = check(tree(tmp_path), MODULES, env="0")
    assert not status.compiled
    assert status.describe() == "interpreted: PLANES_NATIVE=0 is set"


@pytest.mark.skipif(os.environ.get("PLANES_NATIVE") == "0", reason="PLANES_NATIVE=0 is set")
def test_this_install_runs_the_compiled_modules() -> None:
    """``make test`` builds them (setup.py); CI tests what a user runs, not the sources."""
    import planes.market.replay  # noqa: PLC0415 - imported for its __file__

    status = native.status()
    assert status.compiled, status.describe()
    assert planes.market.replay.__file__ is not None
    assert not planes.market.replay.__file__.endswith(".py")


@pytest.mark.subprocess
def test_planes_native_0_imports_the_sources_and_says_so() -> None:
    script = (
        "import planes.native, planes.market.replay as r, planes.execution.ledger as l;"
        "print(planes.native.status().describe()); print(r.__file__); print(l.__file__)"
    )
    env = {**os.environ, "PLANES_NATIVE": "0"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    described, replay_file, ledger_file = result.stdout.splitlines()
    assert described == "interpreted: PLANES_NATIVE=0 is set"
    assert replay_file.endswith("replay.py")
    assert ledger_file.endswith("ledger.py")


@pytest.mark.subprocess
def test_compiled_and_interpreted_backtests_give_the_same_report(tmp_path: Path) -> None:
    """The same trades and stats either way; only elapsed_s and bars_per_s may differ."""
    reports = {}
    for mode in ("1", "0"):
        out = tmp_path / f"report-{mode}.json"
        result = subprocess.run(
            [
                PLANES, "backtest", "--data", str(DATA / "btcusdt_1h_500.csv"),
                "--strategy", "sma_cross", "--param", "fast=5", "--param", "slow=20",
                "--fee-bps", "10", "--slippage-bps", "3", "--report", str(out),
            ],
            capture_output=True, text=True, env={**os.environ, "PLANES_NATIVE": mode},
            cwd=ROOT, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        interpreted = "the hot modules run interpreted: PLANES_NATIVE=0 is set" in result.stderr
        assert interpreted is (mode == "0")
        report = json.loads(out.read_text())
        del report["elapsed_s"], report["bars_per_s"]
        reports[mode] = report
    assert reports["1"]["trades"]
    assert reports["1"] == reports["0"]


GC_STRESS = """
import asyncio, gc
gc.set_threshold(25, 2, 2)  # a collection every few allocations

from contracts.control import ControlCommand
from contracts.topics import CONTROL_COMMAND, MARKET_KLINE
from planes.config import load_config
from planes.runtime import Runtime

BASE = ["runtime.mode=backtest", "market.synthetic.bar_s=60", "observability.status_interval_s=0",
        "plugins.entry_points=false", "market.synthetic.max_bars=0", "control.connect_timeout_s=5"]

async def one_runtime(i):
    runtime = Runtime(load_config(None, BASE, environ={}, use_default_file=False))
    runtime.assemble()
    seen = []
    async def on_kline(payload):  # an async handler: a task per event
        seen.append(payload)
    runtime.bus.subscribe(MARKET_KLINE, on_kline)
    await asyncio.wait_for(runtime.start(), 10)
    await asyncio.sleep(0.01)
    cli = runtime.attach("cli")
    cli.publish(CONTROL_COMMAND, ControlCommand(cli.meta(), "stop", ("gc",), f"c-{i}"))
    assert await runtime.wait_stopped(10)
    await asyncio.wait_for(runtime.stop(), 10)
    assert seen, "the async handler saw no kline"

for i in range(4):
    asyncio.run(one_runtime(i))
    gc.collect()
print("ok")
"""


@pytest.mark.subprocess
def test_the_compiled_modules_survive_a_collector_that_runs_all_the_time(tmp_path: Path) -> None:
    """Runtimes start, run async handlers, stop on a command and are freed, with a collection
    every few allocations. With the bus's async adapter compiled, this crashed the interpreter
    (SIGSEGV: a freed weak reference in a set); see planes/busparts.py."""
    result = subprocess.run(
        [sys.executable, "-c", GC_STRESS],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.splitlines()[-1] == "ok"
