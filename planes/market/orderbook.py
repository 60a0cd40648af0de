"""A local order book kept from snapshots and deltas.

A snapshot replaces the book; in a delta a level with size 0 is deleted and any other size
replaces the level. ``levels()`` returns bids best (highest) first and asks best (lowest) first.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from contracts.market import BookLevel

_ZERO = Decimal(0)


class LocalBook:
    """One symbol's book: price -> size per side, plus the last update id."""

    __slots__ = ("asks", "bids", "update_id")

    def __init__(self) -> None:
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.update_id = 0

    def apply_snapshot(
        self, bids: Iterable[BookLevel], asks: Iterable[BookLevel], update_id: int
    ) -> None:
        """Replace the whole book."""
        self.bids = {level.price: level.size for level in bids if level.size != _ZERO}
        self.asks = {level.price: level.size for level in asks if level.size != _ZERO}
        self.update_id = update_id

    def apply_delta(
        self, bids: Iterable[BookLevel], asks: Iterable[BookLevel], update_id: int
    ) -> None:
        """Change the levels named; size 0 deletes a level."""
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for level in levels:
                if level.size == _ZERO:
                    side.pop(level.price, None)
                else:
                    side[level.price] = level.size
        self.update_id = update_id

    def levels(self, depth: int | None = None) -> tuple[list[BookLevel], list[BookLevel]]:
        """``(bids, asks)`` sorted best first, at most ``depth`` each."""
        bids = sorted(self.bids.items(), key=lambda item: item[0], reverse=True)[:depth]
        asks = sorted(self.asks.items(), key=lambda item: item[0])[:depth]
        return [BookLevel(p, s) for p, s in bids], [BookLevel(p, s) for p, s in asks]

    @property
    def best_bid(self) -> Decimal | None:
        """The highest bid price, or None."""
        return max(self.bids) if self.bids else None

    @property
    def best_ask(self) -> Decimal | None:
        """The lowest ask price, or None."""
        return min(self.asks) if self.asks else None

    @property
    def crossed(self) -> bool:
        """True when the best bid is at or above the best ask (the book is not trustworthy)."""
        bid, ask = self.best_bid, self.best_ask
        return bid is not None and ask is not None and bid >= ask
