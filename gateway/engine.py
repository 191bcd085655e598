"""Ranking: pure functions from scores, a catalogue and a rule set to an explained list.

The per-request cost is one mat-vec over the catalogue (:func:`personal_scores`),
a few vectorised passes (standardise, add the rule set's static adjustment,
mask rated items), one ``argpartition`` for a candidate pool, and then work on
the pool only: the dislike-similarity filter, MMR with genre and promotion caps
(:func:`select`), and the "because you rated" explanations (:func:`explain`).
Nothing here touches Redis, the clock or global state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gateway.catalog import Catalog
from gateway.rules import RuleSet

__all__ = [
    "Pick",
    "candidate_pool",
    "explain",
    "personal_scores",
    "preference_boost",
    "select",
    "static_adjustment",
    "too_similar_to_dislikes",
]

NEG_INF = np.float32(-np.inf)


@dataclass(frozen=True)
class Pick:
    """One chosen item: its catalogue index, final score and why it is there."""

    index: int
    score: float
    promoted: bool
    diversity_pick: bool


def static_adjustment(cat: Catalog, rules: RuleSet) -> np.ndarray:
    """Per-item additive adjustment of a rule set, with ``-inf`` for statically avoided items.

    Static means independent of the user: excluded genres, the year window, the
    blocklist (hard), genre boosts, the recency boost, the popularity penalty and
    the promotion boost (soft). The service caches this per (catalogue, rule set).
    """
    adj = np.zeros(cat.n, dtype=np.float32)
    prefer, avoid = rules.prefer, rules.avoid
    boosts = np.zeros(len(cat.genre_names), dtype=np.float32)
    for genre, weight in prefer.genre_boosts.items():
        j = cat.genre_index(genre)
        if j is not None:
            boosts[j] = weight
    if boosts.any():
        adj += cat.genre_matrix @ boosts
    if prefer.recency_boost:
        known = cat.years > 0
        age = np.clip(cat.max_year - cat.years, 0, None).astype(np.float32)
        adj += np.where(known, prefer.recency_boost * 0.5 ** (age / prefer.recency_half_life_years), 0.0).astype(
            np.float32
        )
    if prefer.popularity_penalty:
        adj -= prefer.popularity_penalty * cat.log_pop
    promoted = [i for i in (cat.index(m) for m in rules.promotions.items) if i is not None]
    if promoted and rules.promotions.boost:
        adj[promoted] += rules.promotions.boost
    blocked = np.zeros(cat.n, dtype=bool)
    excluded = [j for j in (cat.genre_index(g) for g in avoid.exclude_genres) if j is not None]
    if excluded:
        blocked |= cat.genre_matrix[:, excluded].any(axis=1)
    if avoid.year_min is not None:
        blocked |= (cat.years < avoid.year_min) | (cat.years == 0)
    if avoid.year_max is not None:
        blocked |= (cat.years > avoid.year_max) | (cat.years == 0)
    banned = [i for i in (cat.index(m) for m in avoid.blocklist) if i is not None]
    if banned:
        blocked[banned] = True
    adj[blocked] = NEG_INF
    return adj


def preference_boost(cat: Catalog, genres: Sequence[str], weight: float = 1.0) -> np.ndarray | None:
    """A request's ``genres=`` preferences as a per-item boost (None when there are none)."""
    cols = [j for j in (cat.genre_index(g) for g in genres) if j is not None]
    if not cols:
        return None
    return (cat.genre_matrix[:, cols].sum(axis=1) * np.float32(weight)).astype(np.float32)


