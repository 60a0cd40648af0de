"""Views: some fields of a payload read from its JSON, always the decoded payload's fields.

A view (``contracts.converter.load_view``) is what recovery reads of the events a component
needs only a few fields of; these tests hold it to the full decode on every topic, for the
converter's own text (read by one regex) and for any other JSON of the same payload (read
through ``json.loads``).
"""

from __future__ import annotations

import json
import typing
from decimal import Decimal
from typing import Any

import attrs
import pytest
from cattrs.errors import ClassValidationError
from hypothesis import given
from hypothesis import strategies as st

from contracts.converter import (
    _view_reader,
    check_view,
    fast_dumps,
    fast_loads,
    from_json,
    load_view,
    view_reader,
)
from contracts.enums import Side
from contracts.execution import OrderEvent, PositionUpdate, PositionView
from contracts.market import KlineEvent
from contracts.meta import EventMeta, Source
from contracts.risk import ApprovedIntent
from contracts.topics import MARKET_KLINE, PORTFOLIO_POSITION, BotEventMap, Topic
from tests.strategies import builds_attrs, payloads

TOPICS = list(BotEventMap.values())
TOPIC_IDS = [topic.name for topic in TOPICS]


def view_class(cls: type, names: list[str]) -> type:
    """A frozen attrs class with the fields ``names`` of ``cls``, of the same types."""
    hints = typing.get_type_hints(cls)
    fields = {name: attrs.field(type=hints[name]) for name in names}
    return attrs.make_class(f"{cls.__name__}View_{'_'.join(names)}", fields, frozen=True)


def views_of(cls: type) -> list[type]:
    """Every single field as a view, and all the fields in reverse order."""
    names = [f.name for f in attrs.fields(cls)]
    return [*(view_class(cls, [name]) for name in names), view_class(cls, names[::-1])]


VIEWS = {topic.payload: views_of(topic.payload) for topic in TOPICS}
VIEWS[PositionUpdate].append(PositionView)


@attrs.frozen
class BarView:
    symbol: str
    interval: str
    start_ts: int
    end_ts: int
    closed: bool


def expected(view: type, payload: Any) -> Any:
    return view(**{f.name: getattr(payload, f.name) for f in attrs.fields(view)})


def texts_of(payload: Any) -> list[str]:
    """The converter's text of ``payload`` and two other JSON texts of the same object."""
    text = fast_dumps(payload)
    document = json.loads(text)
    compact = json.dumps(document, separators=(",", ":"))
    unescaped = json.dumps(document, ensure_ascii=False)
    return [text, compact, unescaped]


@pytest.mark.parametrize("topic", TOPICS, ids=TOPIC_IDS)
@given(data=st.data())
def test_a_view_holds_the_fields_of_the_decoded_payload(
    topic: Topic[Any], data: st.DataObject
) -> None:
    payload = data.draw(payloads(topic), label=topic.name)
    view = data.draw(st.sampled_from(VIEWS[topic.payload]), label="view")
    for text in texts_of(payload):
        assert fast_loads(text, topic.payload) == payload
        assert load_view(text, topic.payload, view) == expected(view, payload)


@given(
    payloads(MARKET_KLINE),
    st.sampled_from(("BTCUSDT", "ETH-PERP", "")),
    st.sampled_from(("1", "60", "D")),
    st.none() | st.sampled_from(("c-1", "")),
)
def test_the_converters_own_text_is_read_without_json_loads(
    kline: KlineEvent, symbol: str, interval: str, correlation_id: str | None
) -> None:
    """Text without escapes (every journaled bar of a real venue) never goes to json.loads."""
    meta = attrs.evolve(kline.meta, correlation_id=correlation_id)
    kline = attrs.evolve(kline, meta=meta, exchange="bybit", symbol=symbol, interval=interval)
    read = view_reader(KlineEvent, BarView)
    text = fast_dumps(kline)

    def refuse(_: str) -> Any:
        raise AssertionError("json.loads was called")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(json, "loads", refuse)
        assert read(text) == expected(BarView, kline)


def refuse_json_loads(_: str) -> Any:
    raise AssertionError("json.loads was called")


@given(
    payloads(PORTFOLIO_POSITION),
    st.sampled_from(Source),
    st.sampled_from((0, 1_700_000_000_000, 2**63 - 1)),
    st.none() | st.sampled_from(("c-1", "", "kline:BTCUSDT:1")),
)
def test_a_view_with_the_meta_reads_it_in_the_one_regex(
    update: PositionUpdate, source: Source, ts: int, correlation_id: str | None
) -> None:
    """The nested meta is captured as groups of the payload's regex and built in line."""
    update = attrs.evolve(update, meta=EventMeta(source, ts, correlation_id), symbol="BTCUSDT")
    text = fast_dumps(update)
    read = view_reader(PositionUpdate, PositionView)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(json, "loads", refuse_json_loads)
        view = read(text)
    assert view == expected(PositionView, fast_loads(text, PositionUpdate))
    assert type(view.meta) is EventMeta


@pytest.mark.parametrize("topic", TOPICS, ids=TOPIC_IDS)
@given(data=st.data())
def test_a_payload_of_captured_fields_is_read_by_its_regex_as_its_own_view(
    topic: Topic[Any], data: st.DataObject
) -> None:
    """``fast_loads`` of the converter's text without escapes goes by the regex, not json.loads."""
    cls = topic.payload
    payload = data.draw(payloads(topic), label=topic.name)
    text = fast_dumps(payload)
    assert load_view(text, cls, cls) == payload
    if _view_reader(cls, cls)[0] is None or "\\" in text:
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(json, "loads", refuse_json_loads)
        assert fast_loads(text, cls) == payload


