"""The one cattrs converter that turns every payload into JSON and back (journal, replay, bridges).

Shaped like ``cattrs.preconf.json``: ``make_converter()`` builds a converter and
``configure_converter(c)`` registers our hooks on any cattrs converter.
"""

from __future__ import annotations

import collections.abc
import enum
import json
import json.encoder
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar, cast

import attrs
from cattrs.preconf.json import JsonConverter
from cattrs.preconf.json import make_converter as _make_json_converter

from contracts.meta import Payload

T = TypeVar("T")


def structure_decimal(value: Any, _: type) -> Decimal:
    """Structure a finite ``Decimal`` from a string, an int or a float (never a bool).

    A float goes through its shortest ``repr``, so 0.1 stays 0.1, not 0.1000000000000000055.
    """
    if isinstance(value, bool):
        msg = f"expected a decimal number, got the boolean {str(value).lower()}"
        raise TypeError(msg)
    if not isinstance(value, str | int | float):
        msg = f"expected a decimal number, got {type(value).__name__} {value!r}"
        raise TypeError(msg)
    try:
        result = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        msg = f"expected a decimal number, got {value!r}"
        raise ValueError(msg) from None
    if not result.is_finite():
        msg = f"expected a finite decimal number, got {value!r}"
        raise ValueError(msg)
    return result


def structure_enum(value: Any, cl: type[enum.Enum]) -> enum.Enum:
    """Structure an enum member by value; the error lists the allowed values."""
    try:
        return cl(value)
    except ValueError:
        choices = " | ".join(str(m.value) for m in cl)
        msg = f"{value!r} is not one of {choices}"
        raise ValueError(msg) from None


def strict_scalar(kind: type, accepts: tuple[type, ...], what: str) -> Any:
    """A structure hook for ``kind`` that coerces nothing: ``value`` must be one of ``accepts``.

    Enum fields whose class subclasses ``kind`` (``StrEnum`` is a ``str``) are structured by
    value, since cattrs dispatches them to the hook of their base class.
    """

    def structure(value: Any, cl: type) -> Any:
        if cl is not kind and issubclass(cl, enum.Enum):
            return structure_enum(value, cl)
        if isinstance(value, bool) and bool not in accepts:
            msg = f"expected {what}, got the boolean {str(value).lower()}"
            raise TypeError(msg)
        if not isinstance(value, accepts):
            msg = f"expected {what}, got {type(value).__name__} {value!r}"
            raise TypeError(msg)
        if kind is float and not math.isfinite(cast(float, value)):
            msg = f"expected a finite number, got {value!r}"
            raise ValueError(msg)
        return kind(value)

    return structure


SCALARS: tuple[tuple[type, tuple[type, ...], str], ...] = (
    (str, (str,), "a string"),
    (int, (int,), "an integer"),
    (float, (int, float), "a number"),
    (bool, (bool,), "true or false"),
)
"""``(type, accepted value types, what the error calls it)`` of every strict scalar hook."""


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
    converter.register_structure_hook(Decimal, structure_decimal)
    for kind, accepts, what in SCALARS:
        converter.register_structure_hook(kind, strict_scalar(kind, accepts, what))


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


# -- a fast path for reading what we wrote ---------------------------------------------------

_Build = Callable[[Any], Any]
_Match = Callable[[str], "re.Match[str] | None"]


class NotFastError(Exception):
    """A value the fast path does not take as it is; the converter decides (and explains)."""


def _decimal(v: Any) -> Decimal:
    if type(v) is not str:
        raise NotFastError
    try:
        d = Decimal(v)
    except InvalidOperation:
        raise NotFastError from None
    if not d.is_finite():
        raise NotFastError
    return d


def _real(v: Any) -> float:
    if type(v) is not float or not math.isfinite(v):
        raise NotFastError
    return float(v)


def _strings(v: Any) -> tuple[str, ...]:
    if type(v) is not list or any(type(x) is not str for x in v):
        raise NotFastError
    return tuple(v)


def _exactly(kind: type) -> _Build:
    def scalar(v: Any) -> Any:
        if type(v) is not kind:
            raise NotFastError
        return v

    return scalar


def _member_of(cl: type[enum.Enum]) -> _Build:
    members = {m.value: m for m in cl}

    def member(v: Any) -> Any:
        try:
            return members[v]
        except (KeyError, TypeError):
            raise NotFastError from None

    return member


