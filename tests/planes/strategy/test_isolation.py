"""What a strategy returns, what its view lets it touch, and what a scenario may ask for.

A ``Bench`` is a StrategyManager on a bare EventBus with test strategies in its catalog; the
market and analytics planes are played by the test. Scenario ``bad`` always comes before
``good`` on the same symbol, so isolation is seen on the bar that goes wrong: ``good`` still
gets it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

import attrs
import pytest

from contracts.analytics import FeatureVector
from contracts.enums import OrderType, Side
from contracts.market import KlineEvent
from contracts.meta import Payload
from contracts.ports import StrategySpec
from contracts.rights import rights_for
from contracts.state import RegistryChanged
from contracts.strategy import Intent, IntentDraft, ScenarioDisabled
from contracts.system import Alert
from contracts.topics import ANALYTICS_FEATURES, MARKET_KLINE, STATE_REGISTRY, Topic, TopicRegistry
from planes.analytics.context import REGIMES as BUILDER_REGIMES
from planes.bus import EventBus
from planes.clock import HistoricalClock
from planes.config import load_config
from planes.runtime import PlaneContext, Runtime, RuntimeStartError
from planes.strategy.builtin import BUILTIN_STRATEGIES
from planes.strategy.manager import REGIMES, ScenarioError, StrategyManager, draft_problem

T0 = 1_704_067_200_000
BUY = IntentDraft(Side.BUY, size_hint=Decimal(1), reason="test")


class Returns:
    """Returns ``value`` (called with the event, when callable) for every event (test strategy)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def on_event(self, topic: Topic[Any], payload: Payload, view: Any) -> Any:
        return self.value(payload, view) if callable(self.value) else self.value


def returning(value: Any) -> StrategySpec:
    return StrategySpec("bad", lambda params: Returns(value))


def _buy_on_bars(payload: Payload, view: Any) -> list[IntentDraft]:
    return [BUY] if isinstance(payload, KlineEvent) else []


GOOD = StrategySpec("good", lambda params: Returns(_buy_on_bars))


class Bench:
    """A StrategyManager with ``bad`` then ``good`` on BTCUSDT, and the planes around it."""

    def __init__(
        self,
        bad: StrategySpec,
        *sets: str,
        scenarios: str | None = None,
        storage: bool = False,
        more: tuple[StrategySpec, ...] = (),
    ) -> None:
        scenarios = scenarios or (
            '{id = "bad", strategy = "bad", symbols = ["BTCUSDT"]}, '
            '{id = "good", strategy = "good", symbols = ["BTCUSDT"]}'
        )
        config = load_config(
            None,
            [
                'market.symbols=["BTCUSDT", "ETHUSDT"]',
                f"strategy.scenarios=[{scenarios}]",
                f"storage.enabled={'true' if storage else 'false'}",
                *sets,
            ],
            environ={},
            use_default_file=False,
        )
        self.clock = HistoricalClock(T0)
        self.bus = EventBus(TopicRegistry(), now_ms=self.clock.now_ms)
        self.bus.register_topic(STATE_REGISTRY, "planes.storage")
        self.journal: list[Payload] = []
        self.bus.subscribe_all(lambda t, p: self.journal.append(p))
        catalog = {s.name: s for s in (*BUILTIN_STRATEGIES, bad, GOOD, *more)}
        handle = self.bus.handle("strategy", *rights_for("strategy"))
        self.manager = StrategyManager(
            PlaneContext(handle, self.clock, config, {}, {}, catalog, {})
        )
        asyncio.run(self.manager.start())
        self.market = self.bus.handle("market", *rights_for("market"))
        self.analytics = self.bus.handle("analytics", *rights_for("analytics"))
        self.storage = self.bus.handle("storage", *rights_for("storage"))
        self.bars = 0

    def of(self, kind: type[Any]) -> list[Any]:
        return [p for p in self.journal if isinstance(p, kind)]

    def kline(self, symbol: str = "BTCUSDT") -> None:
        self.bars += 1
        self.clock.advance_to(T0 + self.bars * 60_000)
        end, close = self.clock.now_ms(), Decimal(100)
        bar = KlineEvent(
            self.market.meta(), "test", symbol, "1", end - 60_000, end - 1,
            close, close, close, close, Decimal(1), closed=True,
        )  # fmt: skip
        self.market.publish(MARKET_KLINE, bar)

    def features(self, values: dict[str, float], symbol: str = "BTCUSDT") -> FeatureVector:
        vector = FeatureVector(self.analytics.meta(), symbol, "1", self.clock.now_ms(), values)
        self.analytics.publish(ANALYTICS_FEATURES, vector)
        return vector

    def assert_isolated(self, *fragments: str, bars: int) -> None:
        """``bad`` was disabled once, saying ``fragments``; ``good`` got all ``bars`` bars."""
        (disabled,) = self.of(ScenarioDisabled)
        assert disabled.scenario_id == "bad"
        (alert,) = [a for a in self.of(Alert) if a.code == "scenario_failed"]
        assert alert.labels == {"scenario": "bad", "symbol": "BTCUSDT"}
        assert alert.message.startswith("scenario bad disabled: strategy bad ")
        for fragment in fragments:
            assert fragment in alert.message
            assert fragment in disabled.reason
        assert self.manager.enabled == {"good"}
        intents = self.of(Intent)
        assert [i.scenario_id for i in intents] == ["good"] * bars


