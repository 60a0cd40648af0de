"""mypy --strict catches a payload of the wrong type at publish and subscribe time."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from mypy import api

ROOT = Path(__file__).resolve().parents[2]

SNIPPET = """
from decimal import Decimal

from contracts.market import KlineEvent, TickerEvent
from contracts.meta import EventMeta, Source
from contracts.topics import MARKET_KLINE, MARKET_TICKER
from planes.bus import EventBus

bus = EventBus()
meta = EventMeta(Source.MARKET, 1)
one = Decimal(1)
kline = KlineEvent(meta, "x", "BTCUSDT", "1", 0, 1, one, one, one, one, one, True)


def on_ticker(ticker: TickerEvent) -> None: ...


bus.publish(MARKET_KLINE, kline)  # fine
bus.subscribe(MARKET_TICKER, on_ticker)  # fine
bus.publish(MARKET_TICKER, kline)  # line 20: wrong payload
bus.subscribe(MARKET_KLINE, on_ticker)  # line 21: wrong handler
"""


@pytest.mark.slow
def test_mypy_rejects_wrong_payload_and_handler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # mypy finds the project's packages from the repository root
    source = tmp_path / "snippet.py"
    source.write_text(textwrap.dedent(SNIPPET))
    out, err, status = api.run(
        ["--strict", "--no-error-summary", "--cache-dir", str(tmp_path / "cache"), str(source)]
    )
    assert status == 1, (out, err)
    errors = [line for line in out.splitlines() if ": error:" in line]
    lines = sorted(int(line.split(":")[1]) for line in errors)
    assert lines == [20, 21], out
    assert "KlineEvent" in out