def _optional(inner: _Build) -> _Build:
    return lambda v: None if v is None else inner(v)


def _fast_field(tp: Any) -> _Build | None:
    """A checker-and-builder of one field's JSON value, or None when the type is not covered."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    build: _Build | None = None
    if origin in (types.UnionType, typing.Union):
        if len(args) == 2 and type(None) in args:
            inner = _fast_field(next(a for a in args if a is not type(None)))
            build = None if inner is None else _optional(inner)
    elif origin is tuple:
        build = _strings if args == (str, Ellipsis) else None
    elif tp is Decimal:
        build = _decimal
    elif tp is float:
        build = _real
    elif tp in (str, int, bool):
        build = _exactly(tp)
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        build = _member_of(tp)
    elif isinstance(tp, type) and attrs.has(tp):
        build = _fast_class(tp)
    return build


_FAST: dict[type, _Build | None] = {}


def _check_code(tp: Any, var: str, env: dict[str, Any]) -> list[str] | None:  # noqa: PLR0911 - one return per kind of type
    """Lines that check (and convert) the JSON value in ``var`` to a ``tp`` in place, or None.

    Scalars are checked inline (no call per field); Decimals, enums, nested classes, optionals
    and containers call a builder of their own, kept in ``env``.
    """
    bad = "raise NotFastError"
    if tp in (str, int, bool):
        kind = f"_t{len(env)}"
        env[kind] = tp
        return [f"if type({var}) is not {kind}: {bad}"]
    if tp is Decimal:  # a bad string raises InvalidOperation, which the builder turns away
        return [f"if type({var}) is not str: {bad}",
                f"{var} = _Decimal({var})",
                f"if not {var}.is_finite(): {bad}"]  # fmt: skip
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        members = f"_m{len(env)}"
        env[members] = {m.value: m for m in tp}
        # A value of a JSON type no member has (a list, a dict) raises TypeError: not fast.
        return [f"{var} = {members}.get({var}) if type({var}) in _KEYS else None",
                f"if {var} is None: {bad}"]  # fmt: skip
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union) and len(args) == 2 and type(None) in args:
        inner = _check_code(next(a for a in args if a is not type(None)), var, env)
        if inner is None:
            return None
        return [f"if {var} is not None:", *[f"    {line}" for line in inner]]
    build = _fast_field(tp)
    if build is None:
        return None
    name = f"_b{len(env)}"
    env[name] = build
    return [f"{var} = {name}({var})"]


def _fast_class(cls: type) -> _Build | None:
    """The builder of an attrs class from its JSON object, if every field is covered.

    Generated code, one function per class: every key is read and checked in line, then the
    class is called once; anything unusual raises ``NotFastError`` for the converter to decide.
    """
    if cls in _FAST:
        return _FAST[cls]
    _FAST[cls] = None  # recursion guard
    hints = typing.get_type_hints(cls)
    env: dict[str, Any] = {
        "NotFastError": NotFastError,
        "_InvalidOperation": InvalidOperation,
        "_Decimal": Decimal,
        "_cls": cls,
        "_KEYS": (str, int, float, bool),
    }
    fields = attrs.fields(cls)
    if any(not f.init for f in fields):
        return None
    env["_names"] = frozenset(f.name for f in fields)
    body = ["if type(v) is not dict or v.keys() != _names: raise NotFastError"]
    for i, field in enumerate(fields):
        var = f"a{i}"
        lines = _check_code(hints[field.name], var, env)
        if lines is None:
            return None
        body.append(f"{var} = v[{field.name!r}]")
        body.extend(lines)
    body.append(f"return {_call('_cls', fields, [f'a{i}' for i in range(len(fields))])}")
    build = _compile_build("v", body, env, f"<json reader of {cls.__qualname__}>")
    _FAST[cls] = build
    return build


_OWN_VIEWS: dict[type, tuple[_Match, _Build] | None] = {}


def _own_view(cls: type) -> tuple[_Match, _Build] | None:
    """The view reader of ``cls`` as its own view (regex, builder), or None: not covered."""
    try:
        return _OWN_VIEWS[cls]
    except KeyError:
        pass
    reader: tuple[_Match, _Build] | None = None
    if attrs.has(cls) and all(f.init for f in attrs.fields(cls)):
        match, build, _ = _view_reader(cls, cls)
        reader = None if match is None else (match, build)
    _OWN_VIEWS[cls] = reader
    return reader


def fast_loads(text: str | bytes, payload_type: type[T]) -> T:
    """``from_json``, several times faster on what ``to_json`` wrote; the same result always.

    The fast path takes only exact JSON types (a string for a Decimal, all fields present);
    anything else goes through the converter, which either structures it or raises its error.
    A text in the converter's own layout, of a class whose fields are all captured by the view
    reader (no floats, no containers), is read by its regex: the payload as its own view.
    """
    own = _own_view(payload_type) if type(text) is str else None
    if own is not None:
        found = own[0](cast(str, text))
        if found is not None:
            try:
                return cast(T, own[1](found.groups()))
            except NotFastError:
                pass
    document = json.loads(text)
    build = _fast_class(payload_type)
    if build is not None:
        try:
            return cast(T, build(document))
        except NotFastError:
            pass
    return CONVERTER.structure(document, payload_type)


# -- a fast path for writing (the journal) -----------------------------------------------------

_Frag = Callable[[Any], str]
_quote: Callable[[str], str] = json.encoder.encode_basestring_ascii


class _QuotedText(dict[str, str]):
    """A string's JSON text, by the string: one look-up per event for a repeated name.

    Symbols, venues and intervals repeat on every event; encoding them once is enough. Short
    strings only, and no more than ``_QUOTED_MAX`` of them, so ids that never repeat cannot
    grow it without bound; a value that is not a string raises ``TypeError`` as ``_quote`` does.
    """

    __slots__ = ()

    def __missing__(self, key: str) -> str:
        text = _quote(key)
        if len(key) <= _QUOTED_LEN and len(self) < _QUOTED_MAX:
            self[key] = text
        return text


_QUOTED_LEN = 32
_QUOTED_MAX = 4096
_QUOTED = _QuotedText()


def _float_json(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if v in (math.inf, -math.inf):
        return "Infinity" if v > 0 else "-Infinity"
    return float.__repr__(v)


def _scalar_json(v: Any) -> str:
    """A JSON scalar as ``json.dumps`` writes it (the values of a params or features map)."""
    kind = type(v)
    if kind is str:
        return _quote(v)
    if kind is bool:
        return "true" if v else "false"
    if kind is int:
        return int.__repr__(v)
    if kind is float:
        return _float_json(v)
    if v is None:
        return "null"
    raise NotFastError


def _value_json(tp: Any) -> _Frag | None:
    """The JSON text of one value inside a container, exactly as the converter writes it."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    frag: _Frag | None = None
    if origin in (types.UnionType, typing.Union):
        if len(args) == 2 and type(None) in args:
            inner = _value_json(next(a for a in args if a is not type(None)))
            frag = None if inner is None else _or_null(inner)
        elif all(a in (str, int, float, bool) for a in args):
            frag = _scalar_json
    elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = _value_json(args[0])
        frag = None if item is None else _list_of(item)
    elif origin in (collections.abc.Mapping, dict) and args and args[0] is str:
        value = _value_json(args[1])
        frag = None if value is None else _object_of(value)
    else:
        frag = _leaf_json(tp)
    return frag


