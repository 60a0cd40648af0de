"""A real third-party plugin package, pip-installed and run through the ``planes`` command.

The module fixture writes two packages into a temporary directory and installs each with
``pip install --no-deps --no-build-isolation --no-index --target`` (the venv's setuptools builds
them; pip never goes online):

* ``planes-demo-plugin`` (entry point ``demo``): a fake exchange ``demoex``, a strategy
  ``demo_strategy``, a topic ``demo:heartbeat`` and a component on the new plane ``demo`` that
  writes what it saw to ``plugins.settings.demo.out`` when it stops;
* ``planes-broken-plugin`` (entry point ``broken``): its plugin module raises ``ImportError``.

Each ``planes`` subprocess sees only the packages on its ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

PYTHON = Path(sys.executable)
PLANES = PYTHON.parent / "planes"
DEMO_VERSION = "0.3.1"

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "{version}"
requires-python = ">=3.11"

[project.entry-points.planes]
{entry} = "{package}.plugin"

[tool.setuptools]
packages = ["{package}"]
"""

DEMO_PLUGIN = '''\
"""A fake exchange, a strategy, a topic and a component on the new plane "demo"."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs

from contracts.market import MarketDisconnected, TickerEvent
from contracts.meta import Payload
from contracts.ports import (
    ComponentContext,
    ExchangeSpec,
    PlaneSpec,
    StrategySpec,
    StrategyView,
)
from contracts.strategy import IntentDraft, ParamValue
from contracts.topics import MARKET_DISCONNECTED, MARKET_TICKER, Topic
from plugins.hookspecs import hookimpl


@attrs.frozen
class DemoHeartbeat(Payload):
    """The demo component is alive and has seen ``tickers`` tickers."""

    beat: int
    tickers: int


DEMO_HEARTBEAT = Topic("demo:heartbeat", DemoHeartbeat, "the demo plugin is alive")


class DemoExchange:
    """Tickers for the subscribed symbols every 50 ms of clock time."""

    name = "demoex"
    endpoint = "demo://fake"
    INTERVAL_MS = 50

    def __init__(self, ctx: ComponentContext) -> None:
        self._bus = ctx.bus
        self._clock = ctx.clock
        self.symbols: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def disconnect(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def subscribe(self, symbols: Sequence[str], channels: Sequence[str]) -> None:
        self.symbols.extend(s for s in symbols if s not in self.symbols)

    async def _run(self) -> None:
        bus, clock = self._bus, self._clock
        ts = clock.now_ms()
        step = 0
        while True:
            ts += self.INTERVAL_MS
            await clock.pace(ts)
            for symbol in self.symbols:
                price = Decimal(1000 + step % 7)
                bus.publish(MARKET_TICKER, TickerEvent(bus.meta(), self.name, symbol, price, ts))
            step += 1
            if not clock.is_realtime:
                await asyncio.sleep(0)


class DemoStrategy:
    """Never wants anything."""

    def __init__(self, params: Mapping[str, ParamValue]) -> None:
        self.params = dict(params)

    def on_event(
        self, topic: Topic[Any], payload: Payload, view: StrategyView
    ) -> Sequence[IntentDraft]:
        return []


class DemoCounter:
    """Counts tickers, publishes a heartbeat every 0.2 s, writes its counts to settings["out"]."""

    name = "demo_counter"

    def __init__(self, ctx: ComponentContext) -> None:
        self._bus = ctx.bus
        self._clock = ctx.clock
        self._out = Path(ctx.settings["out"])
        self.counts = {
            "tickers": 0,
            "heartbeats_published": 0,
            "heartbeats_received": 0,
            "tickers_after_disconnect": 0,
            "disconnected": 0,
        }
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._bus.subscribe(MARKET_TICKER, self._on_ticker)
        self._bus.subscribe(MARKET_DISCONNECTED, self._on_disconnected)
        self._bus.subscribe(DEMO_HEARTBEAT, self._on_heartbeat)
        self._task = asyncio.get_running_loop().create_task(self._beat())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._out.write_text(json.dumps(self.counts))

    async def _beat(self) -> None:
        bus = self._bus
        while True:
            await self._clock.sleep(0.2)
            counts = self.counts
            counts["heartbeats_published"] += 1
            beat = DemoHeartbeat(bus.meta(), counts["heartbeats_published"], counts["tickers"])
            bus.publish(DEMO_HEARTBEAT, beat)

    def _on_ticker(self, ticker: TickerEvent) -> None:
        self.counts["tickers"] += 1
        if self.counts["disconnected"]:
            self.counts["tickers_after_disconnect"] += 1

    def _on_disconnected(self, event: MarketDisconnected) -> None:
        self.counts["disconnected"] += 1

    def _on_heartbeat(self, beat: DemoHeartbeat) -> None:
        self.counts["heartbeats_received"] += 1


@hookimpl
def planes_register_topics() -> Sequence[Topic[Any]]:
    return [DEMO_HEARTBEAT]


@hookimpl
def planes_register_planes() -> Sequence[PlaneSpec]:
    return [PlaneSpec("demo_counter", "demo", DemoCounter, publishes=("demo:*",))]


@hookimpl
def planes_register_exchanges() -> Sequence[ExchangeSpec]:
    return [ExchangeSpec("demoex", market_data=DemoExchange)]


@hookimpl
def planes_register_strategies() -> Sequence[StrategySpec]:
    return [StrategySpec("demo_strategy", DemoStrategy, "never trades")]
'''

