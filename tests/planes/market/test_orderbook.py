"""The local order book equals a plain dict model after any snapshot/delta sequence."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from contracts.market import BookLevel
from planes.market.orderbook import LocalBook

prices = st.integers(1, 60).map(lambda n: Decimal(n) / 2)
sizes = st.one_of(st.just(Decimal(0)), st.integers(1, 500).map(lambda n: Decimal(n) / 100))
levels = st.lists(st.tuples(prices, sizes), max_size=8).map(
    lambda pairs: [BookLevel(p, s) for p, s in pairs]
)
updates = st.lists(st.tuples(st.booleans(), levels, levels), min_size=1, max_size=30)


@given(updates)
def test_book_matches_a_dict_model_and_stays_sorted(
    steps: list[tuple[bool, list[BookLevel], list[BookLevel]]],
) -> None:
    book = LocalBook()
    model_bids: dict[Decimal, Decimal] = {}
    model_asks: dict[Decimal, Decimal] = {}
    for update_id, (snapshot, bids, asks) in enumerate(steps, start=1):
        if snapshot:
            book.apply_snapshot(bids, asks, update_id)
            model_bids = {lv.price: lv.size for lv in bids if lv.size}
            model_asks = {lv.price: lv.size for lv in asks if lv.size}
        else:
            book.apply_delta(bids, asks, update_id)
            for model, side in ((model_bids, bids), (model_asks, asks)):
                for lv in side:
                    if lv.size:
                        model[lv.price] = lv.size
                    else:
                        model.pop(lv.price, None)
        assert book.bids == model_bids
        assert book.asks == model_asks
        assert book.update_id == update_id
        out_bids, out_asks = book.levels()
        assert [lv.price for lv in out_bids] == sorted(model_bids, reverse=True)
        assert [lv.price for lv in out_asks] == sorted(model_asks)
        assert all(lv.size > 0 for lv in (*out_bids, *out_asks))
        assert book.best_bid == (max(model_bids) if model_bids else None)
        assert book.best_ask == (min(model_asks) if model_asks else None)


def test_depth_limits_each_side_and_crossed_is_reported() -> None:
    book = LocalBook()
    book.apply_snapshot(
        [BookLevel(Decimal(p), Decimal(1)) for p in (10, 9, 8)],
        [BookLevel(Decimal(p), Decimal(1)) for p in (11, 12, 13)],
        1,
    )
    bids, asks = book.levels(2)
    assert [b.price for b in bids] == [10, 9]
    assert [a.price for a in asks] == [11, 12]
    assert not book.crossed
    book.apply_delta([BookLevel(Decimal(11), Decimal(2))], [], 2)
    assert book.crossed