def _leaf_json(tp: Any) -> _Frag | None:
    if tp is Decimal:
        return lambda v: _quote(str(v))
    if tp is str:
        return _quote
    if tp in (int, bool, float):
        return _scalar_json
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return lambda v: _scalar_json(v.value)
    if isinstance(tp, type) and attrs.has(tp):
        return _class_json(tp)
    return None


def _or_null(inner: _Frag) -> _Frag:
    return lambda v: "null" if v is None else inner(v)


def _list_of(item: _Frag) -> _Frag:
    return lambda v: "[" + ", ".join([item(x) for x in v]) + "]"


def _object_of(value: _Frag) -> _Frag:
    def write(v: Any) -> str:
        return "{" + ", ".join([f"{_quote(k)}: {value(x)}" for k, x in v.items()]) + "}"

    return write


_WRITERS: dict[type, _Frag | None] = {}


def _bool_json(v: Any) -> str:
    return "true" if v is True else "false" if v is False else _scalar_json(v)


def _field_piece(tp: Any, expr: str, env: dict[str, Any], guards: list[str]) -> str | None:
    """The f-string piece writing ``expr`` (a field of type ``tp``) as JSON, or None.

    ``guards`` collects the type checks the piece relies on (an int written by its ``repr``
    must be an int, not a bool); the writer runs them before building the string.
    """
    if tp is Decimal:  # a Decimal's str never needs escaping: digits, sign, point, exponent
        return f'"{{{expr}!s}}"'
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        name = f"_e{len(env)}"  # member -> its JSON text: no .value look-up per event
        env[name] = {m: _scalar_json(m.value) for m in tp}
        return f"{{{name}[{expr}]}}"
    if tp is int:
        guards.append(f"type({expr}) is not int")
        return f"{{{expr}!r}}"
    if tp is bool:
        return f"{{'true' if {expr} is True else 'false' if {expr} is False else _bool({expr})}}"
    if isinstance(tp, type) and attrs.has(tp) and _class_json(tp) is not None:
        # A nested class (the meta of every payload) is written in line, its guards with ours.
        guards.append(f"{expr}.__class__ is not _c{len(env)}")
        env[f"_c{len(env)}"] = tp
        return _object_piece(tp, expr, env, guards)
    return _call_piece(tp, expr, env)


