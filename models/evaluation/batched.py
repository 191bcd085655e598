"""The prequential STREAMING walk of the hybrid VAE, batched, for choosing scoring-only parameters.

The item prior (beta, half-life) and the co-rating component (gamma, decay, length, window) change how a
fitted hybrid VAE scores, not its weights nor its users' latent states. :class:`ScoringWalk` therefore walks
the stream once, keeping what each scored event's ranking needs (the user's ``mu``, latest movies, movies
seen so far, the time), and then scores any setting in a few batched matrix products: about one second per
setting on ml-latest-small, against 20-30 s for :func:`~models.evaluation.prequential.prequential`.

It computes the same thing as ``prequential(model, data, streaming=True)`` for the hybrid VAE: the prior's
decayed counts at each event are exact (the counts at the start of a block of events, decayed to the event,
plus the block's earlier events), ranks break ties by lower item index, and the groups are the same. Only
float rounding differs (a matrix product instead of one matrix-vector product per event), which moves a
rank only on an exact tie; ``tests/test_models_sequence.py`` compares the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from models.data import POSITIVE, Events, Interactions
from models.evaluation.prequential import WARM_MIN_POSITIVES
from models.runtime import ModelRuntime, decayed_log_counts, trending_increment
from models.sequence import CoRatedItems
from models.state import FoldInWeights, UserState, encode, refold_many

__all__ = ["ScoringWalk", "WalkSetting", "walk_model"]

if TYPE_CHECKING:
    from models.hybrid_vae import HybridVAE

_BLOCK = 256


@dataclass(frozen=True)
class WalkSetting:
    """One point of the scoring-only grid."""

    prior_beta: float
    prior_half_life_days: float
    seq_gamma: float
    seq_decay: float
    seq_length: int
    seq_window: int
    #: False scores without the VAE's decoder: with ``seq_gamma=0`` that is recency-decayed popularity alone
    #: (the prior's counts; any ``prior_beta > 0`` ranks alike), the baseline given the hybrid's recency trick
    vae: bool = True


class ScoringWalk:
    """Everything the rankings of ``data.stream``'s scored events need, for one fitted runtime.

    ``max_length`` bounds the co-rating lengths that can be scored (each event keeps that many latest movies).
    ``max_events`` bounds the scored events kept: on a larger stream (ML-32M's validation STREAM has millions)
    every ``stride``-th candidate is scored, ``stride = ceil(positives / max_events)``; every event is still
    folded in. Below the bound (ml-latest-small: 6,728) every event is scored, as the walk does.
    """

    def __init__(self, runtime: ModelRuntime, data: Interactions, *, max_length: int = 80, k: int = 20,
                 mrr_k: int = 100, max_events: int = 50_000) -> None:  # fmt: skip
        self.runtime, self.data, self.k, self.mrr_k = runtime, data, k, mrr_k
        self.max_length = max_length
        w = runtime.weights
        h, s = data.history, data.stream
        catalogue = data.known_items()
        hist_pos = np.bincount(h.user[h.rating >= POSITIVE], minlength=data.n_users)
        hist_any = np.bincount(h.user, minlength=data.n_users)
        self.stride = max(1, -(-int((s.rating >= POSITIVE).sum()) // max_events))
        mus, recents, seen_rows, seen_cols, targets, event_pos = _scored_events(w, h, s, catalogue, data.n_items,
                                                                                max_length, self.stride)  # fmt: skip
        users = s.user[event_pos].astype(np.int64)
        groups = np.where(hist_pos[users] >= WARM_MIN_POSITIVES, "warm", np.where(hist_any[users] == 0, "cold", ""))
        n_scored = len(targets)
        self.mu = mus.reshape(n_scored, w.latent)
        self.recents = recents
        self.targets = targets
        self.groups = np.asarray(groups)
        self.event_pos = event_pos
        excluded = sp.csr_matrix((np.ones(len(seen_rows), dtype=bool), (seen_rows, seen_cols)),
                                 shape=(n_scored, data.n_items))  # fmt: skip
        self.excluded = excluded
        self.not_catalogue = np.flatnonzero(~catalogue)
        self._co: dict[int, CoRatedItems] = {}
        self._snapshots: dict[float, list[tuple[np.ndarray, float]]] = {}

    @property
    def events(self) -> int:
        return len(self.targets)

    def _prior(self, half_life_days: float, rows: np.ndarray) -> np.ndarray:
        """float32 [len(rows), n_items]: ``log(1 + c_i(t_e))`` at each scored event of one block, as the walk has it.

        The decayed counts are kept as one snapshot per block (the trending scores and clock at the block's
        first scored event, from one replay per half-life), so memory is ``blocks x n_items``, not
        ``events x n_items``; a block replays its own events from its snapshot.
        """
        snaps = self._snapshots.get(half_life_days)
        if snaps is None:
            snaps = self._snapshots[half_life_days] = self._replay(half_life_days)
        half_life = half_life_days * 86400.0
        s = self.data.stream
        trending, now = snaps[rows[0] // _BLOCK]
        trending = trending.copy()
        done = int(self.event_pos[rows[0]])
        out = np.empty((len(rows), self.data.n_items), dtype=np.float32)
        for j, pos in enumerate(self.event_pos[rows].tolist()):
            now, done = _advance(trending, now, s, done, pos, half_life)
            out[j] = decayed_log_counts(trending, now, half_life)
        return out

    def _replay(self, half_life_days: float) -> list[tuple[np.ndarray, float]]:
        """The prior's trending scores and clock at the first scored event of every block."""
        half_life = half_life_days * 86400.0
        h, s = self.data.history, self.data.stream
        trending = np.full(self.data.n_items, -np.inf)
        np.logaddexp.at(trending, h.item.astype(np.int64), trending_increment(h.ts, half_life))
        now = float(h.ts.max()) if len(h) else 0.0
        done, snaps = 0, []
        for start in range(0, self.events, _BLOCK):
            now, done = _advance(trending, now, s, done, int(self.event_pos[start]), half_life)
            snaps.append((trending.copy(), now))
        return snaps

    def _sequence(self, window: int, top_k: int) -> CoRatedItems:
        co = self._co.get(window)
        if co is None:
            co = CoRatedItems.build(self.data.history, self.data.n_items, window=window, top_k=top_k)
            self._co[window] = co
        return co

    def score(self, setting: WalkSetting, *, top_k: int = 100) -> dict[str, dict[str, float]]:
        """The walk's groups (``overall``, ``warm``, ``cold``: ``events``, ``hr``, ``ndcg``, ``mrr``) for a setting."""
        rt = self.runtime
        co = self._sequence(setting.seq_window, top_k) if setting.seq_gamma else None
        ranks = np.empty(self.events, dtype=np.int64)
        length = min(setting.seq_length, self.max_length)
        weights = np.power(setting.seq_decay, np.arange(length)).astype(np.float32)
        for start in range(0, self.events, _BLOCK):
            rows = np.arange(start, min(start + _BLOCK, self.events))
            if setting.vae:
                scores = self.mu[rows] @ rt.item_decoder.T + rt.item_bias
            else:
                scores = np.zeros((len(rows), rt.n_items), dtype=np.float32)
            if setting.prior_beta:
                scores += np.float32(setting.prior_beta) * self._prior(setting.prior_half_life_days, rows)
            if co is not None:
                r_idx: list[int] = []
                c_idx: list[int] = []
                vals: list[np.ndarray] = []
                for j, row in enumerate(rows.tolist()):
                    rec = self.recents[row][:length]
                    r_idx.extend([j] * len(rec))
                    c_idx.extend(rec)
                    vals.append(weights[: len(rec)])
                recent = sp.csr_matrix((np.concatenate(vals) if vals else np.zeros(0, np.float32), (r_idx, c_idx)),
                                       shape=(len(rows), rt.n_items))  # fmt: skip
                sims = sp.csr_matrix((co.data, co.indices, co.indptr), shape=(co.n_items, co.n_items))
                v = (recent @ sims).toarray().astype(np.float32)
                scores += np.float32(setting.seq_gamma) * np.log1p(v / np.float32(co.tau))
            ranks[rows] = self._ranks(scores, rows)
        return self._groups(ranks)

    def _ranks(self, scores: np.ndarray, rows: np.ndarray) -> np.ndarray:
        ex = self.excluded[rows]
        scores[:, self.not_catalogue] = -np.inf
        scores[ex.nonzero()] = -np.inf
        target = self.targets[rows]
        s_t = scores[np.arange(len(rows)), target][:, None]
        above = (scores > s_t).sum(axis=1)
        before = np.arange(scores.shape[1])[None, :] < target[:, None]
        tied = ((scores == s_t) & before).sum(axis=1)
        return 1 + above + tied

    def _groups(self, ranks: np.ndarray) -> dict[str, dict[str, float]]:
        out = {}
        for g, mask in (("overall", np.ones(len(ranks), bool)), ("warm", self.groups == "warm"),
                        ("cold", self.groups == "cold")):  # fmt: skip
            rk = ranks[mask]
            hit = rk <= self.k
            out[g] = {
                "events": len(rk),
                "hr": float(hit.mean()) if len(rk) else 0.0,
                "ndcg": float(np.where(hit, 1.0 / np.log2(rk + 1), 0.0).mean()) if len(rk) else 0.0,
                "mrr": float(np.where(rk <= self.mrr_k, 1.0 / rk, 0.0).mean()) if len(rk) else 0.0,
            }
        return out


def _scored_events(w: FoldInWeights, h: Events, s: Events, catalogue: np.ndarray, n_items: int, max_length: int,
                   stride: int) -> tuple[np.ndarray, list[tuple[int, ...]], np.ndarray, np.ndarray, np.ndarray,
                                         np.ndarray]:  # fmt: skip
    """The walk's scored events, vectorised: what the one-event walk sees just before each of them.

    A stream event is a candidate when it is a positive of a catalogue movie the user has not rated before
    (in HISTORY or earlier in STREAM); every ``stride``-th candidate is scored. For each, its user's events
    so far (HISTORY, then STREAM before it) give the state (each movie's latest rating folded in:
    :func:`refold_many`), the latest movies (newest first, as :func:`push_recent` keeps them) and the movies
    to exclude. Returns ``(mu, recents, excluded rows, excluded cols, targets, stream positions)``.
    ML-32M's validation STREAM has millions of events: one Python step each took minutes; this is numpy.
    """
    keep = np.isin(h.user, np.unique(s.user))
    user = np.concatenate([h.user[keep], s.user]).astype(np.int64)
    item = np.concatenate([h.item[keep], s.item]).astype(np.int64)
    rating = np.concatenate([h.rating[keep], s.rating])
    n_h = int(keep.sum())
    seq = np.arange(len(user))  # HISTORY in time order, then STREAM: the order the walk applies them
    key = user * n_items + item
    by_key = np.lexsort((seq, key))
    first = np.ones(len(key), dtype=bool)
    first[by_key[1:]] = key[by_key[1:]] != key[by_key[:-1]]
    stream_first = first[n_h:]
    candidate = (s.rating >= POSITIVE) & catalogue[s.item] & stream_first
    cand_pos = np.flatnonzero(candidate)
    event_pos = cand_pos[::stride]
    # each user's events in order: the prefix of a scored event is its user's rows before it
    by_user = np.lexsort((seq, user))
    row_in_user = np.empty(len(user), dtype=np.int64)
    u_sorted = user[by_user]
    starts = np.searchsorted(u_sorted, u_sorted, side="left")
    row_in_user[by_user] = np.arange(len(user)) - starts
    scored_global = n_h + event_pos
    prefix_start = starts[np.argsort(by_user)][scored_global]  # where the scored event's user starts in by_user
    prefix_len = row_in_user[scored_global]
    mus, recents, ex_rows, ex_cols = [], [], [], []
    chunk = 2048
    for lo in range(0, len(event_pos), chunk):
        ps, pl = prefix_start[lo : lo + chunk], prefix_len[lo : lo + chunk]
        n = len(ps)
        total = int(pl.sum())
        j = np.repeat(np.arange(n), pl)
        offsets = np.repeat(ps - np.concatenate([[0], np.cumsum(pl)[:-1]]), pl)
        rows = by_user[np.arange(total) + offsets]  # global rows of every prefix, in order
        k2 = j * n_items + item[rows]
        order = np.lexsort((rows, k2))
        last = np.ones(total, dtype=bool)
        last[:-1] = k2[order][1:] != k2[order][:-1]
        latest = order[last]  # one row per (scored event, movie): its latest rating
        latest = latest[np.lexsort((rows[latest], j[latest]))]  # by event, then position
        lj, li, lr = j[latest], item[rows[latest]], rating[rows[latest]]
        pre, norm2, n_events = refold_many(w, lj, li, lr, n)
        bounds = np.searchsorted(lj, np.arange(n + 1))
        items_list = li.tolist()
        for k in range(n):
            a, b = int(bounds[k]), int(bounds[k + 1])
            mus.append(encode(w, UserState(pre=pre[k], norm2=float(norm2[k]), n_events=int(n_events[k])))[0])
            recents.append(tuple(items_list[max(a, b - max_length) : b][::-1]))
        ex_rows.append(lj + lo)
        ex_cols.append(li)
    mu = np.asarray(mus, dtype=np.float32).reshape(len(event_pos), w.latent)
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int64)  # noqa: E731
    return mu, recents, cat(ex_rows), cat(ex_cols), s.item[event_pos].astype(np.int64), event_pos.astype(np.int64)


