"""``planes.execution.adapter.remember``: the bounded memory of the duplicate checks."""

from __future__ import annotations

from planes.execution.adapter import remember


def test_remember_keeps_the_latest_keys_oldest_first() -> None:
    recent: dict[str, int] = {}
    for i, key in enumerate(["a", "b", "c", "b", "d"]):
        remember(recent, key, i, 3)
    assert recent == {"c": 2, "b": 3, "d": 4}  # "b" moved last when seen again, "a" dropped
    assert list(recent) == ["c", "b", "d"]
