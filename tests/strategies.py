"""Hypothesis strategies for the contracts: one per payload class, derived from BotEventMap.

Every payload strategy is ``st.builds(cls, ...)`` with a strategy per attrs field, chosen from
the field's resolved annotation by ``for_type``: finite ``Decimal`` and ``float`` values only,
signed 64-bit ints, short text, enums by member, ``X | None``, ``tuple[X, ...]``,
``Mapping[K, V]`` and nested attrs classes. Fields with defaults are drawn too, so defaults are
not the only values tested. A payload with a field type ``for_type`` does not know fails at
import with a ``TypeError``: add the type to ``SCALARS`` rather than loosening the strategy.

The strategies are also registered with ``st.register_type_strategy`` for our own classes, so
``st.from_type(TickerEvent)`` works anywhere in the suite. Builtin types are deliberately not
registered: that would change ``st.from_type(float)`` for every test.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, TypeVar

import attrs
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from contracts.meta import EventMeta, Payload, Source
from contracts.topics import BotEventMap, Topic

P = TypeVar("P", bound=Payload)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_COLLECTION = 4
"""Largest tuple or mapping drawn; bigger ones add time, not coverage of the converter."""


_DECIMAL_EXPONENTS = 31
"""Exponents 0..12 and -1..-18: from ``1E+12`` down to ``1E-18``."""
_DECIMAL_MAX_COEFFICIENT = 10**30
"""Longer than the default 28-digit context, so no step may round through it."""


def _decimal(code: int) -> Decimal:
    # Sign, exponent and coefficient all come from one integer: Hypothesis pays per draw, and
    # three draws per Decimal made the round-trip tests three times slower. 0 decodes to
    # Decimal("0") and 1 to Decimal("-0"), so failures shrink towards zero.
    rest, negative = divmod(code, 2)
    coefficient, k = divmod(rest, _DECIMAL_EXPONENTS)
    exponent = k if k <= 12 else 12 - k
    return Decimal(f"{'-' if negative else ''}{coefficient}E{exponent}")


finite_decimals: SearchStrategy[Decimal] = st.integers(
    0, 2 * _DECIMAL_EXPONENTS * _DECIMAL_MAX_COEFFICIENT - 1
).map(_decimal)
"""Finite decimals: both zeros, trailing zeros ("17216.00"), scientific forms, coefficients up
to 30 digits. Not ``st.decimals``, which is about fifteen times slower to draw."""

finite_floats: SearchStrategy[float] = st.floats(allow_nan=False, allow_infinity=False)
int64s: SearchStrategy[int] = st.integers(INT64_MIN, INT64_MAX)
texts: SearchStrategy[str] = st.text(max_size=24)

SCALARS: dict[type, SearchStrategy[Any]] = {
    bool: st.booleans(),
    int: int64s,
    float: finite_floats,
    str: texts,
    Decimal: finite_decimals,
}
"""Strategies for the leaf types payload fields use, by exact type."""


def event_meta(source: Source | None = None) -> SearchStrategy[EventMeta]:
    """``EventMeta`` values: any source (or ``source``), a non-negative unix-ms ``ts``."""
    return st.builds(
        EventMeta,
        source=st.sampled_from(Source) if source is None else st.just(source),
        ts=st.integers(0, INT64_MAX),
        correlation_id=st.none() | texts,
    )


def for_type(tp: Any) -> SearchStrategy[Any]:
    """A strategy for a resolved field annotation; raise ``TypeError`` for one we do not know."""
    return _for_class(tp) if isinstance(tp, type) else _for_generic(tp)


def _for_class(tp: type[Any]) -> SearchStrategy[Any]:
    if tp is EventMeta:
        return event_meta()
    if tp is type(None):
        return st.none()
    if tp in SCALARS:
        return SCALARS[tp]
    if issubclass(tp, enum.Enum):
        return st.sampled_from(tp)
    if attrs.has(tp):
        return builds_attrs(tp)
    raise _unknown(tp)


def _for_generic(tp: Any) -> SearchStrategy[Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is types.UnionType or origin is typing.Union:
        return st.one_of(*(for_type(arg) for arg in args))
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return st.lists(for_type(args[0]), max_size=MAX_COLLECTION).map(tuple)
    if origin is tuple:
        return st.tuples(*(for_type(arg) for arg in args))
    if origin in (dict, Mapping):
        key, value = args
        return st.dictionaries(for_type(key), for_type(value), max_size=MAX_COLLECTION)
    raise _unknown(tp)


def _unknown(tp: Any) -> TypeError:
    return TypeError(f"tests/strategies.py has no strategy for the field type {tp!r}")


def builds_attrs(cls: type[Any]) -> SearchStrategy[Any]:
    """``st.builds(cls)`` with every init field, defaults included, drawn by ``for_type``."""
    hints = typing.get_type_hints(cls)
    return st.builds(
        cls,
        **{f.alias: for_type(hints[f.name]) for f in attrs.fields(cls) if f.init},
    )


PAYLOAD_STRATEGIES: dict[type[Payload], SearchStrategy[Any]] = {
    topic.payload: builds_attrs(topic.payload) for topic in BotEventMap.values()
}
"""One strategy per built-in payload class."""


def payloads(topic: Topic[P]) -> SearchStrategy[P]:
    """Payloads for ``topic`` (a plugin topic gets a strategy built on the fly)."""
    strategy = PAYLOAD_STRATEGIES.get(topic.payload)
    return builds_attrs(topic.payload) if strategy is None else strategy


def topics_and_payloads() -> SearchStrategy[tuple[Topic[Any], Payload]]:
    """A built-in topic together with a payload of its class."""
    return st.sampled_from(list(BotEventMap.values())).flatmap(
        lambda topic: payloads(topic).map(lambda payload: (topic, payload))
    )


st.register_type_strategy(EventMeta, event_meta())
for _cls, _strategy in PAYLOAD_STRATEGIES.items():
    st.register_type_strategy(_cls, _strategy)
