"""Every payload survives the converter unchanged, and the converter's own rules hold."""

from __future__ import annotations

import json
import typing
from decimal import Decimal
from typing import Any

import attrs
import cattrs
import pytest
from attrs.exceptions import FrozenInstanceError
from cattrs.errors import ClassValidationError
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.control import ControlState
from contracts.converter import CONVERTER, fast_dumps, fast_loads, from_json, to_json
from contracts.enums import Lifecycle, OrderStatus, OrderType, Side
from contracts.execution import OrderEvent, PositionUpdate
from contracts.market import BookLevel, KlineEvent, TickerEvent, TradeEvent
from contracts.meta import EventMeta, Payload, Source
from contracts.risk import ApprovedIntent
from contracts.strategy import Intent
from contracts.topics import BotEventMap, Topic
from tests.strategies import finite_decimals, payloads

TOPICS = list(BotEventMap.values())
TOPIC_IDS = [topic.name for topic in TOPICS]

META = EventMeta(Source.TRADING, 1_700_000_000_000, "corr-1")


@pytest.mark.parametrize("topic", TOPICS, ids=TOPIC_IDS)
@given(data=st.data())
def test_payload_round_trips(topic: Topic[Any], data: st.DataObject) -> None:
    payload = data.draw(payloads(topic), label=topic.name)
    cls = type(payload)

    text = to_json(payload)
    back = from_json(text, cls)
    assert back == payload
    # Byte-stable too: a Decimal keeps its exact string ("1.10" stays "1.10", not "1.1").
    assert to_json(back) == text
    assert CONVERTER.structure(CONVERTER.unstructure(payload), cls) == payload
    assert fast_loads(text, cls) == payload  # the journal's reader agrees
    assert fast_dumps(payload) == text  # and its writer writes the very same text


@pytest.mark.parametrize("topic", TOPICS, ids=TOPIC_IDS)
@settings(max_examples=3)
@given(data=st.data())
def test_payload_is_frozen_attrs(topic: Topic[Any], data: st.DataObject) -> None:
    assert attrs.has(topic.payload)
    assert issubclass(topic.payload, Payload)
    payload = data.draw(payloads(topic), label=topic.name)
    with pytest.raises(FrozenInstanceError):
        payload.meta = META
    with pytest.raises(FrozenInstanceError):
        payload.meta.ts = 0


@pytest.mark.parametrize("topic", TOPICS, ids=TOPIC_IDS)
def test_first_field_is_meta(topic: Topic[Any]) -> None:
    first = attrs.fields(attrs.resolve_types(topic.payload))[0]
    assert first.name == "meta"
    assert first.type is EventMeta


MONEY_FIELDS: dict[type[Any], tuple[str, ...]] = {
    OrderEvent: (
        "qty",
        "filled_qty",
        "price",
        "avg_fill_price",
        "last_fill_qty",
        "last_fill_price",
        "fee",
    ),
    PositionUpdate: (
        "qty",
        "avg_price",
        "realized_pnl",
        "unrealized_pnl",
        "mark_price",
        "equity",
        "cash",
    ),
    ApprovedIntent: ("qty",),
    Intent: ("size_hint", "target_exposure", "limit_price", "stop_price"),
    TickerEvent: (
        "last_price",
        "bid_price",
        "bid_size",
        "ask_price",
        "ask_size",
        "high_24h",
        "low_24h",
        "volume_24h",
        "turnover_24h",
        "price_24h_pcnt",
        "mark_price",
        "index_price",
        "open_interest",
        "funding_rate",
    ),
    KlineEvent: ("open", "high", "low", "close", "volume", "turnover"),
    TradeEvent: ("price", "qty"),
    BookLevel: ("price", "size"),
}


def _mentions_float(tp: Any) -> bool:
    if tp is float:
        return True
    if attrs.has(tp) and tp is not EventMeta:
        return any(_mentions_float(f.type) for f in attrs.fields(attrs.resolve_types(tp)))
    return any(_mentions_float(arg) for arg in typing.get_args(tp))


@pytest.mark.parametrize("cls", list(MONEY_FIELDS), ids=lambda cls: cls.__name__)
def test_money_fields_are_decimal(cls: type[Any]) -> None:
    fields = attrs.fields_dict(attrs.resolve_types(cls))
    for name in MONEY_FIELDS[cls]:
        assert fields[name].type in (Decimal, Decimal | None), f"{cls.__name__}.{name}"
    # Money classes hold no float at all, nested classes included (SPEC §2).
    floats = [name for name, field in fields.items() if _mentions_float(field.type)]
    assert floats == [], f"{cls.__name__} has float fields {floats}"


