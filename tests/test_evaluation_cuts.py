"""Multi-cut evaluation: the re-split, ItemKNN, EASE's item prior, periodic retraining, aggregation.

Every oracle below is computed by hand from the documented formulas (docs/evaluation.md).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from models.base import Recommender
from models.data import Events, Interactions
from models.ease import EASE
from models.evaluation.cuts import cut_at
from models.evaluation.multicut import ModelSpec, aggregate, evaluate_cuts, summarise
from models.evaluation.prequential import prequential
from models.itemknn import ItemKNN, cosine_top_k
from models.popularity import Popularity
from reelstream.errors import ConfigError, DataError
from reelstream.settings import Settings
from reelstream.shell.cli import app
from reelstream.shell.commands.evaluate import parse_cuts
from tests.models_support import taste_data
from tests.test_models_cli import write_movielens

DAY = 86400


def make_data(history: list[tuple[int, int, float, int]], stream: list[tuple[int, int, float, int]],
              n_users: int, n_items: int) -> Interactions:  # fmt: skip
    def events(rows: list[tuple[int, int, float, int]]) -> Events:
        if not rows:
            return Events(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros(0, np.int64))
        u, i, r, t = zip(*rows, strict=True)
        return Events(np.array(u, np.int32), np.array(i, np.int32), np.array(r, np.float32), np.array(t, np.int64))

    return Interactions(events(history), events(stream), n_users, n_items,
                        sp.csr_matrix((n_items, 1), dtype=np.float32), ["x"], np.arange(n_items) + 100,
                        [["A"]] * n_items)  # fmt: skip


# --- the cut ------------------------------------------------------------------------------------


def test_cut_at_resplits_history_and_stream_with_the_store_rule() -> None:
    # ten ratings at times 1..10 (one tie at 4); movie 3 is first rated at t=9
    rows = [(0, 0, 5.0, 1), (1, 0, 4.0, 2), (0, 1, 3.0, 3), (1, 1, 5.0, 4), (2, 2, 4.0, 4),
            (2, 0, 2.0, 6), (0, 2, 5.0, 7), (1, 2, 4.0, 8), (2, 3, 5.0, 9), (0, 3, 4.0, 10)]  # fmt: skip
    data = make_data(rows[:8], rows[8:], 3, 5)  # the original split: 0.8
    at_half = cut_at(data, 0.5)
    # lower 0.5-quantile of [1, 2, 3, 4, 4, 6, 7, 8, 9, 10]: index floor(0.5 * 9) = 4 -> t = 4; ts <= 4 is HISTORY
    assert at_half.metadata["split"]["cut_ts"] == 4
    assert at_half.history.ts.tolist() == [1, 2, 3, 4, 4]
    assert at_half.stream.ts.tolist() == [6, 7, 8, 9, 10]
    assert at_half.known_items().tolist() == [True, True, True, False, False]
    # 0.3: index floor(2.7) = 2 -> t = 3: movie 2 (first rated at 4) leaves the catalogue
    at_03 = cut_at(data, 0.3)
    assert at_03.history.ts.tolist() == [1, 2, 3]
    assert at_03.known_items().tolist() == [True, True, False, False, False]
    # the stream of a later cut keeps (ts, user, item) order
    at_09 = cut_at(cut_at(data, 0.3), 0.9)  # index floor(8.1) = 8 -> t = 9
    assert at_09.history.ts.tolist() == [1, 2, 3, 4, 4, 6, 7, 8, 9] and at_09.stream.user.tolist() == [0]
    assert at_09.history.user[3:5].tolist() == [1, 2]


def test_cut_quantile_outside_zero_one_is_a_precise_error() -> None:
    data = make_data([(0, 0, 5.0, 1)], [(0, 1, 5.0, 2)], 1, 2)
    with pytest.raises(DataError, match=r"cut quantile must be in \(0, 1\), got 1"):
        cut_at(data, 1.0)


def test_parse_cuts_rejects_bad_lists() -> None:
    assert parse_cuts("0.7, 0.8,0.9") == [0.7, 0.8, 0.9]
    with pytest.raises(ConfigError, match="'x' is not a number"):
        parse_cuts("0.7,x")
    with pytest.raises(ConfigError, match=r"1\.5 is not a quantile"):
        parse_cuts("0.7,1.5")
    with pytest.raises(ConfigError, match="names a cut twice"):
        parse_cuts("0.8,0.8")
    result = CliRunner().invoke(app, ["evaluate", "--cuts", "0.5,2"])
    assert isinstance(result.exception, ConfigError) and "2 is not a quantile" in str(result.exception)


# --- ItemKNN ------------------------------------------------------------------------------------

# positives: u0 {0, 1, 2}, u1 {0, 1}, u2 {1, 2, 3}, u3 {0, 3}; u3 also gave movie 2 two stars (not a positive)
KNN_ROWS = [(0, 0, 5.0, 1), (0, 1, 4.0, 2), (0, 2, 5.0, 3), (1, 0, 4.5, 4), (1, 1, 5.0, 5), (2, 1, 4.0, 6),
            (2, 2, 4.0, 7), (2, 3, 5.0, 8), (3, 0, 5.0, 9), (3, 3, 4.0, 10), (3, 2, 2.0, 11)]  # fmt: skip


def hand_cosine(shrink: float = 0.0) -> np.ndarray:
    """sim(i, j) = common users / (sqrt(n_i n_j) + shrink); n = (3, 3, 2, 2); common counts by hand."""
    n = [3, 3, 2, 2]
    common = {(0, 1): 2, (0, 2): 1, (0, 3): 1, (1, 2): 2, (1, 3): 1, (2, 3): 1}
    sim = np.zeros((4, 4))
    for (i, j), c in common.items():
        sim[i, j] = sim[j, i] = c / (math.sqrt(n[i] * n[j]) + shrink)
    return sim


def test_itemknn_scores_are_summed_cosine_rows() -> None:
    data = make_data(KNN_ROWS, [], 4, 5)
    model = ItemKNN(k=10, tie_break=0.0).fit(data)
    assert model.S_.toarray()[:4, :4] == pytest.approx(hand_cosine(), abs=1e-6)
    state = model.learn_one(model.learn_one(model.new_state(), 0, 5.0), 2, 4.0)
    expected = hand_cosine()[0] + hand_cosine()[2]
    assert model.score_one(state)[:4] == pytest.approx(expected, abs=1e-6)
    # a positive turned into a 2-star rating takes its row away again; a 3-star rating adds nothing
    assert model.score_one(model.learn_one(state, 2, 2.0, previous_rating=4.0))[:4] == pytest.approx(
        hand_cosine()[0], abs=1e-6
    )
    assert model.learn_one(state, 3, 3.0) is state
    shrunk = ItemKNN(k=10, shrinkage=2.0, tie_break=0.0).fit(data)
    assert shrunk.S_.toarray()[:4, :4] == pytest.approx(hand_cosine(2.0), abs=1e-6)


def test_itemknn_keeps_the_top_k_neighbours_ties_to_the_lower_index() -> None:
    data = make_data(KNN_ROWS, [], 4, 5)
    S = ItemKNN(k=2, tie_break=0.0).fit(data).S_.toarray()
    full = hand_cosine()
    # row 0: 1 (2/3), then 2 and 3 tie at 1/sqrt(6): the lower index (2) stays
    assert S[0, :4] == pytest.approx([0.0, full[0, 1], full[0, 2], 0.0], abs=1e-6)
    # row 2: 1 (2/sqrt(6)) and 3 (1/2) beat 0 (1/sqrt(6))
    assert S[2, :4] == pytest.approx([0.0, full[2, 1], 0.0, full[2, 3]], abs=1e-6)
    assert (np.diff(ItemKNN(k=2).fit(data).S_.indptr) <= 2).all()
    # the never-rated movie 4 has no neighbours and is nobody's neighbour
    assert S[4].sum() == 0 and S[:, 4].sum() == 0


def test_cosine_top_k_blocks_agree_with_a_dense_computation(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    X = sp.csr_matrix((rng.random((30, 50)) < 0.2).astype(np.float32))
    monkeypatch.setattr("models.itemknn._BLOCK", 7)  # several blocks, the last one short
    S = cosine_top_k(X, 5, shrinkage=1.0).toarray()
    d = X.toarray()
    n = d.sum(axis=0)
    dense = (d.T @ d) / (np.sqrt(np.outer(n, n)) + 1.0)
    np.fill_diagonal(dense, 0.0)
    for i in range(50):
        kept = np.flatnonzero(S[i])
        assert len(kept) <= 5 and S[i, kept] == pytest.approx(dense[i, kept], rel=1e-5)
        if len(kept):
            assert dense[i][np.setdiff1d(np.arange(50), kept)].max(initial=0) <= S[i, kept].min() + 1e-6


# --- EASE with the item prior -------------------------------------------------------------------


def test_ease_prior_adds_beta_log1p_decayed_counts_to_unit_spread_scores() -> None:
    # item 0 rated at day 0 and 1 (the clock is day 1), item 1 at day 1, item 2 once at day 0
    history = [(0, 0, 5.0, 0), (0, 2, 4.0, 0), (1, 0, 2.0, DAY), (1, 1, 5.0, DAY), (2, 1, 4.0, DAY), (2, 0, 4.0, DAY)]
    data = make_data(history, [], 3, 4)
    model = EASE(l2=1.0, tie_break=0.0, prior_beta=2.0, prior_half_life_days=1.0).fit(data)
    # decayed counts at day 1 with a one-day half-life: item 0: 0.5 + 1 + 1; item 1: 2; item 2: 0.5; item 3: 0
    log_c = np.log1p([2.5, 2.0, 0.5, 0.0])
    assert model.score_one(model.new_state()) == pytest.approx(2.0 * log_c, abs=1e-5)  # no positives: the prior
    plain = EASE(l2=1.0, tie_break=0.0).fit(data)
    raw = plain.score_one(plain.learn_one(plain.new_state(), 2, 5.0))
    known = np.array([True, True, True, False])  # the movies with a HISTORY positive (EASE's columns)
    expected = raw / raw[known].std() + 2.0 * log_c
    assert model.score_one(model.learn_one(model.new_state(), 2, 5.0)) == pytest.approx(expected, abs=1e-5)
    # observe: one event on item 3 one day later halves every earlier count and adds 1 for item 3
    model.observe(3, 4.0, None, ts=2 * DAY)
    assert model.score_one(model.new_state()) == pytest.approx(2.0 * np.log1p([1.25, 1.0, 0.25, 1.0]), abs=1e-5)
    # without a prior, observe keeps nothing and the scores are plain EASE
    plain.observe(3, 4.0, None, ts=2 * DAY)
    assert plain.score_one(plain.new_state()).tolist() == [0.0, 0.0, 0.0, 0.0]


def test_ease_with_prior_round_trips_through_save(tmp_path: Path) -> None:
    data = taste_data()
    model = EASE(l2=5.0, prior_beta=1.0, prior_half_life_days=3.0).fit(data)
    model.observe(4, 5.0, None, ts=float(data.history.ts.max() + 50))
    model.save(tmp_path / "ease")
    loaded = EASE.load(tmp_path / "ease")
    state = model.learn_one(model.new_state(), 1, 5.0)
    assert loaded.prior_beta == 1.0 and loaded.score_one(state) == pytest.approx(model.score_one(state))


def test_itemknn_round_trips_through_save(tmp_path: Path) -> None:
    data = taste_data()
    model = ItemKNN(k=3, prior_beta=0.5).fit(data)
    model.save(tmp_path / "knn")
    loaded = ItemKNN.load(tmp_path / "knn")
    state = model.learn_one(model.new_state(), 1, 5.0)
    assert loaded.score_one(loaded.learn_one(loaded.new_state(), 1, 5.0)) == pytest.approx(model.score_one(state))


# --- periodic retraining ------------------------------------------------------------------------


FITS: list[dict[str, int]] = []


class Recording(Recommender):
    """Ranks movie ``fits % n_items`` first; records the data each fit saw (in :data:`FITS`)."""

    def __init__(self, n_items: int = 6) -> None:
        self.n_items = n_items

    def fit(self, data: Interactions) -> Recording:
        FITS.append({"max_ts": int(data.history.ts.max()), "events": len(data.history),
                              "stream": len(data.stream)})  # fmt: skip
        self.fits_ = len(FITS)
        return self

    def new_state(self) -> int:
        return 0

    def learn_one(self, state: int, item: int, rating: float, previous_rating: float | None = None) -> int:
        return state + 1

    def score_one(self, state: int) -> np.ndarray:
        s = np.zeros(self.n_items, dtype=np.float32)
        s[(self.fits_ - 1) % self.n_items] = 1.0
        return s

    def save(self, folder: Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, folder: Path) -> Recording:
        raise NotImplementedError


def test_retrain_refits_on_the_past_only_at_each_period() -> None:
    history = [(0, 0, 5.0, 0), (1, 1, 5.0, 0), (1, 2, 5.0, 0), (0, 3, 5.0, 0), (1, 4, 5.0, 0), (0, 5, 5.0, 0)]
    # stream events on days 10, 11, 12.5, 13, 14, 16: periods of 2 days from day 10 -> refits at 12.5, 14, 16
    days = [10, 11, 12.5, 13, 14, 16]
    stream = [(2, i, 5.0, int(d * DAY)) for i, d in zip([1, 2, 0, 3, 4, 5], days, strict=True)]
    data = make_data(history, stream, 3, 6)
    FITS.clear()
    model = Recording().fit(data)
    result = prequential(model, data, refit=lambda d: Recording().fit(d), retrain_every_s=2 * DAY)
    assert result.flavour == "retrain" and result.retrains == 3
    refits = FITS[1:]
    # each refit sees HISTORY + the stream events strictly before the event that triggered it
    assert [r["max_ts"] for r in refits] == [11 * DAY, 13 * DAY, 14 * DAY]
    assert [r["events"] for r in refits] == [6 + 2, 6 + 4, 6 + 5] and all(r["stream"] == 0 for r in refits)
    # model k ranks movie k-1 first: event 1 (movie 1) by model 1 ranks 0 first; candidates shrink as u2 rates
    # e1 movie 1 (model 1, top 0): rank 2; e2 movie 2 (model 1, top 0): rank 2 among {0, 2, 3, 4, 5}
    # e3 movie 0 (model 2, top 1 already seen): rank 1; e4 movie 3 (model 2): rank 1 among {3, 4, 5}
    # e5 movie 4 (model 3, top 2 seen): rank 1; e6 movie 5 (model 4, top 3 seen): rank 1
    assert result.ranks.tolist() == [2, 2, 1, 1, 1, 1]


def test_retrain_needs_streaming_and_a_period() -> None:
    data = make_data([(0, 0, 5.0, 0)], [(0, 1, 5.0, 1)], 1, 2)
    model = Popularity().fit(data)
    with pytest.raises(ValueError, match="only with streaming=True"):
        prequential(model, data, streaming=False, refit=Popularity().fit, retrain_every_s=1.0)
    with pytest.raises(ValueError, match="go together"):
        prequential(model, data, refit=Popularity().fit)


# --- aggregation --------------------------------------------------------------------------------


def test_aggregate_mean_sample_std_min_max() -> None:
    a = aggregate([0.10, 0.20, 0.40])
    assert a["mean"] == pytest.approx(0.7 / 3) and a["min"] == 0.10 and a["max"] == 0.40 and a["n"] == 3
    mean = 0.7 / 3
    assert a["std"] == pytest.approx(math.sqrt(((0.1 - mean) ** 2 + (0.2 - mean) ** 2 + (0.4 - mean) ** 2) / 2))
    assert aggregate([0.3])["std"] == 0.0


def _run(model: str, flavour: str, hr: float, warm: float = 0.0) -> dict[str, object]:
    groups = {"overall": {"hr": hr, "ndcg": 0.0, "mrr": 0.0}, "warm": {"hr": warm, "ndcg": 0.0, "mrr": 0.0},
              "cold": {"hr": 0.0, "ndcg": 0.0, "mrr": 0.0}}  # fmt: skip
    return {"model": model, "flavour": flavour, "groups": groups, "coverage": 0.0, "novelty": 0.0, "diversity": 0.0}


def test_summary_ratios_against_the_best_ease_and_itemknn() -> None:
    runs = [_run("EASE(l2=200)", "streaming", 0.10, 0.30), _run("EASE tuned", "streaming", 0.20, 0.20),
            _run("EASE tuned", "static", 0.50), _run("ItemKNN tuned", "streaming", 0.125),
            _run("hybrid VAE", "streaming", 0.20, 0.10), _run("hybrid VAE", "streaming", 0.30, 0.30),
            _run("hybrid VAE", "retrain", 0.30), _run("hybrid VAE", "retrain", 0.35)]  # fmt: skip
    s = summarise(runs)
    assert s["models"]["hybrid VAE"]["streaming"]["hr"]["mean"] == pytest.approx(0.25)
    assert s["models"]["hybrid VAE"]["streaming"]["hr"]["n"] == 2
    r = s["ratios"]
    assert r["best_ease"] == "EASE tuned"  # by STREAMING HR@20, not by the static row
    assert r["hybrid_over_best_ease"] == pytest.approx(0.25 / 0.20)
    assert r["warm_hybrid_over_best_ease"] == pytest.approx(0.20 / 0.20)
    assert r["hybrid_over_itemknn"] == pytest.approx(0.25 / 0.125)
    assert r["retrain_over_frozen"] == {"hybrid VAE": pytest.approx(0.325 / 0.25)}


def test_evaluate_cuts_runs_every_model_flavour_and_seed_at_every_cut() -> None:
    data = taste_data()
    span_days = float(data.stream.ts.max() - data.history.ts.min()) / DAY
    lineup = {"popularity": ModelSpec(lambda _s: Popularity()),
              "ItemKNN": ModelSpec(lambda _s: ItemKNN(k=5)),
              "seeded": ModelSpec(lambda s: EASE(l2=1.0 + s), seeds=(0, 1))}  # fmt: skip
    report = evaluate_cuts(data, [0.6, 0.8], lambda d: lineup, retrain_every_days=span_days / 10)
    assert [c["quantile"] for c in report["cuts"]] == [0.6, 0.8]
    for cut in report["cuts"]:
        keys = sorted((r["model"], r["flavour"], r["seed"]) for r in cut["runs"])
        expected = sorted((m, f, s) for m, seeds in (("popularity", [0]), ("ItemKNN", [0]), ("seeded", [0, 1]))
                          for s in seeds for f in ("static", "streaming", "retrain"))  # fmt: skip
        assert keys == expected
        assert all(r["retrains"] >= 1 for r in cut["runs"] if r["flavour"] == "retrain")
        assert cut["summary"]["models"]["seeded"]["streaming"]["hr"]["n"] == 2
        assert cut["history_ratings"] + cut["stream_ratings"] == len(data.history) + len(data.stream)
    assert report["cuts"][0]["history_ratings"] < report["cuts"][1]["history_ratings"]


def test_evaluate_cuts_cli_writes_the_report(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "ml-tiny"
    write_movielens(folder)
    result = CliRunner().invoke(app, ["evaluate", "--data", str(folder), "--cuts", "0.8", "--seeds", "2",
                                      "--retrain-every-days", "0.03", "--no-tune"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((settings.reports_dir / "evaluation-cuts.json").read_text())
    assert [c["quantile"] for c in report["cuts"]] == [0.8] and report["seeds"] == 2
    for cut in report["cuts"]:
        hybrid = cut["summary"]["models"]["hybrid VAE"]
        assert set(hybrid) == {"static", "streaming", "retrain"} and hybrid["streaming"]["hr"]["n"] == 2
        assert {"hybrid_over_best_ease", "hybrid_over_itemknn", "retrain_over_frozen"} <= set(cut["summary"]["ratios"])
    assert "hybrid / best EASE" in result.output
    markdown = (settings.reports_dir / "evaluation-cuts.md").read_text()
    assert "| hybrid VAE | retrain | 2 |" in markdown and "hybrid / ItemKNN" in markdown


def test_the_hybrid_is_built_with_its_cut_s_own_choice() -> None:
    """standard_lineup configures the hybrid once per cut and builds every seed with that choice."""
    from models.evaluation.multicut import standard_lineup

    calls: list[int] = []
    made: list[tuple[int, dict]] = []

    def configure(d) -> dict:
        calls.append(len(d.history))
        return {"seq_gamma": 2.5}

    def hybrid(seed: int, **chosen):
        made.append((seed, chosen))
        return Popularity()

    data = taste_data()
    build = standard_lineup(hybrid, (0, 1), tune=False, configure=configure)
    assert build(data)["hybrid VAE"].tuned is None and calls == []  # --no-tune: the defaults, no search
    spec = standard_lineup(hybrid, (0, 1), tune=True, configure=configure)(data)["hybrid VAE"]
    assert calls == [len(data.history)] and spec.tuned == {"seq_gamma": 2.5}
    spec.make(0), spec.make(1)
    assert made == [(0, {"seq_gamma": 2.5}), (1, {"seq_gamma": 2.5})]
