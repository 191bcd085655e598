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
rank only on an exact tie; ``tests/test_models_tuning.py`` compares the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from models.data import POSITIVE, Events, Interactions
from models.evaluation.prequential import WARM_MIN_POSITIVES
from models.runtime import ModelRuntime, decayed_log_counts, trending_increment
from models.sequence import CoRatedItems, push_recent
from models.state import FoldInWeights, UserState, cold_state, encode, fold_in, latest_ratings, refold_many

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
        states, recent, seen, last = _history_states(w, h, np.unique(s.user), data.n_items, max_length)
        self.stride = max(1, -(-int((s.rating >= POSITIVE).sum()) // max_events))
        candidates = 0
        mus, recents, seen_rows, seen_cols, targets, groups, event_pos = [], [], [], [], [], [], []
        for n, (u, i, r) in enumerate(zip(s.user.tolist(), s.item.tolist(), s.rating.tolist(), strict=True)):
            user_seen = seen.setdefault(u, set())
            scored = r >= POSITIVE and catalogue[i] and i not in user_seen
            if scored:
                candidates += 1
            if scored and (candidates - 1) % self.stride == 0:
                state = states.get(u) or cold_state(w)
                mus.append(encode(w, state)[0])
                recents.append(recent.get(u, ()))
                row = len(targets)
                seen_rows.extend([row] * len(user_seen))
                seen_cols.extend(user_seen)
                targets.append(i)
                groups.append("warm" if hist_pos[u] >= WARM_MIN_POSITIVES else "cold" if hist_any[u] == 0 else "")
                event_pos.append(n)
            states[u] = fold_in(w, states.get(u) or cold_state(w), i, r, last.get((u, i)))
            recent[u] = push_recent(recent.get(u, ()), i, max_length)
            user_seen.add(i)
            last[(u, i)] = r
        n_scored = len(targets)
        self.mu = np.asarray(mus, dtype=np.float32).reshape(n_scored, w.latent)
        self.recents = recents
        self.targets = np.asarray(targets, dtype=np.int64)
        self.groups = np.asarray(groups)
        self.event_pos = np.asarray(event_pos, dtype=np.int64)
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
                r_idx, c_idx, vals = [], [], []
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


def _history_states(w: FoldInWeights, h: Events, users: np.ndarray, n_items: int, max_length: int) -> tuple[
    dict[int, UserState], dict[int, tuple[int, ...]], dict[int, set[int]], dict[tuple[int, int], float]
]:  # fmt: skip
    """Each of ``users``' state, latest movies (newest first), movies seen and latest ratings after HISTORY:
    what folding ``h`` event by event leaves, computed at matrix-product speed (:func:`refold_many`)."""
    keep = np.isin(h.user, users)
    user, item, rating, _ = latest_ratings(h.user[keep], h.item[keep], h.rating[keep], n_items)
    local = np.searchsorted(users, user)
    pre, norm2, n_events = refold_many(w, local, item, rating, len(users))
    starts = np.searchsorted(local, np.arange(len(users) + 1))
    states: dict[int, UserState] = {}
    recent: dict[int, tuple[int, ...]] = {}
    seen: dict[int, set[int]] = {}
    last: dict[tuple[int, int], float] = {}
    items, ratings = item.tolist(), rating.tolist()
    for k, u in enumerate(users.tolist()):
        lo, hi = int(starts[k]), int(starts[k + 1])
        if lo == hi:
            continue
        states[u] = UserState(pre=pre[k], norm2=float(norm2[k]), n_events=int(n_events[k]))
        recent[u] = tuple(items[max(lo, hi - max_length) : hi][::-1])  # by latest position: push_recent's order
        seen[u] = set(items[lo:hi])
        last.update(zip(((u, i) for i in items[lo:hi]), ratings[lo:hi], strict=True))
    return states, recent, seen, last


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