def _call_piece(tp: Any, expr: str, env: dict[str, Any]) -> str | None:
    """The piece of a field written by a function call (an optional Decimal or str in line)."""
    args = frozenset(typing.get_args(tp))
    if typing.get_origin(tp) in (types.UnionType, typing.Union) and args in (
        {Decimal, type(None)},
        {str, type(None)},
    ):
        name = "_dq" if Decimal in args else "_q"
        env[name] = _decimal_text if Decimal in args else _quote
        return f"{{'null' if {expr} is None else {name}({expr})}}"
    if tp is str:
        env["_qt"] = _QUOTED
        return f"{{_qt[{expr}]}}"
    frag: Callable[[Any], str | None] | None = _scalar_json if tp is float else None
    if frag is None:  # containers, unions, other optionals: a function of their own
        frag = _value_json(tp)
    if frag is None:
        return None
    name = f"_f{len(env)}"
    env[name] = frag
    return f"{{{name}({expr})}}"


def _decimal_text(v: Any) -> str:
    return '"' + str(v) + '"'


def _object_piece(cls: type, expr: str, env: dict[str, Any], guards: list[str]) -> str | None:
    """The f-string text of the JSON object ``expr`` (a ``cls``); None if a field is uncovered."""
    hints = typing.get_type_hints(cls)
    pieces = []
    for field in attrs.fields(cls):
        piece = _field_piece(hints[field.name], f"{expr}.{field.name}", env, guards)
        if piece is None:
            return None
        pieces.append(_quote(field.name) + ": " + piece)
    return "{{" + ", ".join(pieces) + "}}"


def _class_json(cls: type) -> _Frag | None:
    """The JSON writer of an attrs class, if every field is covered.

    The writer is generated code, one f-string per class (nested classes in line): no dispatch
    per field, one string built at the end. A value of another type than its field's, which the
    guards or the f-string trip over, makes it raise ``NotFastError``.
    """
    if cls in _WRITERS:
        return _WRITERS[cls]
    _WRITERS[cls] = None  # recursion guard
    env: dict[str, Any] = {"NotFastError": NotFastError, "_bool": _bool_json}
    guards: list[str] = []
    body = _object_piece(cls, "v", env, guards)
    if body is None:
        return None
    check = f"    if {' or '.join(guards)}:\n        raise NotFastError\n" if guards else ""
    source = (
        f"def write(v):\n{check}    try:\n        return f'''{body}'''\n"
        "    except (AttributeError, KeyError, TypeError):\n        raise NotFastError from None\n"
    )
    exec(compile(source, f"<json writer of {cls.__qualname__}>", "exec"), env)  # noqa: S102 - our own generated code
    write = cast(_Frag, env["write"])
    _WRITERS[cls] = write
    return write


def fast_dumps(payload: Payload) -> str:
    """``to_json``, several times faster, and the very same text (the journal's writer)."""
    # The writers made so far are looked up here, not through _class_json: a call less for
    # every journaled event.
    write = _WRITERS.get(payload.__class__) or _class_json(type(payload))
    if write is not None:
        try:
            return write(payload)
        except NotFastError:
            pass
    return CONVERTER.dumps(payload)


