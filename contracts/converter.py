"""The one cattrs converter that turns every payload into JSON and back (journal, replay, bridges).

Shaped like ``cattrs.preconf.json``: ``make_converter()`` builds a converter and
``configure_converter(c)`` registers our hooks on any cattrs converter.
"""

from __future__ import annotations

import enum
import math
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar, cast

from cattrs.preconf.json import JsonConverter
from cattrs.preconf.json import make_converter as _make_json_converter

from contracts.meta import Payload

T = TypeVar("T")


def _structure_decimal(value: Any, _: type[Decimal]) -> Decimal:
    if isinstance(value, bool):
        msg = f"expected a decimal number, got the boolean {value!r}"
        raise TypeError(msg)
    if isinstance(value, str | int):
        try:
            result = Decimal(value)
        except InvalidOperation:
            msg = f"expected a decimal number, got {value!r}"
            raise ValueError(msg) from None
    elif isinstance(value, float):
        # repr() is the shortest string that round-trips: 0.1 stays 0.1, not 0.1000000000000000055.
        result = Decimal(repr(value))
    else:
        msg = f"expected a decimal number, got {type(value).__name__} {value!r}"
        raise TypeError(msg)
    if not result.is_finite():
        msg = f"expected a finite decimal number, got {value!r}"
        raise ValueError(msg)
    return result


def _strict(kind: type, accepts: tuple[type, ...], what: str) -> Any:
    def structure(value: Any, cl: type) -> Any:
        if cl is not kind and issubclass(cl, enum.Enum):
            return cl(value)  # StrEnum fields reach the str hook as str subclasses
        if (isinstance(value, bool) and bool not in accepts) or not isinstance(value, accepts):
            msg = f"expected {what}, got {type(value).__name__} {value!r}"
            raise TypeError(msg)
        if kind is float and not math.isfinite(cast(float, value)):
            msg = f"expected a finite number, got {value!r}"
            raise ValueError(msg)
        return kind(value)

    return structure


def configure_converter(converter: JsonConverter) -> None:
    """Register our hooks on ``converter``.

    * ``Decimal`` unstructures to its exact string (``"17216.00"``) and structures from a string,
      an int or a float (through its shortest ``repr``); NaN, infinities and booleans are refused.
    * ``str``, ``int``, ``float`` and ``bool`` structure strictly: nothing is coerced (``"5"`` is
      not an int, ``1.7`` is not an int, ``"false"`` is not a bool; an int is a fine float).
    * Everything else uses the preconf JSON defaults: enums by value, tuples as lists, attrs
      classes as objects keyed by field name (unknown keys are an error), and unions of JSON
      scalars (``str | int | float | bool``) passed through.
    """
    converter.register_unstructure_hook(Decimal, str)
    converter.register_structure_hook(Decimal, _structure_decimal)
    converter.register_structure_hook(str, _strict(str, (str,), "a string"))
    converter.register_structure_hook(int, _strict(int, (int,), "an integer"))
    converter.register_structure_hook(float, _strict(float, (int, float), "a number"))
    converter.register_structure_hook(bool, _strict(bool, (bool,), "true or false"))


def make_converter() -> JsonConverter:
    """Build the project converter: cattrs' preconf JSON converter plus ``configure_converter``."""
    converter = _make_json_converter(forbid_extra_keys=True)
    configure_converter(converter)
    return converter


CONVERTER = make_converter()
"""A ready converter; converters are stateless after configuration, so sharing one is safe."""


def to_json(payload: Payload) -> str:
    """Serialize a payload to a JSON string."""
    return CONVERTER.dumps(payload)


def from_json(text: str | bytes, payload_type: type[T]) -> T:
    """Parse a JSON string produced by ``to_json`` back into ``payload_type``."""
    return CONVERTER.loads(text, payload_type)
