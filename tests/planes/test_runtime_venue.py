"""``execution.venue`` must name a venue the runtime built, or start-up fails naming it.

A mistyped venue used to leave every venue idle: approvals, no orders, no error.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from collections.abc import Sequence
from pathlib import Path

import pytest

from contracts.ports import ComponentContext, ExchangeSpec, PlaneSpec
from contracts.risk import ApprovedIntent
from contracts.topics import EXEC_ORDER_EVENT, RISK_APPROVED
from planes.config import Config, load_config
from planes.runtime import Runtime, RuntimeStartError
from plugins.builtin import BUILTIN_PLUGINS
from plugins.hookspecs import hookimpl

ROOT = Path(__file__).resolve().parents[2]
PLANES = Path(sys.executable).parent / "planes"
EXECUTION = ("planes.execution", "planes.execution.plugin")
PLUGIN = "planes_test_demo_venue"


def config(*sets: str, environ: dict[str, str] | None = None, path: Path | None = None) -> Config:
    return load_config(
        path, ["plugins.entry_points=false", *sets], environ or {}, use_default_file=False
    )


def start_error(runtime: Runtime) -> str:
    with pytest.raises(RuntimeStartError) as info:
        runtime.assemble()
    return str(info.value)


class DemoVenue:
    """A plugin's execution venue: an execution-plane component with a ``venue`` name."""

    name = "demo_execution"
    venue = "demo"

    def __init__(self, ctx: ComponentContext) -> None:
        self.ctx = ctx

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


@pytest.fixture
def demo_plugin(monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    module = types.ModuleType(PLUGIN)

    @hookimpl
    def planes_register_planes() -> Sequence[PlaneSpec]:
        return [PlaneSpec(name="demo_execution", plane="execution", factory=DemoVenue)]

    module.planes_register_planes = planes_register_planes  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, PLUGIN, module)
    return (PLUGIN, PLUGIN)


def test_an_unknown_venue_fails_assembly_naming_it_its_origin_and_the_known_ones() -> None:
    runtime = Runtime(config("execution.venue=papr"), builtin=[EXECUTION])

    message = start_error(runtime)

    assert message == (
        "execution.venue: 'papr' is not a registered venue (known: bybit, paper) "
        "(from --set execution.venue=papr)"
    )


def test_the_origin_of_an_unknown_venue_may_be_the_environment_or_a_file(tmp_path: Path) -> None:
    env = {"PLANES__EXECUTION__VENUE": "papr"}
    message = start_error(Runtime(config(environ=env), builtin=[EXECUTION]))
    assert "(from environment variable PLANES__EXECUTION__VENUE)" in message

    path = tmp_path / "bot.toml"
    path.write_text('[execution]\nvenue = "Paper"\n', encoding="utf-8")
    message = start_error(Runtime(config(path=path), builtin=[EXECUTION]))
    assert "'Paper' is not a registered venue" in message
    assert f"(from file {path})" in message