def _position(qty: Decimal) -> PositionUpdate:
    zero = Decimal(0)
    return PositionUpdate(META, "BTCUSDT", qty, zero, zero, zero, zero, zero, zero)


def _position_json(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(to_json(_position(Decimal(1))))
    data.update(overrides)
    return data


def test_decimal_serializes_as_its_exact_string() -> None:
    assert CONVERTER.unstructure(Decimal("17216.00")) == "17216.00"
    text = to_json(_position(Decimal("17216.00")))
    assert json.loads(text)["qty"] == "17216.00"
    assert str(from_json(text, PositionUpdate).qty) == "17216.00"


@given(finite_decimals)
def test_decimal_round_trips_exactly(value: Decimal) -> None:
    back = CONVERTER.structure(CONVERTER.unstructure(value), Decimal)
    assert back == value
    assert str(back) == str(value)


BAD_DECIMALS = [
    ("NaN", ValueError, "finite"),
    ("-NaN", ValueError, "finite"),
    ("sNaN", ValueError, "finite"),
    ("Infinity", ValueError, "finite"),
    ("-Infinity", ValueError, "finite"),
    ("inf", ValueError, "finite"),
    (float("nan"), ValueError, "finite"),
    (float("inf"), ValueError, "finite"),
    (True, TypeError, "boolean"),
    (False, TypeError, "boolean"),
    ("abc", ValueError, "expected a decimal number, got 'abc'"),
    ("", ValueError, "expected a decimal number"),
    ("1.2.3", ValueError, "expected a decimal number"),
    (None, TypeError, "NoneType"),
    ([1], TypeError, "list"),
]
BAD_DECIMAL_IDS = [repr(value) for value, _, _ in BAD_DECIMALS]


@pytest.mark.parametrize(("value", "error", "message"), BAD_DECIMALS, ids=BAD_DECIMAL_IDS)
def test_decimal_structuring_rejects(value: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        CONVERTER.structure(value, Decimal)


@pytest.mark.parametrize(("value", "error", "message"), BAD_DECIMALS, ids=BAD_DECIMAL_IDS)
def test_payload_with_bad_decimal_is_rejected_naming_the_field(
    value: object, error: type[Exception], message: str
) -> None:
    # json.dumps writes float nan/inf as the NaN/Infinity literals json.loads accepts.
    text = json.dumps(_position_json(qty=value))
    with pytest.raises(cattrs.ClassValidationError) as info:
        from_json(text, PositionUpdate)
    (leaf,) = info.value.exceptions
    assert isinstance(leaf, error)
    assert message in str(leaf)
    assert any("$.qty" in line for line in cattrs.transform_error(info.value))


def test_float_structures_to_its_shortest_decimal() -> None:
    assert str(CONVERTER.structure(0.1, Decimal)) == "0.1"
    assert CONVERTER.structure(0.1, Decimal) == Decimal("0.1")
    position = from_json(json.dumps(_position_json(qty=0.1)), PositionUpdate)
    assert position.qty == Decimal("0.1")
    assert CONVERTER.structure(3, Decimal) == Decimal(3)


def test_unknown_keys_are_rejected() -> None:
    with pytest.raises(cattrs.ClassValidationError) as info:
        from_json(json.dumps(_position_json(bogus=1)), PositionUpdate)
    assert cattrs.transform_error(info.value) == ["extra fields found (bogus) @ $"]


def test_unknown_keys_in_nested_meta_are_rejected() -> None:
    data = _position_json()
    data["meta"]["bogus"] = 1
    with pytest.raises(cattrs.ClassValidationError) as info:
        from_json(json.dumps(data), PositionUpdate)
    assert cattrs.transform_error(info.value) == ["extra fields found (bogus) @ $.meta"]


def test_enums_serialize_by_value() -> None:
    order = OrderEvent(
        META,
        order_id="o-1",
        client_order_id="c-1",
        venue="paper",
        symbol="BTCUSDT",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        status=OrderStatus.PARTIALLY_FILLED,
        qty=Decimal("0.5"),
    )
    data = json.loads(to_json(order))
    assert data["side"] == "buy"
    assert data["order_type"] == "limit"
    assert data["status"] == "partially_filled"
    assert data["meta"]["source"] == "trading"
    assert from_json(json.dumps(data), OrderEvent) == order


def test_unknown_enum_value_is_rejected() -> None:
    data = _position_json()
    data["meta"]["source"] = "martians"
    with pytest.raises(cattrs.ClassValidationError) as info:
        from_json(json.dumps(data), PositionUpdate)
    assert cattrs.transform_error(info.value) == [
        "invalid value for type, expected Source @ $.meta.source"
    ]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("exchange_ts", 5.5, "expected an integer"),
        ("exchange_ts", "5", "expected an integer"),
        ("exchange_ts", True, "expected an integer"),
        ("exchange", 3, "expected a string"),
    ],
)
def test_scalars_are_structured_without_coercion(field: str, value: object, reason: str) -> None:
    ticker = TickerEvent(
        EventMeta(Source.MARKET, 1), "bybit", "BTCUSDT", Decimal("1.10"), exchange_ts=5
    )
    raw = CONVERTER.unstructure(ticker)
    raw[field] = value
    with pytest.raises(ClassValidationError) as info:
        CONVERTER.structure(raw, TickerEvent)
    assert reason in repr(info.value.exceptions)