def _advance(trending: np.ndarray, now: float, stream: Events, done: int, pos: int,
             half_life: float) -> tuple[float, int]:  # fmt: skip
    """Count stream events ``done..pos-1`` into ``trending`` (in place), as ``observe`` does; the new clock and pos."""
    if pos > done:
        np.logaddexp.at(trending, stream.item[done:pos].astype(np.int64), trending_increment(stream.ts[done:pos],
                                                                                             half_life))  # fmt: skip
        now = max(now, float(stream.ts[done:pos].max()))
    return now, max(done, pos)


def walk_model(model: HybridVAE, data: Interactions, *, max_events: int = 50_000) -> dict[str, dict[str, float]]:
    """The STREAMING walk's groups for a fitted hybrid VAE at its own scoring parameters, batched.

    Equal to ``prequential(model, data, streaming=True)``'s HR/NDCG/MRR per group below ``max_events``
    scored events (see the module docstring); above, every ``stride``-th is scored. The model's co-rating
    table is reused when it was counted on ``data.history`` with the same window.
    """
    walk = ScoringWalk(model.runtime_, data, max_length=max(int(model.seq_length), 1), max_events=max_events)
    co = model.runtime_.sequence
    if co is not None and co.window == int(model.seq_window):
        walk._co[co.window] = co
    setting = WalkSetting(float(model.prior_beta), float(model.prior_half_life_days), float(model.seq_gamma),
                          float(model.seq_decay), int(model.seq_length), int(model.seq_window))  # fmt: skip
    return walk.score(setting, top_k=int(model.seq_top_k))