# -- what a strategy returns ---------------------------------------------------------------------


def _raising_generator(payload: Payload, view: Any) -> Iterator[IntentDraft]:
    yield BUY
    raise ZeroDivisionError("in the generator")


@pytest.mark.parametrize(
    ("value", "fragments"),
    [
        (5, ["returned 5 (int), not a sequence of IntentDrafts"]),
        (BUY, ["returned a single IntentDraft, not a sequence of them", "Side.BUY"]),
        (object(), ["(object), not a sequence"]),
        (True, ["returned True (bool)"]),
        ("buy", ["returned 'buy' (str), not a sequence"]),
        ({BUY}, ["(set), not a sequence"]),
        ({BUY: 1}, ["(dict), not a sequence"]),
        ([BUY, "sell"], ["returned 'sell' (str) among its drafts"]),
        (_raising_generator, ["raised ZeroDivisionError: in the generator"]),
    ],
    ids=["int", "one-draft", "object", "true", "str", "set", "dict", "str-inside", "generator"],
)
def test_a_bad_return_on_a_bar_disables_its_scenario_and_the_bar_goes_on(
    value: Any, fragments: list[str]
) -> None:
    bench = Bench(returning(value))
    bench.kline()
    bench.kline()
    bench.assert_isolated(*fragments, bars=2)


def test_a_bad_return_on_a_feature_vector_is_isolated_the_same_way() -> None:
    bench = Bench(returning(lambda p, v: 7 if isinstance(p, FeatureVector) else []))
    bench.features({"sma": 1.0})
    bench.kline()
    bench.assert_isolated("returned 7 (int)", bars=1)


def test_a_bool_that_raises_is_the_strategy_raising() -> None:
    class Ambiguous:
        def __bool__(self) -> bool:
            raise ValueError("truth value is ambiguous")

    bench = Bench(returning(Ambiguous()))
    bench.kline()
    bench.assert_isolated("raised ValueError: truth value is ambiguous", bars=1)


def test_a_return_whose_repr_raises_is_still_isolated() -> None:
    class Opaque:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    bench = Bench(returning(Opaque()))
    bench.kline()
    bench.assert_isolated("returned <Opaque whose repr raises> (Opaque)", bars=1)


@pytest.mark.parametrize("value", [[], (), None, 0], ids=["list", "tuple", "none", "zero"])
def test_a_falsy_return_is_nothing(value: Any) -> None:
    bench = Bench(returning(value))
    bench.kline()
    assert bench.of(ScenarioDisabled) == []
    assert [i.scenario_id for i in bench.of(Intent)] == ["good"]


def test_a_tuple_or_a_generator_of_drafts_is_accepted() -> None:
    sell = IntentDraft(Side.SELL, size_hint=Decimal(2), reduce_only=True)
    bench = Bench(returning(lambda p, v: (d for d in (BUY, sell))))
    bench.kline()
    bench.kline()
    assert bench.of(ScenarioDisabled) == []
    mine = [(i.side, i.size_hint) for i in bench.of(Intent) if i.scenario_id == "bad"]
    assert mine == [(Side.BUY, Decimal(1)), (Side.SELL, Decimal(2))] * 2


# -- what a draft holds --------------------------------------------------------------------------