def test_the_regex_reads_the_payloads_the_replay_decodes_whole() -> None:
    for cls in (OrderEvent, ApprovedIntent, KlineEvent, PositionUpdate):
        assert _view_reader(cls, cls)[0] is not None, cls


@attrs.frozen
class Derived:
    n: int
    twice: int = attrs.field(init=False, default=0)


def test_a_class_that_is_not_its_own_view_is_read_as_before() -> None:
    """A field outside ``__init__`` is no view field: ``fast_loads`` goes by json.loads."""
    assert fast_loads('{"n": 2}', Derived) == from_json('{"n": 2}', Derived)


@attrs.frozen
class Inner:
    n: int | None
    flag: bool = attrs.field(kw_only=True)
    side: Side = Side.BUY


@attrs.frozen
class Outer:
    name: str
    inner: Inner
    maybe: Inner | None
    ratio: float
    tail: Decimal


@attrs.frozen
class InnerView:
    tail: Decimal
    inner: Inner


@attrs.frozen
class MaybeView:
    maybe: Inner | None


@given(builds_attrs(Outer))
def test_a_nested_class_of_scalars_is_captured_and_an_optional_one_is_not(outer: Outer) -> None:
    text = fast_dumps(outer)
    assert fast_loads(text, Outer) == outer
    for view in (InnerView, MaybeView):
        for other in texts_of(outer):
            assert load_view(other, Outer, view) == expected(view, outer)
    assert _view_reader(Outer, InnerView)[0] is not None  # one regex, the nested class in it
    assert _view_reader(Outer, MaybeView)[0] is None  # a null is not a group per field
    if "\\" not in text:  # no string with an escape: the regex reads it all
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(json, "loads", refuse_json_loads)
            assert load_view(text, Outer, InnerView) == expected(InnerView, outer)


def test_a_duplicate_key_reads_as_json_loads_takes_it() -> None:
    kline = KlineEvent(
        EventMeta(Source.MARKET, 5),
        exchange="x",
        symbol="A",
        interval="1",
        start_ts=1,
        end_ts=2,
        open=1,  # type: ignore[arg-type] - the converter's Decimal hook takes an int
        high=1,  # type: ignore[arg-type]
        low=1,  # type: ignore[arg-type]
        close=1,  # type: ignore[arg-type]
        volume=1,  # type: ignore[arg-type]
        closed=True,
    )
    text = fast_dumps(kline).removesuffix("}") + ', "symbol": "B"}'
    assert load_view(text, KlineEvent, BarView).symbol == "B" == json.loads(text)["symbol"]


@pytest.mark.parametrize(
    ("text", "error", "match"),
    [
        ("{", ValueError, "Expecting"),
        ("[]", TypeError, "expected a JSON object, got list"),
        ('{"symbol": "A"}', ValueError, "the payload has no interval, start_ts, end_ts, closed"),
        (
            '{"symbol": "A", "interval": "1", "start_ts": "5", "end_ts": 6, "closed": true}',
            ClassValidationError,
            "While structuring BarView",
        ),
    ],
)
def test_a_view_that_does_not_decode_raises(text: str, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        load_view(text, KlineEvent, BarView)


UPDATE = PositionUpdate(EventMeta(Source.TRADING, 5, "c"), "A", *[Decimal(1)] * 7)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('"ts": 5', '"ts": "5"'),
        ('"ts": 5', '"ts": 5.0'),
        ('"ts": 5', '"ts": true'),
        ('"source": "trading"', '"source": "nowhere"'),
        ('"correlation_id": "c"', '"correlation_id": 7'),
        ('"correlation_id": "c"}', '"correlation_id": "c", "extra": 1}'),
        ('"ts": 5, ', ""),
        ('"equity": "1"', '"equity": "NaN"'),
        ('"equity": "1"', '"equity": "1x"'),
    ],
)
def test_a_bad_meta_or_field_falls_back_and_raises_as_the_converter(old: str, new: str) -> None:
    text = fast_dumps(UPDATE)
    assert old in text
    bad = text.replace(old, new)
    with pytest.raises(ClassValidationError) as whole:
        from_json(bad, PositionUpdate)
    with pytest.raises(ClassValidationError) as view:
        load_view(bad, PositionUpdate, PositionView)
    assert type(view.value.exceptions[0]) is type(whole.value.exceptions[0])


def test_a_view_must_hold_fields_of_the_payload_of_the_same_types() -> None:
    check_view(KlineEvent, BarView)
    check_view(PositionUpdate, view_class(PositionUpdate, ["equity", "symbol"]))

    @attrs.frozen
    class Renamed:
        ticker: str

    @attrs.frozen
    class Retyped:
        start_ts: str

    for view in (Renamed, Retyped):
        with pytest.raises(TypeError, match="is not a field of KlineEvent of the same type"):
            load_view("{}", KlineEvent, view)
    with pytest.raises(TypeError, match="must be attrs classes"):
        check_view(OrderEvent, dict)


@attrs.frozen
class _Empty:
    """A class without fields: its regex has no group, its builder nothing to unpack."""


def test_a_class_without_fields_is_read_as_itself() -> None:
    assert fast_loads("{}", _Empty) == _Empty()
    assert view_reader(_Empty, _Empty)("{}") == _Empty()
