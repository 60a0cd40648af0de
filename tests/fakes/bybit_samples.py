"""The real Bybit V5 WebSocket messages the tests and fakes are built from, in the repository.

``tests/data/bybit/ws/public`` holds the public stream's (tickers, order book, trades, klines)
and ``tests/data/bybit/ws/private`` the private stream's (``order``, ``execution``,
``position``, ``wallet``). They are copies of ``../shared/data/bybit`` (plus ``position`` and
``wallet`` in Bybit's documented shape), kept here so that a fresh clone has them: every test
that needs a sample reads it through this module, nothing reads ``../shared``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

SAMPLES_DIR: Final = Path(__file__).resolve().parents[1] / "data" / "bybit" / "ws"
PUBLIC_DIR: Final = SAMPLES_DIR / "public"
PRIVATE_DIR: Final = SAMPLES_DIR / "private"


def read_sample(path: Path) -> dict[str, Any]:
    """One sample message (a JSON object) from ``path``."""
    loaded = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        msg = f"{path}: a Bybit sample message must be a JSON object"
        raise TypeError(msg)
    return loaded


def private_sample(name: str) -> dict[str, Any]:
    """The private stream's ``name`` message: ``order``, ``execution``, ``position``, ``wallet``."""
    return read_sample(PRIVATE_DIR / f"{name}.json")
