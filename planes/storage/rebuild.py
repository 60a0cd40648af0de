"""Rebuilding the components' state from journal rows: what recovery replays, and how.

A ``ReplayPlan`` is made once per recovery from the ``StateHub`` and the payload class of each
topic. It knows, per topic the components rebuild state from:

* **a topic replayed through views** (``StateHub.views``): each row gives its view, and
  ``load``, which decodes the whole payload for the few events a component keeps;
* **any other topic**: each row is decoded whole for ``StateHub.replay``.

A row is ``(seq, topic, body)``. ``body`` is the payload's JSON, or the groups of the topic's
regex in ``patterns`` (``contracts.converter.view_groups``: the view's regex, or the payload's
own for a topic decoded whole) as the journal's reader process matched them
(``JournalReader.parsed``). From groups, the view or payload is built directly, and ``load``
reads the row's JSON again by seq (``text_of``) when it is called. Groups that do not convert
as they are (``NotFastError``, or anything the class raises) are read from the text instead,
so the converter decides and explains, as it does for every text the regex does not match: the
result is the same either way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, cast

from contracts.converter import view_groups, view_reader
from contracts.meta import Payload
from planes.state import StateError, StateHub, replay_failed
from planes.storage.journal import JournalError, decode_payload, decode_view

Row = tuple[int, str, "tuple[str | None, ...] | str"]
"""``(seq, topic, payload JSON or the groups of the topic's regex)``."""
_Replayer = Callable[[str, Any, Callable[[], Any]], None]


class _Route(NamedTuple):
    """How the rows of one topic are replayed (a tuple: unpacked once per row)."""

    build: Callable[[tuple[str | None, ...]], Any] | None
    """The view (or the payload) from the groups of the topic's regex; None without one."""
    read: Callable[[str], Any] | None
    """A view topic's view from the text; None for a topic decoded whole."""
    replayers: tuple[tuple[str, _Replayer], ...]
    """A view topic's ``(state key, replay_view)``; empty for a topic decoded whole."""


_UNKNOWN = _Route(None, None, ())
"""The route of a topic no component replays from: decoded whole (which names it if unknown)."""


def _no_text(seq: int) -> str:
    msg = f"journal seq {seq}: a row of regex groups, but no way to read its text again"
    raise JournalError(msg)


class ReplayPlan:
    """How to replay journal rows into one hub's components (see the module docstring)."""

    def __init__(self, hub: StateHub, types: Mapping[str, type[Payload]]) -> None:
        self._hub, self._types = hub, types
        self._routes: dict[str, _Route] = {}
        self.patterns: dict[str, str] = {}
        """The regex of each topic whose rows may come as groups (``JournalReader.parsed``)."""
        views = hub.views
        for topic in sorted(hub.topics):
            payload_type = types.get(topic)
            if payload_type is None:
                continue  # decoding it whole fails, naming the topic
            view = views.get(topic)
            found: tuple[str, Callable[[tuple[str | None, ...]], Any]] | None
            read: Callable[[str], Any] | None
            try:
                found = view_groups(payload_type, view or payload_type)
                read = None if view is None else view_reader(payload_type, view)
            except TypeError as exc:
                raise StateError(f"the replay view of {topic}: {exc}") from exc
            replayers = hub.view_replayers(topic) if view is not None else ()
            if found is not None:
                self.patterns[topic] = found[0]
            self._routes[topic] = _Route(None if found is None else found[1], read, replayers)

    def replay(self, rows: Iterable[Row], text_of: Callable[[int], str] = _no_text) -> int:
        """Replay ``rows`` in order; return how many. ``text_of(seq)``: a row's JSON again."""
        routes, types, replay = self._routes, self._types, self._hub.replay
        # The loader of a row that came as groups: its text read again, then decoded whole.
        loaders = {topic: functools.partial(_load, topic, text_of, types) for topic in routes}
        partial = functools.partial
        replayed = 0
        for seq, topic, body in rows:
            build, read, replayers = routes.get(topic) or _UNKNOWN
            if not replayers:  # decoded whole
                if body.__class__ is not tuple or build is None:
                    payload = decode_payload(seq, topic, _text(seq, body, text_of), types)
                else:
                    try:
                        payload = build(body)
                    except Exception:  # noqa: BLE001 - the text decides, and explains
                        payload = decode_payload(seq, topic, text_of(seq), types)
                replay(topic, payload)
                replayed += 1
                continue
            assert read is not None  # noqa: S101 - every view topic has its text reader
            if body.__class__ is not tuple:  # the text (str; bytes from a foreign row)
                text = cast(str, body)
                view = decode_view(seq, topic, text, read)
                load = functools.partial(decode_payload, seq, topic, text, types)
            else:
                try:
                    view = build(body)  # type: ignore[misc]
                except Exception:  # noqa: BLE001 - the text decides, and explains
                    view = decode_view(seq, topic, text_of(seq), read)
                load = partial(loaders[topic], seq)
            key = ""
            try:
                for key, replay_view in replayers:  # noqa: B007 - named in the error
                    replay_view(topic, view, load)
            except Exception as exc:
                raise replay_failed(key, topic, exc) from exc
            replayed += 1
        return replayed


def _load(
    topic: str, text_of: Callable[[int], str], types: Mapping[str, type[Payload]], seq: int
) -> Any:
    return decode_payload(seq, topic, text_of(seq), types)


def _text(seq: int, body: tuple[str | None, ...] | str, text_of: Callable[[int], str]) -> str:
    return text_of(seq) if isinstance(body, tuple) else body


def replay_rows(hub: StateHub, rows: Iterable[Row], types: Mapping[str, type[Payload]]) -> int:
    """Replay rows of JSON text ``(seq, topic, payload)`` into ``hub``; return how many."""
    return ReplayPlan(hub, types).replay(rows)
