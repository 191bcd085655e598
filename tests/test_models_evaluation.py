"""The evaluation protocol on a hand-made dataset whose metrics are computed by hand below."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from models.base import Recommender
from models.data import Events, Interactions
from models.evaluation import next_period, prequential
from models.popularity import Popularity


class FixedScores(Recommender):
    """Scores ``-item_idx``: item 0 is always first. No state, nothing learned."""

    def __init__(self, n_items: int = 10) -> None:
        self.n_items = n_items

    def fit(self, data: Interactions) -> FixedScores:
        return self

    def new_state(self) -> None:
        return None

    def learn_one(self, state: None, item: int, rating: float, previous_rating: float | None = None) -> None:
        return None

    def score_one(self, state: None) -> np.ndarray:
        return -np.arange(self.n_items, dtype=np.float32)

    def save(self, folder: Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, folder: Path) -> FixedScores:
        raise NotImplementedError


def hand_data() -> Interactions:
    """u0 is warm (5 history positives), u1 has history but is not warm, u2 is cold, u3 only makes items known."""
    history = [(0, 5, 5.0), (0, 6, 5.0), (0, 7, 4.0), (0, 8, 4.0), (0, 9, 4.5), (1, 9, 2.0)]
    history += [(3, i, 3.0) for i in range(5)]
    stream = [
        (0, 2, 5.0),  # e1: u0, candidates {0..4}            -> rank 3
        (2, 0, 4.0),  # e2: u2 (cold), candidates all 10       -> rank 1
        (2, 1, 3.0),  # e3: not a positive: only marks item 1 as rated
        (2, 3, 4.5),  # e4: u2, candidates all but {0, 1}      -> rank 2
        (1, 9, 5.0),  # e5: u1 already rated 9: not scored
        (1, 4, 4.0),  # e6: u1, candidates all but {9}         -> rank 5
    ]

    def events(rows: list[tuple[int, int, float]], t0: int) -> Events:
        u, i, r = zip(*rows, strict=True)
        return Events(np.array(u, np.int32), np.array(i, np.int32), np.array(r, np.float32),
                      np.arange(t0, t0 + len(rows), dtype=np.int64))  # fmt: skip

    genres = [["A"], ["A"], ["B"], ["B"], ["A", "B"]] + [["C"]] * 5
    return Interactions(events(history, 0), events(stream, 100), 4, 10, sp.csr_matrix((10, 1), dtype=np.float32),
                        ["x"], np.arange(10), genres)  # fmt: skip


def test_prequential_metrics_match_hand_computation() -> None:
    result = prequential(FixedScores(), hand_data(), streaming=True, k=2, mrr_k=3)
    assert result.ranks.tolist() == [3, 1, 2, 5]
    overall, warm, cold = result.groups["overall"], result.groups["warm"], result.groups["cold"]
    assert overall["events"] == 4 and warm["events"] == 1 and cold["events"] == 2
    assert overall["hr"] == pytest.approx(2 / 4)
    assert overall["ndcg"] == pytest.approx((1 + 1 / np.log2(3)) / 4)
    assert overall["mrr"] == pytest.approx((1 / 3 + 1 + 1 / 2 + 0) / 4)
    assert warm["hr"] == 0.0 and warm["mrr"] == pytest.approx(1 / 3)
    assert cold["hr"] == 1.0 and cold["ndcg"] == pytest.approx((1 + 1 / np.log2(3)) / 2)
    assert cold["mrr"] == pytest.approx(0.75)
    # top-2 lists: [0, 1], [0, 1], [2, 3], [0, 1] -> 4 of 10 movies shown
    assert result.coverage == pytest.approx(0.4)
    # genre Jaccard distance: {A} vs {A} = 0 (three lists), {B} vs {B} = 0
    assert result.diversity == pytest.approx(0.0)


def test_static_flavour_freezes_popularity_counts() -> None:
    data = hand_data()
    static = prequential(Popularity().fit(data), data, streaming=False)
    model = Popularity().fit(data)
    streaming = prequential(model, data, streaming=True)
    assert static.groups["overall"]["events"] == streaming.groups["overall"]["events"] == 4
    # streaming counted the stream's positives (items 2, 0, 3, 9 and 4; 9 replaced a 2-star rating)
    assert model.counts_.tolist() == [1, 0, 1, 1, 1, 1, 1, 1, 1, 2]


def test_next_period_recall_and_ndcg_by_hand() -> None:
    # u0: candidates {0..4}, target {2} at rank 3; u1: candidates {0..8}, target {4} at rank 5
    result = next_period(FixedScores(), hand_data(), k=3, ndcg_k=3)
    assert result.users == 2
    assert result.recall == pytest.approx((1.0 + 0.0) / 2)
    assert result.ndcg == pytest.approx((1 / np.log2(4) + 0.0) / 2)