# -- views: some fields of a payload, read without building it (recovery) ---------------------

_STR = r'"[^"\\\x00-\x1f]*"'
"""A JSON string without escapes or control characters: the text between its quotes is its value."""
_STR_GROUP = r'"([^"\\\x00-\x1f]*)"'
_INT = r"-?(?:0|[1-9][0-9]*)"
_NUMBER = _INT + r"(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_VIEWS: dict[tuple[type, type], tuple[_Match | None, _Build, tuple[str, ...]]] = {}
_Capture = tuple[str, list[str], int]
"""What ``_capture`` returns: a view field's pattern, the lines building it, its group count."""


def _optional_arg(tp: Any) -> Any:
    """``X`` of ``X | None``, or None when ``tp`` is not such an optional."""
    args = typing.get_args(tp)
    union = typing.get_origin(tp) in (types.UnionType, typing.Union)
    if union and len(args) == 2 and type(None) in args:
        return next(a for a in args if a is not type(None))
    return None


def _enum_pattern(tp: type[enum.Enum], group: bool) -> str | None:
    """The pattern of an enum's JSON values (all strings or all integers), else None."""
    values = [m.value for m in tp]
    if all(type(v) is str for v in values):
        return _STR_GROUP if group else _STR
    if all(type(v) is int for v in values):
        return f"({_INT})" if group else _INT
    return None


def _skip_pattern(tp: Any) -> str | None:  # noqa: PLR0911 - one return per kind of type
    """The pattern of a JSON value of ``tp`` as the converter writes it; None: not covered."""
    inner = _optional_arg(tp)
    if inner is not None:
        pattern = _skip_pattern(inner)
        return None if pattern is None else f"(?:null|{pattern})"
    if tp in (str, Decimal):
        return _STR
    if tp is int:
        return _INT
    if tp is float:
        return _NUMBER
    if tp is bool:
        return "(?:true|false)"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_pattern(tp, group=False)
    if isinstance(tp, type) and attrs.has(tp):
        return _object_pattern(tp, {})
    return None  # containers and unions of scalars: the view is read through json.loads


def _capture(tp: Any, var: str, env: dict[str, Any], at: int) -> _Capture | None:  # noqa: PLR0911 - one return per kind of type
    """The pattern of a view field of ``tp``, the lines building its value, and its group count.

    The lines read the field's groups from ``g``, starting at ``g[at]`` (a group's text, or None
    for a JSON null), and set ``var`` to the value the converter would structure from that JSON,
    or raise ``NotFastError``. A scalar is one group, read into ``var`` by the first line; a
    nested attrs class (the meta) is one group per field, in its field order, and is called
    once its fields are built.
    """
    bad = "raise NotFastError"
    read = f"{var} = g[{at}]"
    inner = _optional_arg(tp)
    if inner is not None:
        found = _capture(inner, var, env, at)
        if found is None or found[2] != 1:  # an optional nested class: its null is not one group
            return None
        pattern, (first, *rest), _ = found
        guarded = [f"if {var} is not None:", *[f"    {x}" for x in rest]] if rest else []
        return f"(?:null|{pattern})", [first, *guarded], 1
    if tp is str:
        return _STR_GROUP, [read], 1
    if tp is Decimal:  # a bad string raises InvalidOperation, which the builder turns away
        return _STR_GROUP, [read, f"{var} = _Decimal({var})", f"if not {var}.is_finite(): {bad}"], 1
    if tp is int:
        return f"({_INT})", [read, f"{var} = int({var})"], 1
    if tp is bool:
        return "(true|false)", [read, f"{var} = {var} == 'true'"], 1
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        group = _enum_pattern(tp, group=True)
        if group is None:
            return None
        members = f"_m{len(env)}"
        env[members] = {str(m.value): m for m in tp}
        return group, [read, f"{var} = {members}.get({var})", f"if {var} is None: {bad}"], 1
    if isinstance(tp, type) and attrs.has(tp):
        return _capture_class(tp, var, env, at)
    return None  # floats and containers are not captured: the view goes through json.loads


