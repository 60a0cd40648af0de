"""Replaying events into one component as boot-time recovery does (the tests of each plane)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Literal

from contracts.converter import fast_dumps
from contracts.execution import PositionView
from contracts.meta import Payload
from contracts.ports import Stateful
from contracts.topics import PORTFOLIO_POSITION, STATE_REGISTRY, BotEventMap
from planes.state import StateHub
from planes.storage.rebuild import ReplayPlan, Row, replay_rows

TYPES = {name: topic.payload for name, topic in BotEventMap.items()}
TYPES[STATE_REGISTRY.name] = STATE_REGISTRY.payload  # the storage plugin's topic, as at boot


Views = bool | Literal["groups"]
"""How a test replays: from the journal text (views where named), as the reader process sends
the rows (``"groups"``), or every payload whole to ``replay_event`` (False)."""


def as_the_reader_sends(patterns: Mapping[str, str], rows: Sequence[Row]) -> list[Row]:
    """Rows of JSON text as the journal's reader process sends them: the groups of the topic's
    regex where it matches (``journal_writer.read``), the text elsewhere."""
    sent: list[Row] = []
    for seq, topic, text in rows:
        assert isinstance(text, str)
        found = re.fullmatch(patterns[topic], text) if topic in patterns else None
        sent.append((seq, topic, text if found is None else found.groups()))
    return sent


def replay_as_the_reader_sends(hub: StateHub, rows: Sequence[Row]) -> int:
    """``replay_rows`` on the rows as the reader process sends them (texts again by seq)."""
    plan = ReplayPlan(hub, TYPES)
    texts = {seq: text for seq, _, text in rows if isinstance(text, str)}
    return plan.replay(as_the_reader_sends(plan.patterns, rows), texts.__getitem__)


def replay(
    component: Stateful, key: str, events: Sequence[tuple[str, Payload]], *, views: Views
) -> None:
    """Replay ``events`` as recovery does: their journal text, position updates from views.

    ``views=False``: every payload whole to ``replay_event``; ``"groups"``: the rows as the
    journal's reader process sends them.
    """
    if not views:
        for topic, payload in events:
            if topic in component.state_topics:
                component.replay_event(topic, payload)
        return
    hub = StateHub()
    hub.add(component, key)
    assert dict(hub.views) == {PORTFOLIO_POSITION.name: PositionView}
    rows = [
        (seq, topic, fast_dumps(payload))
        for seq, (topic, payload) in enumerate(events, 1)
        if topic in hub.topics
    ]
    if views == "groups":
        assert replay_as_the_reader_sends(hub, rows) == len(rows)
    else:
        assert replay_rows(hub, rows, TYPES) == len(rows)