def personal_scores(
    cat: Catalog,
    mu: np.ndarray,
    raw: np.ndarray | None = None,
    prior: np.ndarray | None = None,
    seq: np.ndarray | None = None,
) -> np.ndarray:
    """The model's logits for every item, standardised to mean 0 and unit variance for this user.

    Logits = ``decoder @ mu + bias + prior + seq``: ``prior`` is the model's streaming item prior over the
    catalogue (:class:`gateway.prior.ItemPrior`, None for a model without one) and ``seq`` its co-rating
    term for this user (:class:`gateway.corating.CoRatingTerm`), so before the rule set's adjustments the
    order is exactly the evaluated model's. ``raw`` is ``cat.decoder @ mu`` when the
    caller already has it (from :class:`gateway.batching.ScoreBatcher`, bit-identical); it is updated in
    place (``prior`` is only read).
    """
    if raw is None:
        raw = cat.decoder @ mu.astype(np.float32, copy=False)
    raw += cat.bias
    if prior is not None:
        raw += prior
    if seq is not None:
        raw += seq
    sample = raw[:: max(1, raw.shape[0] // 8192)]  # moments from a strided sample: same scale, 10x cheaper
    std = float(sample.std())
    raw -= np.float32(sample.mean())
    if std > 1e-9:
        raw *= np.float32(1.0 / std)
    return raw


def candidate_pool(total: np.ndarray, size: int) -> np.ndarray:
    """Indices of the ``size`` best finite scores (unordered).

    On a large catalogue a threshold from a strided 1/8 sample (at twice the
    needed rank) first cuts the candidates to a few thousand with one vectorised
    comparison; ``argpartition`` then runs on those only. The result is exact
    whenever at least ``size`` items pass the threshold, otherwise it falls back
    to a full ``argpartition``.

    >>> sorted(candidate_pool(np.array([0.1, 5.0, -np.inf, 3.0, 4.0]), 3).tolist())
    [1, 3, 4]
    """
    n = total.shape[0]
    pool: np.ndarray | None
    if size >= n:
        pool = np.arange(n)
    else:
        pool = None
        if n >= 32 * size:
            sample = total[::8]
            rank = min(sample.shape[0] - 1, 2 * (size // 8) + 8)
            threshold = np.partition(sample, sample.shape[0] - 1 - rank)[sample.shape[0] - 1 - rank]
            cand = np.flatnonzero(total >= threshold)
            if size <= cand.shape[0] <= 16 * size:
                pool = cand[np.argpartition(total[cand], cand.shape[0] - size)[cand.shape[0] - size :]]
        if pool is None:
            pool = np.argpartition(total, n - size)[n - size :]
    return pool[np.isfinite(total[pool])]


def too_similar_to_dislikes(
    cat: Catalog, pool: np.ndarray, dislikes: np.ndarray, threshold: float, pool_unit: np.ndarray | None = None
) -> np.ndarray:
    """Boolean mask over ``pool``: decoder cosine to some disliked item is at least ``threshold``.

    ``pool_unit`` is ``cat.unit[pool]`` when the caller already gathered it.
    """
    if pool.size == 0 or dislikes.size == 0:
        return np.zeros(pool.shape[0], dtype=bool)
    unit = cat.unit[pool] if pool_unit is None else pool_unit
    sims = unit @ cat.unit[dislikes].T
    return sims.max(axis=1) >= threshold


def select(
    cat: Catalog,
    pool: np.ndarray,
    relevance: np.ndarray,
    k: int,
    rules: RuleSet,
    pool_unit: np.ndarray | None = None,
) -> list[Pick]:
    """Greedy MMR over the pool with per-genre caps and a cap on promoted slots.

    Step score: ``lambda * rel - (1 - lambda) * max cosine to the items already
    chosen``, with ``rel`` the pool's relevance scaled to [0, 1]; ties go to the
    first pool position (``argmax``). A pick that is not the most relevant
    eligible item is a "diversity pick". ``pool_unit`` is ``cat.unit[pool]``
    when the caller already gathered it.
    """
    if pool.size == 0 or k <= 0:
        return []
    n = pool.size
    lam = rules.diversity.mmr_lambda
    cap = rules.diversity.genre_cap
    lo, hi = float(relevance.min()), float(relevance.max())
    rel = (relevance - lo) / (hi - lo) if hi > lo else np.ones_like(relevance)
    unit = cat.unit[pool] if pool_unit is None else pool_unit
    promoted_ids = set(rules.promotions.items)
    if promoted_ids:
        is_promoted = np.isin(cat.movie_ids[pool], np.fromiter(promoted_ids, np.int64, len(promoted_ids)))
    else:
        is_promoted = np.zeros(n, dtype=bool)
    # The hot loop keeps numpy calls per step to a handful (the MMR is ~20 steps on every uncached
    # request): eligibility lives in ``base`` itself (``lambda * rel``, -inf once an item is taken or
    # capped out, which eligibility only ever is), the penalty ``(1 - lambda) * max_sim`` is kept up
    # to date, the most relevant eligible item comes from walking one stable relevance order, and a
    # genre's cap is applied once, when it fills. Same arithmetic as the plain loop, bit for bit.
    base = lam * rel
    other = 1.0 - lam
    max_sim = np.zeros(n, dtype=np.float32)
    penalty = np.zeros(n, dtype=np.float32)
    mmr = np.empty(n, dtype=np.float32)
    if rules.promotions.max_slots == 0:
        base[is_promoted] = -np.inf
    by_rel = np.argsort(-rel, kind="stable").tolist()
    column = {g: c for c, g in enumerate(cat.genre_names)}
    genre_counts = [0] * len(cat.genre_names)
    promoted_used = 0
    top = 0
    picks: list[Pick] = []
    for step in range(min(k, n)):
        while top < n and base[by_rel[top]] == -np.inf:
            top += 1
        if top == n:
            break
        if step == 0:
            j = by_rel[top]  # no penalty yet: the most relevant eligible item
        else:
            np.subtract(base, penalty, out=mmr)
            j = int(mmr.argmax())
        index = int(pool[j])
        picks.append(Pick(index, float(relevance[j]), bool(is_promoted[j]), j != by_rel[top]))
        base[j] = -np.inf
        for genre in set(cat.genres[index]):  # a malformed row may repeat a genre
            g = column[genre]
            genre_counts[g] += 1
            if genre_counts[g] == cap:
                base[cat.genre_matrix[pool, g] > 0] = -np.inf
        if is_promoted[j]:
            promoted_used += 1
            if promoted_used >= rules.promotions.max_slots:
                base[is_promoted] = -np.inf
        np.maximum(max_sim, unit @ unit[j], out=max_sim)
        np.multiply(max_sim, other, out=penalty)
    return picks


def _stars(rating: float) -> str:
    return f"{rating:g}/5"


def explain(
    cat: Catalog,
    picks: Sequence[Pick],
    liked: Mapping[int, float],
    preferred_genres: Iterable[str] = (),
) -> list[list[str]]:
    """Reasons per pick: the liked item with the most similar decoder row, "promoted", "diversity pick".

    ``liked`` maps catalogue index -> the user's rating (positives only).
    """
    reasons: list[list[str]] = [[] for _ in picks]
    if picks and liked:
        anchors = np.fromiter(liked.keys(), dtype=np.int64, count=len(liked))
        sims = cat.unit[[p.index for p in picks]] @ cat.unit[anchors].T
        best = sims.argmax(axis=1)
        for r, b in zip(reasons, best.tolist(), strict=True):
            a = int(anchors[b])
            r.append(f"because you rated {cat.titles[a]} {_stars(liked[a])}")
    wanted = set(preferred_genres)
    for r, p in zip(reasons, picks, strict=True):
        matched = [g for g in cat.genres[p.index] if g in wanted]
        if matched:
            r.append("matches your genres: " + ", ".join(matched))
        if p.promoted:
            r.append("promoted")
        if p.diversity_pick:
            r.append("diversity pick")
    return reasons