def test_a_bool_field_refuses_a_string() -> None:
    state = ControlState(EventMeta(Source.SYSTEM, 1), Lifecycle.RUNNING, paused=False)
    raw = CONVERTER.unstructure(state)
    raw["paused"] = "false"
    with pytest.raises(ClassValidationError) as info:
        CONVERTER.structure(raw, ControlState)
    assert "true or false" in repr(info.value.exceptions)


@pytest.mark.parametrize(
    "change",
    [
        {"close": "NaN"},
        {"close": 5},
        {"start_ts": "5"},
        {"closed": 1},
        {"interval": None},
        {"extra": 1},
    ],
)
def test_the_fast_reader_is_as_strict_as_the_converter(change: dict[str, Any]) -> None:
    bar = KlineEvent(META, "bybit", "BTCUSDT", "1", 0, 59_999, *[Decimal(1)] * 5, closed=True)
    document = {**CONVERTER.unstructure(bar), **change}
    text = json.dumps(document)
    try:
        expected: Any = from_json(text, KlineEvent)
    except Exception as exc:
        with pytest.raises(type(exc)):
            fast_loads(text, KlineEvent)
    else:
        assert fast_loads(text, KlineEvent) == expected


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('"start_ts": 0', '"start_ts": ' + "9" * 5000),  # more digits than int() converts
        ('"start_ts": 0', '"start_ts": -0'),
        ('"symbol": "BTCUSDT"', '"symbol": "BTC\\u0055SDT"'),  # an escape: json.loads reads it
        ('"close": "1"', '"close": "1_0"'),  # Decimal() takes underscores, so both read 10
        ('"close": "1"', '"close": " 1 "'),
        ('"close": "1"', '"close": "sNaN"'),
        ('"source": "trading"', '"source": "Trading"'),
        ('"correlation_id": "corr-1"', '"correlation_id": null'),
    ],
)
def test_the_regex_reader_of_the_converters_layout_is_as_strict_as_the_converter(
    old: str, new: str
) -> None:
    bar = KlineEvent(META, "bybit", "BTCUSDT", "1", 0, 59_999, *[Decimal(1)] * 5, closed=True)
    text = fast_dumps(bar)
    assert old in text
    text = text.replace(old, new)
    try:
        expected: Any = from_json(text, KlineEvent)
    except Exception as exc:  # whatever the converter raises, the reader must raise too
        error = exc
    else:
        assert fast_loads(text, KlineEvent) == expected
        return
    with pytest.raises(type(error)) as info:
        fast_loads(text, KlineEvent)
    assert str(info.value) == str(error)


@pytest.mark.parametrize(
    "change",
    [
        {"start_ts": True},  # a bool is an int to Python, but JSON writes it as true
        {"start_ts": 1.5},
        {"closed": 1},
        {"turnover": Decimal("2.5")},
        {"turnover": "2.5"},
        {"symbol": 7},
        {"meta": EventMeta(Source.MARKET, False, "chain")},
        {"meta": "not a meta"},
        {"meta": EventMeta("market", 1)},  # type: ignore[arg-type]  # what a plugin might do
    ],
)
def test_the_fast_writer_writes_what_the_converter_writes(change: dict[str, Any]) -> None:
    """Values of another type than their field's: the same text as the converter, or its error."""
    bar = KlineEvent(META, "bybit", "BTCUSDT", "1", 0, 59_999, *[Decimal(1)] * 5, closed=True)
    odd = attrs.evolve(bar, **change)
    try:
        expected = CONVERTER.dumps(odd)
    except Exception as exc:
        with pytest.raises(type(exc)):
            fast_dumps(odd)
    else:
        assert fast_dumps(odd) == expected