BAD_DRAFTS: list[tuple[dict[str, Any], str]] = [
    ({"side": "buy"}, "side is 'buy' (str), not a contracts.enums.Side"),
    ({"side": None}, "side is None (NoneType)"),
    ({"order_type": "limit", "limit_price": Decimal(9)}, "order_type is 'limit' (str)"),
    ({"size_hint": 0.5}, "size_hint is 0.5 (float), not None or a finite Decimal > 0"),
    ({"size_hint": 1}, "size_hint is 1 (int)"),
    ({"size_hint": Decimal(0)}, "size_hint is Decimal('0') (Decimal)"),
    ({"size_hint": Decimal(-1)}, "size_hint is Decimal('-1')"),
    ({"size_hint": Decimal("NaN")}, "size_hint is Decimal('NaN')"),
    ({"size_hint": Decimal("Infinity")}, "size_hint is Decimal('Infinity')"),
    ({"target_exposure": 0.5}, "target_exposure is 0.5 (float), not None or a finite Decimal"),
    ({"target_exposure": Decimal("-Infinity")}, "target_exposure is Decimal('-Infinity')"),
    ({"order_type": OrderType.LIMIT}, "limit_price is None (NoneType), not a finite Decimal > 0"),
    ({"order_type": OrderType.STOP}, "stop_price is None (NoneType), not a finite Decimal > 0"),
    ({"limit_price": Decimal(-5)}, "limit_price is Decimal('-5')"),
    ({"order_type": OrderType.STOP, "stop_price": 99.5}, "stop_price is 99.5 (float)"),
    ({"reduce_only": "yes"}, "reduce_only is 'yes' (str), not a bool"),
    ({"reason": 42}, "reason is 42 (int), not a str"),
]


@pytest.mark.parametrize(("changes", "fragment"), BAD_DRAFTS, ids=[m for _, m in BAD_DRAFTS])
def test_a_bad_draft_disables_its_scenario_naming_the_field_and_the_value(
    changes: dict[str, Any], fragment: str
) -> None:
    bad = attrs.evolve(BUY, **changes)
    bench = Bench(returning([BUY, bad]))  # the good draft before it does not go out either
    bench.kline()
    bench.kline()
    bench.assert_isolated("returned an IntentDraft whose", fragment, bars=2)


def test_a_bad_exit_is_caught_even_while_the_regime_drops_entries() -> None:
    exit_ = IntentDraft("sell", size_hint=Decimal(1), reduce_only=True)  # type: ignore[arg-type]
    scenarios = (
        '{id = "bad", strategy = "bad", symbols = ["BTCUSDT"], regime = "up_low"}, '
        '{id = "good", strategy = "good", symbols = ["BTCUSDT"]}'
    )
    bench = Bench(returning([exit_]), scenarios=scenarios)
    bench.kline()
    bench.assert_isolated("side is 'sell' (str)", bars=1)


GOOD_DRAFTS = [
    IntentDraft(Side.BUY),
    IntentDraft(Side.SELL, target_exposure=Decimal("-0.5")),
    IntentDraft(Side.SELL, target_exposure=Decimal(0), reduce_only=True),
    IntentDraft(Side.BUY, Decimal("0.01"), order_type=OrderType.LIMIT, limit_price=Decimal(99)),
    IntentDraft(Side.BUY, order_type=OrderType.STOP, stop_price=Decimal(101), reason="x"),
    IntentDraft(Side.BUY, limit_price=Decimal(1), stop_price=Decimal(2)),  # ignored on market
]


@pytest.mark.parametrize("draft", GOOD_DRAFTS, ids=[str(k) for k in range(len(GOOD_DRAFTS))])
def test_valid_drafts_go_out_as_they_are(draft: IntentDraft) -> None:
    assert draft_problem(draft) is None
    bench = Bench(returning([draft]))
    bench.kline()
    assert bench.of(ScenarioDisabled) == []
    (intent,) = [i for i in bench.of(Intent) if i.scenario_id == "bad"]
    fields = [f.name for f in attrs.fields(IntentDraft)]
    assert [getattr(intent, f) for f in fields] == [getattr(draft, f) for f in fields]


# -- the read-only view --------------------------------------------------------------------------


def test_a_strategy_cannot_change_the_features_others_see() -> None:
    refused: list[str] = []
    seen: list[dict[str, float]] = []

    def mutate(payload: Payload, view: Any) -> list[IntentDraft]:
        if isinstance(payload, FeatureVector):
            targets: tuple[Any, ...] = (view.features(), payload.values)  # typed read-only
            for target in targets:
                try:
                    target["sma"] = -1.0
                    del target["rsi"]
                except TypeError:
                    refused.append(type(target).__name__)
            assert view.features() is view.features()  # one read-only mapping per vector
        return []

    def watch(payload: Payload, view: Any) -> list[IntentDraft]:
        seen.append(dict(view.features()))
        if isinstance(payload, FeatureVector):
            seen.append(dict(payload.values))
        return []

    bench = Bench(
        returning(mutate),
        scenarios='{id = "bad", strategy = "bad"}, {id = "w", strategy = "w"}',
        more=(StrategySpec("w", lambda params: Returns(watch)),),
    )
    published = bench.features({"sma": 1.0, "rsi": 50.0})
    bench.kline()
    assert refused == ["mappingproxy", "mappingproxy"]
    assert published.values == {"sma": 1.0, "rsi": 50.0}
    assert seen == [{"sma": 1.0, "rsi": 50.0}] * 3  # the vector's view and values, the bar's view
    assert bench.of(ScenarioDisabled) == []