def _capture_class(cls: type, var: str, env: dict[str, Any], at: int) -> _Capture | None:
    """``_capture`` of a nested attrs class: every field captured, then the class called."""
    fields = attrs.fields(cls)
    if any(not f.init for f in fields):
        return None
    hints = typing.get_type_hints(cls)
    captured: dict[str, str] = {}
    lines: list[str] = []
    count = 0
    for i, field in enumerate(fields):
        found = _capture(hints[field.name], f"{var}_{i}", env, at + count)
        if found is None:
            return None
        captured[field.name], more, groups = found
        lines += more
        count += groups
    pattern = _object_pattern(cls, captured)
    if pattern is None:
        return None
    name = f"_c{len(env)}"
    env[name] = cls
    parts = [f"{var}_{i}" for i in range(len(fields))]
    return pattern, [*lines, f"{var} = {_call(name, fields, parts)}"], count


def _object_pattern(cls: type, captured: Mapping[str, str]) -> str | None:
    """The pattern of ``cls``'s JSON object, its fields in order, the ``captured`` ones as given."""
    hints = typing.get_type_hints(cls)
    pieces = []
    for field in attrs.fields(cls):
        pattern = captured.get(field.name) or _skip_pattern(hints[field.name])
        if pattern is None:
            return None
        pieces.append(re.escape(_quote(field.name)) + ": " + pattern)
    return r"\{" + ", ".join(pieces) + r"\}"


def check_view(payload_type: type, view_type: type) -> None:
    """Raise ``TypeError`` unless ``view_type`` is a view of ``payload_type`` (``load_view``)."""
    if not (attrs.has(payload_type) and attrs.has(view_type)):
        msg = f"{view_type.__qualname__} and {payload_type.__qualname__} must be attrs classes"
        raise TypeError(msg)
    hints, own = typing.get_type_hints(payload_type), typing.get_type_hints(view_type)
    for field in attrs.fields(view_type):
        if not field.init or field.name not in hints or hints[field.name] != own[field.name]:
            msg = (
                f"{view_type.__qualname__}.{field.name} is not a field of "
                f"{payload_type.__qualname__} of the same type"
            )
            raise TypeError(msg)


def _view_reader(
    payload_type: type, view_type: type
) -> tuple[_Match | None, _Build, tuple[str, ...]]:
    """``(fullmatch of the payload's JSON or None, builder from its groups, the view's fields)``.

    The builder is generated code, like ``_fast_class``'s: each group checked and converted in
    line, then the view class called once.
    """
    key = (payload_type, view_type)
    reader = _VIEWS.get(key)
    if reader is not None:
        return reader
    check_view(payload_type, view_type)
    names = tuple(f.name for f in attrs.fields(view_type))
    wanted = set(names)
    order = [f.name for f in attrs.fields(payload_type) if f.name in wanted]
    own = typing.get_type_hints(view_type)
    env: dict[str, Any] = {
        "NotFastError": NotFastError,
        "_InvalidOperation": InvalidOperation,
        "_Decimal": Decimal,
        "_cls": view_type,
    }
    captured: dict[str, str] = {}
    body: list[str] = []
    at = 0
    for i, name in enumerate(order):  # the groups come in the payload's field order
        found = _capture(own[name], f"a{i}", env, at)
        if found is None:
            break
        captured[name], lines, groups = found
        body += lines
        at += groups
    pattern = _object_pattern(payload_type, captured) if len(captured) == len(order) else None
    match: _Match | None = None
    build: _Build = _no_build
    if pattern is not None:
        fields = attrs.fields(view_type)
        variables = [f"a{order.index(field.name)}" for field in fields]
        body.append(f"return {_call('_cls', fields, variables)}")
        name = f"<view reader of {view_type.__qualname__}>"
        build = _compile_build("g", _unpacked(body), env, name)
        match = re.compile(pattern).fullmatch
    reader = (match, build, names)
    _VIEWS[key] = reader
    return reader


_READ_GROUP = re.compile(r"(\w+) = g\[(\d+)\]")


def _unpacked(body: list[str]) -> list[str]:
    """``body`` reading every group in one unpacking of ``g`` instead of a subscript each.

    Each group is read by one ``var = g[i]`` line of ``_capture``; those lines go, and one
    ``var0, var1, ... = g`` comes first (groups of another count raise ``ValueError``: not fast).
    """
    reads: dict[int, str] = {}
    rest = []
    for line in body:
        found = _READ_GROUP.fullmatch(line)
        if found is None:
            rest.append(line)
        else:
            reads[int(found[2])] = found[1]
    if not reads or sorted(reads) != list(range(len(reads))):
        return body  # no group, or not every group read once, in line: keep the subscripts
    return [f"{', '.join(reads[i] for i in range(len(reads)))}, = g", *rest]


