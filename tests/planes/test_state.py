"""The StateHub's replay routes: whole payloads, or views when every component names one."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
import pytest

from contracts.ports import Stateful, ViewReplaying
from planes.state import StateError, StateHub


@attrs.frozen
class Small:
    symbol: str


@attrs.frozen
class Other:
    symbol: str


class Part:
    """A Stateful component that records what the hub hands it."""

    def __init__(self, key: str, topics: set[str], views: Mapping[str, type] | None = None):
        self.state_key = key
        self.state_topics = frozenset(topics)
        if views is not None:
            self.replay_views = views
        self.events: list[tuple[str, Any]] = []
        self.fail = False

    def export_state(self) -> dict[str, Any]:
        return {}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        pass

    def replay_event(self, topic: str, payload: Any) -> None:
        self.events.append((topic, payload))

    def replay_view(self, topic: str, view: Any, load: Callable[[], Any]) -> None:
        if self.fail:
            raise ValueError("no")
        self.events.append((topic, (view, load())))

    def recovered(self) -> None:
        if self.fail:
            raise KeyError("gone")


def hub_of(*parts: Part) -> StateHub:
    hub = StateHub()
    for part in parts:
        hub.add(part, part.state_key)
    return hub


def test_a_topic_is_replayed_through_views_only_when_every_component_names_the_same_one() -> None:
    plain = Part("plain", {"a", "b"})
    viewed = Part("viewed", {"a", "c", "d"}, {"a": Small, "c": Small, "d": Small})
    same = Part("same", {"c"}, {"c": Small})
    other = Part("other", {"d"}, {"d": Other})
    assert isinstance(viewed, Stateful)
    assert isinstance(viewed, ViewReplaying)
    assert not isinstance(plain, ViewReplaying)
    hub = hub_of(plain, viewed, same, other)
    assert dict(hub.views) == {"c": Small}  # a: plain wants payloads; d: two views
    assert hub.topics == {"a", "b", "c", "d"}


def test_replay_view_gives_each_component_the_view_and_the_loader() -> None:
    first, second = Part("x", {"c"}, {"c": Small}), Part("y", {"c"}, {"c": Small})
    hub = hub_of(first, second)
    loads: list[str] = []

    def load() -> str:
        loads.append("load")
        return "payload"

    hub.replay_view("c", Small("BTC"), load)
    hub.replay_view("other", Small("BTC"), load)  # nobody replays it
    assert first.events == second.events == [("c", (Small("BTC"), "payload"))]
    assert loads == ["load", "load"]


def test_a_failing_view_replay_or_recovered_names_the_component() -> None:
    part = Part("x", {"c"}, {"c": Small})
    part.fail = True
    hub = hub_of(part)
    with pytest.raises(StateError, match=r"state 'x': replay of c failed: ValueError: no"):
        hub.replay_view("c", Small("BTC"), lambda: None)
    with pytest.raises(StateError, match=r"state 'x': recovered\(\) failed: KeyError: 'gone'"):
        hub.recovered()