def test_the_view_has_read_only_empty_features_before_any_vector() -> None:
    got: list[Mapping[str, float]] = []
    bench = Bench(returning(lambda p, v: got.append(v.features())))
    bench.kline()
    with pytest.raises(TypeError):
        got[0]["x"] = 1.0  # type: ignore[index]
    assert dict(got[0]) == {}


# -- what a scenario may ask for -----------------------------------------------------------------


def test_the_regime_labels_are_the_ones_the_context_builder_publishes() -> None:
    assert set(BUILDER_REGIMES) == REGIMES


BAD_SCENARIOS = [
    ('{id = "", strategy = "sma_cross"}', (), "a scenario of strategy 'sma_cross' has an empty id"),
    ('{id = "  ", strategy = "breakout"}', (), "has an empty id"),
    (
        '{id = "t", strategy = "sma_cross", regime = "trending"}',
        (),
        "scenario 't' has regime 'trending', which analytics:context never publishes",
    ),
    (
        '{id = "t", strategy = "sma_cross", regime = "up_low", enabled = false}',
        ("analytics.context=false",),
        "scenario 't' has regime 'up_low' but analytics.context is off",
    ),
    (
        '{id = "s", strategy = "sma_cross", symbols = ["BTCUSDT", "SOLUSDT"]}',
        (),
        "scenario 's' trades ['SOLUSDT'], not in market.symbols ['BTCUSDT', 'ETHUSDT']",
    ),
    (
        '{id = "s", strategy = "sma_cross", symbols = ["BTCUSDT", "BTCUSDT"]}',
        (),
        "scenario 's' lists a symbol twice",
    ),
]


@pytest.mark.parametrize(
    ("scenario", "sets", "message"), BAD_SCENARIOS, ids=[m for _, _, m in BAD_SCENARIOS]
)
def test_a_scenario_that_could_never_act_fails_construction(
    scenario: str, sets: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ScenarioError) as caught:
        Bench(GOOD, *sets, scenarios=scenario)
    assert message in str(caught.value)


def test_a_scenario_that_could_never_act_fails_start_up() -> None:
    sets = [
        "runtime.mode=backtest",
        'strategy.scenarios=[{id = "t", strategy = "sma_cross", regime = "bull"}]',
    ]
    config = load_config(None, sets, environ={}, use_default_file=False)
    with pytest.raises(RuntimeStartError, match="regime 'bull'"):
        Runtime(config).assemble()


def test_a_registry_scenario_with_an_unknown_regime_is_refused_with_an_alert() -> None:
    bench = Bench(GOOD, scenarios='{id = "good", strategy = "good"}', storage=True)
    bench.storage.publish(
        STATE_REGISTRY,
        RegistryChanged(
            bench.storage.meta(),
            entity="scenario",
            entity_id="r",
            action="enabled",
            status="enabled",
            version="1",
            strategy="breakout",
            params={},
            regime="cluster_7",
            actor="cli",
        ),
    )
    (alert,) = bench.of(Alert)
    assert alert.code == "scenario_enable_failed"
    assert "regime 'cluster_7'" in alert.message
    assert bench.manager.enabled == {"good"}


def test_a_snapshot_scenario_on_a_symbol_gone_from_the_market_is_not_restored() -> None:
    bench = Bench(GOOD, scenarios='{id = "good", strategy = "good"}', storage=True)
    state = json.loads(json.dumps(bench.manager.export_state()))
    gone = {**state["scenarios"][0], "id": "old", "symbols": ["SOLUSDT"]}
    bench.manager.restore_state({**state, "scenarios": [*state["scenarios"], gone]})
    bench.manager.recovered()
    assert bench.manager.enabled == {"good"}
    (alert,) = bench.of(Alert)
    assert alert.code == "scenario_not_restored"
    assert "'old' trades ['SOLUSDT'], not in market.symbols" in alert.message
