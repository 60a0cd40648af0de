"""PluginHost with in-memory plugins: origins, versions, disabling, failures and optional skips.

Plugins here are modules made on the fly (``types.ModuleType`` in ``sys.modules``), handed to the
host as config module names or as ``importlib.metadata.EntryPoint`` objects, so nothing is
installed. ``test_thirdparty.py`` installs a real package.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import os
import shutil
import sys
import time
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import attrs
import pytest
from structlog.testing import capture_logs

from contracts.control import ControlState
from contracts.enums import Lifecycle, Side
from contracts.market import KlineEvent
from contracts.meta import EventMeta, Payload, Source
from contracts.ports import (
    ComponentContext,
    ExchangeSpec,
    NotifierSpec,
    PlaneSpec,
    StrategySpec,
)
from contracts.risk import ApprovedIntent
from contracts.strategy import Intent
from contracts.system import ErrorEvent
from contracts.topics import (
    CONTROL_STATE,
    ERROR_EVENT,
    MARKET_KLINE,
    RISK_APPROVED,
    Topic,
)
from planes.bus import PublishDeniedError
from planes.config import Config, PluginsSection
from planes.runtime import Runtime
from plugins.builtin import BUILTIN_PLUGINS
from plugins.hookspecs import hookimpl
from plugins.manager import BUILTIN, CONFIG, ENTRY_POINT, PluginError, PluginHost, installed
from plugins.template import plugin as template

OWN_VERSION = importlib.metadata.version("planes-bot")
_names = itertools.count()


@pytest.fixture
def make_plugin(monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Make a module whose attributes are the given hooks; return its importable name."""

    def make(**hooks: Callable[[], object]) -> str:
        name = f"planes_test_plugin_{next(_names)}"
        module = types.ModuleType(name)
        for hook_name, fn in hooks.items():
            setattr(module, hook_name, hookimpl(fn))
        monkeypatch.setitem(sys.modules, name, module)
        return name

    return make