def test_the_built_in_venues_are_known(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANES_TEST_KEY", "key")  # the Bybit venue, selected, reads its keys
    monkeypatch.setenv("PLANES_TEST_SECRET", "secret")
    keys = (
        "execution.bybit.api_key_env=PLANES_TEST_KEY",
        "execution.bybit.api_secret_env=PLANES_TEST_SECRET",
    )
    for venue in ("paper", "bybit"):
        runtime = Runtime(config(f"execution.venue={venue}", *keys), builtin=[EXECUTION])
        runtime.assemble()

        assert runtime.venues == {
            "paper": "execution/paper_execution",
            "bybit": "execution/bybit_execution",
        }


def test_a_plugin_adds_a_venue(demo_plugin: tuple[str, str]) -> None:
    runtime = Runtime(config("execution.venue=demo"), builtin=[EXECUTION, demo_plugin])
    runtime.assemble()
    assert runtime.venues["demo"] == "execution/demo_execution"

    other = Runtime(config("execution.venue=dmeo"), builtin=[EXECUTION, demo_plugin])
    assert "(known: bybit, demo, paper)" in start_error(other)


def test_a_runtime_without_venues_has_no_venue_to_check() -> None:
    # Analytics and research rigs run planes without the execution plane.
    builtin = [plugin for plugin in BUILTIN_PLUGINS if plugin != EXECUTION]
    runtime = Runtime(config("execution.venue=papr"), builtin=builtin)

    runtime.assemble()

    assert runtime.venues == {}


@pytest.mark.subprocess
@pytest.mark.slow
def test_planes_run_with_an_unknown_venue_exits_1_before_trading(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(PLANES), "run", "--headless", "--duration", "5",
            "--set", "execution.venue=papr",
            "--set", f"runtime.data_dir={tmp_path}",
            "--set", "plugins.entry_points=false",
        ],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("PLANES__")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )  # fmt: skip

    assert result.returncode == 1
    assert "execution.venue: 'papr' is not a registered venue (known: bybit, paper)" in (
        result.stderr
    )
    assert "(from --set execution.venue=papr)" in result.stderr
    assert "RUNNING" not in result.stderr


class DemoAdapter:
    """An exchange's execution adapter (``ExchangeSpec.execution``): records the approvals."""

    name = "demoex_execution"

    def __init__(self, ctx: ComponentContext, venue: str = "demoex") -> None:
        self.venue = venue
        self.bus = ctx.bus
        self.approved: list[ApprovedIntent] = []

    async def start(self) -> None:
        if self.bus.may_publish(EXEC_ORDER_EVENT):  # an execution-plane component's rights
            self.bus.subscribe(RISK_APPROVED, self.approved.append)

    async def stop(self) -> None:
        return None


def exchange_plugin(monkeypatch: pytest.MonkeyPatch, venue: str = "demoex") -> tuple[str, str]:
    name = f"{PLUGIN}_exchange"
    module = types.ModuleType(name)

    @hookimpl
    def planes_register_exchanges() -> Sequence[ExchangeSpec]:
        return [ExchangeSpec("demoex", execution=lambda ctx: DemoAdapter(ctx, venue))]

    module.planes_register_exchanges = planes_register_exchanges  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, name, module)
    return (name, name)


async def test_an_exchanges_execution_adapter_is_a_venue_that_trades_when_selected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = ROOT / "tests" / "data" / "ohlcv" / "btcusdt_1h_500.csv"
    runtime = Runtime(
        config(
            "execution.venue=demoex",
            "runtime.clock=historical",
            "runtime.start=2024-01-01T00:00:00Z",
            "market.source=replay",
            f"market.replay.path={data}",
            'market.symbols=["BTCUSDT"]',
            "analytics.features=[]",
            "analytics.context=false",
            "observability.status_interval_s=0",
            "risk.stale_data_s=0",
            'strategy.scenarios=[{id = "x", strategy = "sma_cross", '
            'params = {fast = 3, slow = 8, qty = "0.1"}}]',
        ),
        builtin=[*BUILTIN_PLUGINS, exchange_plugin(monkeypatch)],
    )
    runtime.assemble()
    assert runtime.venues["demoex"] == "execution/demoex_execution"
    order = [f"{plane}/{type(c).__name__}" for plane, _, c in runtime.components]
    assert order.index("execution/DemoAdapter") < order.index("strategy/StrategyManager")
    await runtime.run()
    (adapter,) = [c for _, _, c in runtime.components if isinstance(c, DemoAdapter)]
    assert adapter.approved  # sma_cross entered; the paper venue stayed idle
    assert {a.intent.symbol for a in adapter.approved} == {"BTCUSDT"}


def test_an_adapter_whose_venue_is_not_its_exchanges_name_fails_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime = Runtime(config(), builtin=[EXECUTION, exchange_plugin(monkeypatch, "other")])
    assert start_error(runtime) == (
        f"plugin '{PLUGIN}_exchange': the execution adapter of exchange 'demoex' has venue "
        "'other': it must be 'demoex', the name execution.venue selects it by"
    )