BROKEN_PLUGIN = 'raise ImportError("planes_broken_plugin needs libfoo, which is not installed")\n'


@attrs.frozen
class Sites:
    demo: Path
    broken: Path
    work: Path


def _write_package(root: Path, dist: str, package: str, entry: str, plugin_source: str) -> Path:
    pkgdir = root / dist
    (pkgdir / package).mkdir(parents=True)
    (pkgdir / "pyproject.toml").write_text(
        PYPROJECT.format(dist=dist, version=DEMO_VERSION, entry=entry, package=package)
    )
    (pkgdir / package / "__init__.py").write_text("")
    (pkgdir / package / "plugin.py").write_text(plugin_source)
    return pkgdir


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Sites:
    root = tmp_path_factory.mktemp("thirdparty")
    packages = {
        "demo": _write_package(
            root, "planes-demo-plugin", "planes_demo_plugin", "demo", DEMO_PLUGIN
        ),
        "broken": _write_package(
            root, "planes-broken-plugin", "planes_broken_plugin", "broken", BROKEN_PLUGIN
        ),
    }
    installs = {
        name: subprocess.Popen(
            [
                str(PYTHON),
                "-m",
                "pip",
                "install",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
                "--no-cache-dir",
                "--disable-pip-version-check",
                "--quiet",
                "--target",
                str(root / f"site-{name}"),
                str(pkgdir),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, pkgdir in packages.items()
    }
    for name, proc in installs.items():
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"pip install of {name} failed:\n{output}"
    work = root / "work"
    work.mkdir()
    return Sites(demo=root / "site-demo", broken=root / "site-broken", work=work)


def planes(
    site: Path, cwd: Path, *args: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANES__")}
    env["PYTHONPATH"] = str(site)
    return subprocess.run(
        [str(PLANES), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def json_logs(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_the_package_is_installed_with_its_entry_point(sites: Sites) -> None:
    [info] = sites.demo.glob("planes_demo_plugin-*.dist-info")
    assert info.name == f"planes_demo_plugin-{DEMO_VERSION}.dist-info"
    assert "demo = planes_demo_plugin.plugin" in (info / "entry_points.txt").read_text()


def test_planes_plugins_lists_the_entry_point_plugin(sites: Sites) -> None:
    result = planes(sites.demo, sites.work, "plugins")
    assert result.returncode == 0, result.stderr
    [row] = [line for line in result.stdout.splitlines() if line.startswith("demo ")]
    assert "entry point" in row
    assert DEMO_VERSION in row.split()
    assert "loaded" in row
    for provided in (
        "topics: demo:heartbeat",
        "planes: demo_counter",
        "exchanges: demoex",
        "strategies: demo_strategy",
    ):
        assert provided in row


def test_planes_topics_shows_the_plugin_topic(sites: Sites) -> None:
    result = planes(sites.demo, sites.work, "topics")
    assert result.returncode == 0, result.stderr
    [row] = [line for line in result.stdout.splitlines() if line.startswith("demo:heartbeat ")]
    assert "DemoHeartbeat" in row
    assert "[demo]" in row


def test_planes_run_streams_from_the_plugin_exchange_into_the_plugin_plane(sites: Sites) -> None:
    out = sites.work / "demo-counts.json"
    result = planes(
        sites.demo,
        sites.work,
        "run",
        "--headless",
        "--duration",
        "3",
        "--set",
        "market.source=demoex",
        "--set",
        f"plugins.settings.demo.out={out}",
        "--set",
        "logging.format=json",
        "--set",
        f"runtime.data_dir={sites.work / 'var'}",
    )
    assert result.returncode == 0, result.stderr
    counts = json.loads(out.read_text())
    assert counts["tickers"] > 0
    assert counts["heartbeats_published"] > 0
    assert counts["heartbeats_received"] == counts["heartbeats_published"]
    assert counts["disconnected"] == 1
    assert counts["tickers_after_disconnect"] == 0  # disconnect really stopped the exchange
    logs = json_logs(result.stderr)
    [starting] = [e for e in logs if e["event"] == "runtime.starting"]
    assert "demo/demo_counter" in starting["components"]
    lifecycle = [e["lifecycle"] for e in logs if e["event"] == "control.lifecycle"]
    assert lifecycle == ["STARTING", "RUNNING", "STOPPING", "STOPPED"]
    assert not [e for e in logs if e["level"] in {"error", "critical"}]


def test_a_broken_plugin_fails_start_up_unless_optional(sites: Sites) -> None:
    listed = planes(sites.broken, sites.work, "plugins")
    assert listed.returncode == 1
    assert "'broken' (entry point)" in listed.stderr
    failed = planes(sites.broken, sites.work, "run", "--headless", "--duration", "1")
    assert failed.returncode != 0
    assert "plugin 'broken'" in failed.stderr
    assert "ImportError: planes_broken_plugin needs libfoo" in failed.stderr

    skipped = planes(
        sites.broken,
        sites.work,
        "run",
        "--headless",
        "--duration",
        "1",
        "--set",
        'plugins.optional=["broken"]',
        "--set",
        "logging.format=json",
    )
    assert skipped.returncode == 0, skipped.stderr
    logs = json_logs(skipped.stderr)
    assert [e["plugin"] for e in logs if e["event"] == "plugins.skipped"] == ["broken"]
    lifecycle = [e["lifecycle"] for e in logs if e["event"] == "control.lifecycle"]
    assert lifecycle == ["STARTING", "RUNNING", "STOPPING", "STOPPED"]