@pytest.fixture
def broken_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real module on ``sys.path`` whose import raises ``ImportError``."""
    name = f"planes_test_broken_{next(_names)}"
    (tmp_path / f"{name}.py").write_text('raise ImportError("libfoo is missing")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def entry_points(**targets: str) -> Callable[[], list[importlib.metadata.EntryPoint]]:
    """An ``entry_point_source`` giving ``name = target`` in the ``planes`` group."""
    return lambda: [
        importlib.metadata.EntryPoint(name=name, value=value, group="planes")
        for name, value in targets.items()
    ]


def host(
    *,
    builtin: Sequence[tuple[str, str]] = (),
    eps: Mapping[str, str] | None = None,
    modules: Sequence[str] = (),
    disabled: Sequence[str] = (),
    optional: Sequence[str] = (),
) -> PluginHost:
    return PluginHost(
        builtin=builtin,
        entry_points=eps is not None,
        modules=modules,
        disabled=disabled,
        optional=optional,
        entry_point_source=entry_points(**(eps or {})),
    )


@attrs.frozen
class DemoPing(Payload):
    n: int


DEMO_PING = Topic("demo:ping", DemoPing, "a test topic")


def exchanges(*names: str) -> Callable[[], list[ExchangeSpec]]:
    return lambda: [ExchangeSpec(name=n) for n in names]


def _no_strategy(params: Mapping[str, object]) -> Any:
    raise NotImplementedError


def _no_notifier(ctx: ComponentContext) -> Any:
    raise NotImplementedError


def _no_component(ctx: ComponentContext) -> Any:
    raise NotImplementedError


def _boom() -> list[Any]:
    msg = "the venue list is unreachable"
    raise RuntimeError(msg)


# -- origins and versions --------------------------------------------------------------------


def test_builtin_plugins_are_recorded_with_origin_version_and_provisions() -> None:
    h = host(builtin=BUILTIN_PLUGINS)
    h.load()
    catalog = h.collect()
    assert [r.name for r in h.records] == [name for name, _ in BUILTIN_PLUGINS]
    for rec in h.records:
        assert (rec.origin, rec.version, rec.status) == (BUILTIN, OWN_VERSION, "loaded")
    provides = h.record("planes.market").provides
    assert provides["planes"] == ["gateway"]
    assert {"synthetic", "bybit", "replay"} <= set(provides["exchanges"])
    assert catalog.exchanges["synthetic"].owner == "planes.market"
    assert {owned.item.plane for owned in catalog.planes} >= {"market", "control"}


def test_entry_point_plugin_records_its_distribution_version(
    tmp_path: Path, make_plugin: Callable[..., str]
) -> None:
    module = make_plugin(planes_register_exchanges=exchanges("fakeex"))
    info = tmp_path / "planes_fake-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: planes-fake\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[planes]\nfake = {module}\n")
    dist = importlib.metadata.PathDistribution(info)
    h = PluginHost(entry_point_source=lambda: dist.entry_points.select(group="planes"))
    h.load()
    catalog = h.collect()
    rec = h.record("fake")
    assert (rec.origin, rec.version, rec.target, rec.status) == (
        ENTRY_POINT,
        "1.2.3",
        module,
        "loaded",
    )
    assert catalog.exchanges["fakeex"].owner == "fake"


def _dist_info(folder: Path, name: str, version: str, entry_points: str) -> None:
    info = folder / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(entry_points)


def test_installed_entry_points_are_read_again_once_a_distribution_comes_or_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_plugin: Callable[..., str]
) -> None:
    module = make_plugin(planes_register_exchanges=exchanges("sweptex"))
    monkeypatch.syspath_prepend(str(tmp_path))
    os.utime(tmp_path)  # changed just now: what is read now is not kept yet
    assert installed() is not installed()
    past = time.time_ns() - 60 * 10**9
    os.utime(tmp_path, ns=(past, past))  # settled, as site-packages is between installs
    before = installed()
    assert installed() is before  # nothing changed: not read again
    assert "swept" not in {ep.name for ep, _ in before.entry_points}

    _dist_info(tmp_path, "planes_swept", "2.0.1", f"[planes]\nswept = {module}\n")
    h = PluginHost()
    h.load()

    assert (h.record("swept").origin, h.record("swept").version) == (ENTRY_POINT, "2.0.1")
    assert h.collect().exchanges["sweptex"].owner == "swept"
    assert installed().version == OWN_VERSION
    shutil.rmtree(tmp_path / "planes_swept-2.0.1.dist-info")
    assert "swept" not in {ep.name for ep, _ in installed().entry_points}


def test_a_module_registers_its_marked_hooks_only(make_plugin: Callable[..., str]) -> None:
    name = make_plugin(planes_register_exchanges=exchanges("markedex"))
    module = sys.modules[name]
    module.planes_register_strategies = lambda: [StrategySpec("unmarked", _no_strategy)]  # type: ignore[attr-defined]
    marked = hookimpl(lambda self: [DEMO_PING])
    module.planes_register_topics = types.MethodType(marked, object())  # type: ignore[attr-defined]
    module.helper = hookimpl(exchanges("renamed"))  # type: ignore[attr-defined]

    with pytest.raises(PluginError, match="unknown hook 'helper'"):
        host(modules=[name]).load()  # a marked function of no hook's name fails, as in pluggy

    del module.helper
    h = host(modules=[name])
    h.load()
    catalog = h.collect()
    assert set(catalog.exchanges) == {"markedex"}
    assert [owned.item for owned in catalog.topics] == [DEMO_PING]  # a bound method counts
    assert "unmarked" not in catalog.strategies


def test_config_module_records_origin_and_the_version_of_its_distribution() -> None:
    target = "plugins.template.plugin"
    h = host(modules=[target])
    h.load()
    h.collect()
    rec = h.record(target)
    assert (rec.origin, rec.version, rec.status) == (CONFIG, OWN_VERSION, "loaded")
    assert rec.provides == {
        "topics": ["example:pulse"],
        "planes": ["pulse_counter"],
        "exchanges": ["example"],
        "strategies": ["threshold_cross"],
        "notifiers": ["list"],
    }


def test_an_uninstalled_config_module_has_no_version(make_plugin: Callable[..., str]) -> None:
    module = make_plugin(planes_register_exchanges=exchanges("x"))
    h = host(modules=[module])
    h.load()
    assert h.record(module).version == "-"


def test_load_order_is_builtin_then_entry_points_by_name_then_config(
    make_plugin: Callable[..., str],
) -> None:
    a, b, c = (make_plugin(planes_register_exchanges=exchanges(f"ex{i}")) for i in range(3))
    h = host(builtin=[("core", a)], eps={"zeta": b, "alpha": c}, modules=[make_plugin()])
    h.load()
    assert [(r.name, r.origin) for r in h.records][:3] == [
        ("core", BUILTIN),
        ("alpha", ENTRY_POINT),
        ("zeta", ENTRY_POINT),
    ]
    assert h.records[3].origin == CONFIG
    assert list(h.collect().exchanges) == ["ex0", "ex2", "ex1"]


def test_a_hook_returning_none_provides_nothing(make_plugin: Callable[..., str]) -> None:
    h = host(eps={"quiet": make_plugin(planes_register_exchanges=lambda: None)})
    h.load()
    assert h.collect().exchanges == {}
    assert h.record("quiet").status == "loaded"


# -- disabled --------------------------------------------------------------------------------


def test_disabled_plugin_is_not_even_imported(broken_module: str) -> None:
    h = host(eps={"broken": broken_module}, disabled=["broken"])
    h.load()
    h.collect()
    assert h.record("broken").status == "disabled"
    assert broken_module not in sys.modules


def test_a_builtin_plugin_can_be_disabled_by_name() -> None:
    h = host(builtin=BUILTIN_PLUGINS, disabled=["planes.observability"])
    h.load()
    catalog = h.collect()
    assert h.record("planes.observability").status == "disabled"
    assert "observability" not in {owned.item.plane for owned in catalog.planes}
    assert not h.pm.has_plugin("planes.observability")


def test_disabling_an_unknown_name_is_logged() -> None:
    h = host(builtin=BUILTIN_PLUGINS, disabled=["no.such.plugin"])
    with capture_logs() as logs:
        h.load()
    [warning] = [e for e in logs if e["event"] == "plugins.disabled_unknown"]
    assert warning["names"] == ["no.such.plugin"]


# -- import failures -------------------------------------------------------------------------


def test_import_error_fails_naming_plugin_and_cause(broken_module: str) -> None:
    h = host(eps={"broken": broken_module})
    with pytest.raises(PluginError, match=r"'broken' \(entry point\).*ImportError: libfoo"):
        h.load()
    assert h.record("broken").status == "failed"


def test_missing_config_module_fails_naming_it() -> None:
    h = host(modules=["planes_no_such_module_xyz"])
    with pytest.raises(PluginError, match=r"planes_no_such_module_xyz.*ModuleNotFoundError"):
        h.load()


def test_import_error_is_skipped_when_optional(
    broken_module: str, make_plugin: Callable[..., str]
) -> None:
    good = make_plugin(planes_register_exchanges=exchanges("goodex"))
    h = host(eps={"broken": broken_module, "good": good}, optional=["broken"])
    with capture_logs() as logs:
        h.load()
    catalog = h.collect()
    rec = h.record("broken")
    assert rec.status == "skipped"
    assert "ImportError: libfoo is missing" in rec.error
    assert [e["plugin"] for e in logs if e["event"] == "plugins.skipped"] == ["broken"]
    assert list(catalog.exchanges) == ["goodex"]


def test_an_unknown_hook_name_fails_naming_the_plugin(make_plugin: Callable[..., str]) -> None:
    typo = make_plugin(planes_register_exchange=exchanges("x"))  # no trailing "s"
    h = host(eps={"typo": typo})
    with pytest.raises(PluginError, match=r"'typo'.*unknown hook 'planes_register_exchange'"):
        h.load()
    skipping = host(eps={"typo": typo}, optional=["typo"])
    skipping.load()
    assert skipping.record("typo").status == "skipped"
    assert not skipping.pm.has_plugin("typo")


# -- hook failures ---------------------------------------------------------------------------


def test_a_raising_hook_fails_naming_plugin_hook_and_cause(
    make_plugin: Callable[..., str],
) -> None:
    h = host(eps={"flaky": make_plugin(planes_register_exchanges=_boom)})
    h.load()
    with pytest.raises(
        PluginError,
        match=r"'flaky'.*raised in planes_register_exchanges: RuntimeError: the venue list",
    ):
        h.collect()
    assert h.record("flaky").status == "failed"


def test_an_optional_plugin_whose_hook_raises_contributes_nothing(
    make_plugin: Callable[..., str],
) -> None:
    # Everything before the raising hook succeeded; none of it may survive.
    flaky = make_plugin(
        planes_register_topics=lambda: [DEMO_PING],
        planes_register_planes=lambda: [PlaneSpec("c", "demo", _no_component, ("demo:*",))],
        planes_register_exchanges=exchanges("flakyex"),
        planes_register_strategies=lambda: [StrategySpec("flaky_strategy", _no_strategy)],
        planes_register_notifiers=_boom,
    )
    good = make_plugin(planes_register_exchanges=exchanges("goodex"))
    h = host(eps={"flaky": flaky, "good": good}, optional=["flaky"])
    h.load()
    catalog = h.collect()
    rec = h.record("flaky")
    assert rec.status == "skipped"
    assert "planes_register_notifiers" in rec.error
    assert rec.provides == {}
    assert catalog.topics == []
    assert catalog.planes == []
    assert list(catalog.exchanges) == ["goodex"]
    assert catalog.strategies == {}
    assert not h.pm.has_plugin("flaky")


@pytest.mark.parametrize(
    ("hook", "result", "expected"),
    [
        ("planes_register_exchanges", "demoex", "must return a list of ExchangeSpec, got str"),
        ("planes_register_exchanges", ExchangeSpec("x"), "got ExchangeSpec"),
        ("planes_register_strategies", {"a": 1}, "must return a list of StrategySpec, got dict"),
        ("planes_register_exchanges", [StrategySpec("s", _no_strategy)], "not a ExchangeSpec"),
        ("planes_register_topics", ["demo:ping"], "'demo:ping', which is not a Topic"),
        ("planes_register_notifiers", [ExchangeSpec("x")], "not a NotifierSpec"),
    ],
)
def test_a_hook_returning_the_wrong_thing_fails_naming_the_plugin(
    make_plugin: Callable[..., str], hook: str, result: object, expected: str
) -> None:
    h = host(eps={"sloppy": make_plugin(**{hook: lambda: result})})
    h.load()
    with pytest.raises(PluginError, match="plugin 'sloppy'") as info:
        h.collect()
    assert expected in str(info.value)


def test_a_wrong_result_is_skipped_when_optional(make_plugin: Callable[..., str]) -> None:
    h = host(
        eps={"sloppy": make_plugin(planes_register_exchanges=lambda: "x")}, optional=["sloppy"]
    )
    h.load()
    assert h.collect().exchanges == {}
    assert h.record("sloppy").status == "skipped"


# -- name clashes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hook", "spec", "kind"),
    [
        ("planes_register_exchanges", ExchangeSpec("same"), "exchange"),
        ("planes_register_strategies", StrategySpec("same", _no_strategy), "strategy"),
        ("planes_register_notifiers", NotifierSpec("same", _no_notifier), "notifier"),
    ],
)
def test_two_plugins_registering_one_name_fail_naming_both(
    make_plugin: Callable[..., str], hook: str, spec: object, kind: str
) -> None:
    first = make_plugin(**{hook: lambda: [spec]})
    second = make_plugin(**{hook: lambda: [spec]})
    h = host(eps={"first": first, "second": second})
    h.load()
    with pytest.raises(PluginError, match=f"{kind} 'same' from plugin 'second'.*plugin 'first'"):
        h.collect()


def test_a_plugin_name_registered_twice_fails(make_plugin: Callable[..., str]) -> None:
    h = host(
        builtin=[("twice", make_plugin(planes_register_exchanges=exchanges("a")))],
        eps={"twice": make_plugin(planes_register_exchanges=exchanges("b"))},
    )
    with pytest.raises(PluginError, match=r"'twice' \(entry point\).*already taken by the builtin"):
        h.load()


def test_an_optional_duplicate_name_is_skipped_and_the_first_plugin_kept(
    make_plugin: Callable[..., str],
) -> None:
    h = host(
        builtin=[("twice", make_plugin(planes_register_exchanges=exchanges("a")))],
        eps={"twice": make_plugin(planes_register_exchanges=exchanges("b"))},
        optional=["twice"],
    )
    h.load()
    assert [r.status for r in h.records] == ["loaded", "skipped"]
    assert list(h.collect().exchanges) == ["a"]


# -- class targets ---------------------------------------------------------------------------


class ClassPlugin:
    """A plugin written as a class; the host instantiates it with no arguments."""

    def __init__(self) -> None:
        self.prefix = "cls"

    @hookimpl
    def planes_register_exchanges(self) -> list[ExchangeSpec]:
        return [ExchangeSpec(f"{self.prefix}ex")]


@pytest.mark.parametrize("origin", [ENTRY_POINT, CONFIG])
def test_a_class_target_is_instantiated(monkeypatch: pytest.MonkeyPatch, origin: str) -> None:
    module = types.ModuleType("planes_test_class_plugin")
    module.ClassPlugin = ClassPlugin  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    target = f"{module.__name__}:ClassPlugin"
    h = host(eps={"cls": target}) if origin == ENTRY_POINT else host(modules=[target])
    h.load()
    name = h.records[0].name
    assert isinstance(h.pm.get_plugin(name), ClassPlugin)
    assert list(h.collect().exchanges) == ["clsex"]


# -- through the Runtime ---------------------------------------------------------------------


def runtime_with(**eps: str) -> Runtime:
    """A Runtime with the default config, the built-in plugins and ``eps`` as entry points."""
    return Runtime(Config(), entry_point_source=entry_points(**eps))


def test_a_plugin_topic_clashing_with_a_builtin_fails_assemble(
    make_plugin: Callable[..., str],
) -> None:
    clash = Topic("market:ticker", DemoPing, "pretends to be the ticker")
    runtime = runtime_with(clasher=make_plugin(planes_register_topics=lambda: [clash]))
    with pytest.raises(PluginError, match=r"plugin 'clasher'.*'market:ticker'.*builtin"):
        runtime.assemble()


class Recorder:
    """A component that keeps its context so the test can publish through its handle."""

    name = "recorder"

    def __init__(self, ctx: ComponentContext) -> None:
        self.ctx = ctx

    async def start(self) -> None:
        """Nothing to start."""

    async def stop(self) -> None:
        """Nothing to stop."""


@pytest.mark.parametrize("publishes", [("demo:*",), ("demo:*", "risk:*", "control:state")])
def test_a_plugin_plane_publishes_only_what_it_declared_and_never_reserved_topics(
    make_plugin: Callable[..., str], publishes: tuple[str, ...]
) -> None:
    plugin = make_plugin(
        planes_register_topics=lambda: [DEMO_PING],
        planes_register_planes=lambda: [PlaneSpec("recorder", "myplane", Recorder, publishes)],
    )
    runtime = runtime_with(demo=plugin)
    runtime.assemble()
    [recorder] = [c for plane, _, c in runtime.components if plane == "myplane"]
    assert isinstance(recorder, Recorder)
    bus = recorder.ctx.bus
    assert bus.plane == "myplane"
    assert bus.source is Source.SYSTEM
    pings: list[DemoPing] = []
    errors: list[ErrorEvent] = []
    bus.subscribe(DEMO_PING, pings.append)
    bus.subscribe(ERROR_EVENT, errors.append)

    bus.publish(DEMO_PING, DemoPing(bus.meta(), 1))
    assert [p.n for p in pings] == [1]

    intent = Intent(bus.meta(), "i1", "sc", "s", "BTCUSDT", Side.BUY)
    approved = ApprovedIntent(bus.meta(), intent, Decimal(1), "o1")
    with pytest.raises(
        PublishDeniedError, match="'myplane' may not publish 'risk:approved_intent'"
    ):
        bus.publish(RISK_APPROVED, approved)
    assert [e.topic for e in errors] == [RISK_APPROVED.name]
    with pytest.raises(PublishDeniedError, match="control:state"):
        bus.publish(CONTROL_STATE, ControlState(bus.meta(), Lifecycle.RUNNING, paused=False))


# -- the template is a working plugin --------------------------------------------------------


async def test_the_template_plugin_runs_in_a_runtime() -> None:
    target = "plugins.template.plugin"
    config = attrs.evolve(
        Config(),
        market=attrs.evolve(Config().market, source="example"),
        plugins=PluginsSection(
            entry_points=False, modules=(target,), settings={target: {"every": 2}}
        ),
    )
    runtime = Runtime(config)
    await runtime.run(0.5)
    [counter] = [c for plane, _, c in runtime.components if plane == "example"]
    assert isinstance(counter, template.PulseCounter)
    assert set(counter.seen) == set(config.market.symbols)
    assert all(n >= 2 for n in counter.seen.values())
    assert counter.pulses > 0
    assert runtime.bus.handler_errors == {}


class _View:
    symbol = "BTCUSDT"

    def now_ms(self) -> int:
        return 1_000

    def features(self) -> Mapping[str, float]:
        return {}

    def regime(self) -> str | None:
        return None

    def position(self) -> Decimal:
        return Decimal(0)


def test_the_template_strategy_emits_a_draft_on_each_cross() -> None:
    strategy = template.ThresholdCross({"threshold": 104.5, "size": 2})
    meta = EventMeta(Source.MARKET, 0, "corr")
    sides = []
    one = Decimal(1)
    for step in range(25):  # prices 110, 109 .. 100 .. 109, 110, 109 .. 106
        price = template.example_price(step)
        bar = KlineEvent(
            meta,
            "example",
            "BTCUSDT",
            "1",
            step,
            step + 1,
            price,
            price,
            price,
            price,
            one,
            closed=True,
        )
        for draft in strategy.on_event(MARKET_KLINE, bar, _View()):
            assert draft.size_hint == 2
            sides.append((step, draft.side))
    assert sides == [(6, Side.SELL), (15, Side.BUY)]


async def test_the_template_notifier_delivers_once_per_key() -> None:
    notifier = template.ListNotifier(cast("ComponentContext", None))
    await notifier.send("hello", dedupe_key="k1")
    await notifier.send("hello again", dedupe_key="k1")
    await notifier.send("bye", dedupe_key="k2")
    assert notifier.sent == ["hello", "bye"]