def _call(callee: str, fields: Any, variables: list[str]) -> str:
    """The call of an attrs class with ``variables`` for its ``fields``: keyword-only ones last."""
    args, keywords = [], []
    for field, var in zip(fields, variables, strict=True):
        if field.kw_only:
            keywords.append(f"{field.alias}={var}")
        else:
            args.append(var)
    return f"{callee}({', '.join(args + keywords)})"


def _compile_build(arg: str, body: list[str], env: dict[str, Any], name: str) -> _Build:
    """``def build(arg)`` running ``body``; a bad Decimal or a ``ValueError`` in it: not fast.

    Either raises ``NotFastError``. A ``ValueError`` is an int of more digits than Python
    converts, or a class's validator: the slow path then raises what the converter raises.
    """
    source = (
        f"def build({arg}):\n    try:\n"
        + "".join(f"        {line}\n" for line in body)
        + "    except (_InvalidOperation, ValueError):\n        raise NotFastError from None\n"
    )
    exec(compile(source, name, "exec"), env)  # noqa: S102 - our own generated code
    return cast(_Build, env["build"])


def _no_build(_: Any) -> Any:
    raise NotFastError


def view_reader(payload_type: type, view_type: type[T]) -> Callable[[str], T]:
    """``load_view`` for one pair of classes: the reader made once, for reading many texts."""
    match, build, names = _view_reader(payload_type, view_type)

    def read(text: str) -> T:
        found = match(text) if match is not None else None
        if found is not None:
            try:
                return cast(T, build(found.groups()))
            except NotFastError:
                pass
        document = json.loads(text)
        if type(document) is not dict:
            msg = f"expected a JSON object, got {type(document).__name__}"
            raise TypeError(msg)
        missing = [name for name in names if name not in document]
        if missing:
            msg = f"the payload has no {', '.join(missing)}"
            raise ValueError(msg)
        return CONVERTER.structure({name: document[name] for name in names}, view_type)

    return read


def view_groups(
    payload_type: type, view_type: type[T]
) -> tuple[str, Callable[[tuple[str | None, ...]], T]] | None:
    """The regex ``view_reader`` tries first, as text, and the builder of the view from its groups.

    For matching somewhere else (the journal's reader process matches a whole journal while
    recovery builds the views): ``build(re.fullmatch(pattern, text).groups())`` is the view
    ``view_reader`` reads from ``text``, or raises ``NotFastError`` when the groups do not
    convert as they are; read that text with ``view_reader`` then, which decides. A text the
    regex does not match goes to ``view_reader`` too. None when no single regex covers the
    view (``view_reader`` reads every text through the converter). ``view_type`` may be
    ``payload_type`` itself: the payload read whole, as ``fast_loads`` does.
    """
    match, build, _ = _view_reader(payload_type, view_type)
    if match is None:
        return None
    pattern = cast("re.Pattern[str]", getattr(match, "__self__"))  # noqa: B009 - a bound fullmatch
    return pattern.pattern, cast(Callable[[tuple[str | None, ...]], T], build)


def load_view(text: str, payload_type: type, view_type: type[T]) -> T:
    """The fields of ``view_type`` read from ``text``, the JSON of a ``payload_type``.

    ``view_type`` is an attrs class whose fields are fields of ``payload_type``: the same names
    and types, in any order (``check_view``; ``TypeError`` otherwise). The view equals the one
    built from ``from_json(text, payload_type)`` whenever that decodes; the payload itself is
    never built, and its other fields are only read as far as JSON requires. Text in the
    converter's layout is read by one regex of the payload's fields (strings without escapes,
    numbers, literals, the nested meta; only valid JSON matches), a view field of a nested class
    of scalars (the meta) by one group per field of it; any other text goes through
    ``json.loads`` and the converter, which raise on invalid JSON or a missing or ill-typed
    view field. ``view_reader`` makes the reader once for many texts.
    """
    return view_reader(payload_type, view_type)(text)
