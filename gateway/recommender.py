"""Recommendation lists: state + rules + catalogue + cache -> a ranked, explained list (the hot path).

One mixin of :class:`gateway.service.Gateway`. ``recommend`` is a coroutine that runs on the event loop:
its Redis reads are async and the scoring that follows is a millisecond of numpy, cheaper inline than a
threadpool hop (:mod:`gateway.state` has the figures).

Per uncached personalised recommendation: one Redis round trip when the response cache is off (the state
version comes with the state hash; with the cache on, a cheap ``HGET version`` first so hits stay small);
then, on a large catalogue, the retrieval index's candidates scored exactly (:mod:`gateway.retrieval`), else
one full-catalogue mat-vec shared with the other requests ready at the same moment
(:class:`~gateway.batching.ScoreBatcher`, bit-identical to scoring alone), plus bias and the model's streaming
item prior (:class:`~gateway.prior.ItemPrior`, refreshed in the background; its generation is part of the
cache key), a few vectorised passes, then work on the candidate pool only (:mod:`gateway.engine`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from gateway.api.models import (
    RecommendationList,
    RecommendedMovie,
)
from gateway.batching import ScoreBatcher
from gateway.catalog import Catalog
from gateway.corating import CoRatingTerm
from gateway.decisions import Source, choose_source, is_cold_start
from gateway.engine import (
    Pick,
    candidate_pool,
    explain,
    personal_scores,
    preference_boost,
    select,
    static_adjustment,
    too_similar_to_dislikes,
)
from gateway.errors import StateUnavailable
from gateway.parts import GatewayParts
from gateway.prior import ItemPrior
from gateway.retrieval import ItemIndex
from gateway.rules import LoadedRules, RuleSet
from gateway.rules.document import Segment
from gateway.state import UserSnapshot
from models.exploration import draw_rng, explore_scores, thompson_latent
from schemas.ratings import LIKED_MIN_RATING

log = logging.getLogger(__name__)


__all__ = ["ADJUSTMENTS_KEPT", "COLD_TTL_S", "PREFERENCE_WEIGHT", "Recommending"]

#: Rule-set adjustments kept (per catalogue, rules version, segment and variant) before the cache is cleared.
ADJUSTMENTS_KEPT = 64
#: How long a cold-start list is cached (it follows trending, which has no version).
COLD_TTL_S = 1.0
#: Weight of one ``genres=`` preference, in score standard deviations.
PREFERENCE_WEIGHT = 2.0

#: How a list was ranked (``RecommendationList.exploration``).
_Explored = Literal["none", "thompson", "ucb"]


class Recommending(GatewayParts):
    """``recommend`` and its steps (a mixin of ``Gateway``)."""

    batcher: ScoreBatcher
    coratings: dict[str, CoRatingTerm]
    _adjust: dict[tuple[str, str, str, str], np.ndarray]
    _adjust_lock: threading.Lock
    _decoder_sq: tuple[str, np.ndarray] | None
    # from the ServedModels mixin
    model_of: Callable[[str | None], tuple[Catalog, ItemPrior]]
    index_of: Callable[[Catalog], ItemIndex | None]

    def _indexed_pool(
        self, index: ItemIndex, cat: Catalog, latent: np.ndarray, prior: tuple[int, np.ndarray | None],
        seq: tuple[np.ndarray, np.ndarray] | None, adj: tuple[object, np.ndarray], avoid_idx: list[int],
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """The candidate pool (indices, relevance) through the index: moments from the exact path's sample,
        candidates from the probed lists plus every item the co-rating term touches (``seq``: its nonzero
        entries), and for them the exact path's scores."""
        prior_gen, prior_vec = prior
        s = index.sample
        sample = index.sample_rows @ latent + cat.bias[s]
        if prior_vec is not None:
            sample += prior_vec[s]
        stride = int(s[1]) if s.shape[0] > 1 else 1
        if seq is not None:  # the term's entries that fall on sampled rows
            on = seq[0] % stride == 0
            sample[seq[0][on] // stride] += seq[1][on]
        mean, std = float(sample.mean()), float(sample.std())
        scale = std if std > 1e-9 else 1.0
        size = self.settings.gateway_candidate_pool + len(avoid_idx) + self.settings.gateway_index_margin

        def offset() -> np.ndarray:
            return cat.bias if prior_vec is None else cat.bias + prior_vec

        cand, dots = index.retrieve(latent, scale, size, offset=((cat.version, prior_gen), offset),
                                    adjust=(adj[0], lambda: adj[1]))  # fmt: skip
        extra = np.zeros(0, np.float32)
        if seq is not None:
            missing = seq[0][~np.isin(seq[0], cand, assume_unique=True)]
            cand = np.concatenate([cand, missing])
            dots = np.concatenate([dots, index.dots(missing, latent)])
            extra = np.zeros(cand.shape[0], np.float32)
            order = np.argsort(cand, kind="stable")
            extra[order[np.searchsorted(cand[order], seq[0])]] = seq[1]
        logits = dots + cat.bias[cand]
        if prior_vec is not None:
            logits += prior_vec[cand]
        if extra.size:
            logits += extra
        total = (logits - np.float32(mean)) * np.float32(1.0 / scale) + adj[1][cand]
        if avoid_idx:
            avoided = np.zeros(cat.n, dtype=bool)
            avoided[avoid_idx] = True
            total[avoided[cand]] = -np.inf
        pool = candidate_pool(total, self.settings.gateway_candidate_pool)
        return cand[pool], total[pool]

    def adjustment(self, cat: Catalog, rules: LoadedRules, segment: str, variant: str) -> np.ndarray:
        """The static per-item adjustment of one effective rule set (computed once per version)."""
        key = (cat.version, rules.version, segment, variant)
        adj = self._adjust.get(key)
        if adj is None:
            adj = static_adjustment(cat, rules.rules_for(segment, variant))
            with self._adjust_lock:
                if len(self._adjust) > ADJUSTMENTS_KEPT:
                    self._adjust.clear()
                self._adjust[key] = adj
        return adj

    async def recommend(
        self,
        user_id: int,
        k: int,
        genres: Sequence[str] = (),
        exclude_genres: Sequence[str] = (),
        *,
        variant: str | None = None,
        segment: Segment | None = None,
    ) -> RecommendationList:
        """``variant``/``segment`` override the user's A/B arm and segment (to compare rule sets)."""
        rules = self.rules.current()
        variant = variant or rules.variant_for(str(user_id))
        params = (k, tuple(sorted(set(genres))), tuple(sorted(set(exclude_genres))), variant, segment)
        try:
            if self.cache.capacity > 0:
                version, model = await self.state.auser_head(user_id)
                snap = None
            else:  # no cache to look in: read the state at once, its version is in the hash (one round trip)
                snap = await self.state.auser(user_id)
                version = snap.version if snap.exists else None
                model = snap.record.model_version if snap.record is not None else None
            # the user's model (a hot swap moves users one by one), read once: the key and the scores agree
            cat, item_prior = self.model_of(model)
            prior_gen, prior = item_prior.current(cat.n)
            # the prior's generation too: the same state version is ranked differently once the prior moves
            key = ("rec", user_id, version or 0, rules.version, cat.version, prior_gen, params)
            hit = self.cache.get(key)
            if hit is not None:
                self.telemetry.cache_events.labels("hit").inc()
                self.telemetry.served(hit.variant, hit.segment, hit.source, False, True, hit.exploration)
                return hit.model_copy(update={"cached": True})
            self.telemetry.cache_events.labels("miss").inc()
            if snap is None:
                snap = await self.state.auser(user_id)
                now_model = snap.record.model_version if snap.record is not None else None
                if now_model != model:  # re-encoded between the two reads: score with the state's model
                    cat, item_prior = self.model_of(now_model)
                    prior_gen, prior = item_prior.current(cat.n)
                    key = ("rec", user_id, snap.version, rules.version, cat.version, prior_gen, params)
            cold = is_cold_start(snap.exists, snap.mu, cat.latent)
            trending = await self.state.atrending(self.settings.gateway_candidate_pool) if cold else []
        except StateUnavailable:
            return self._degraded(user_id, k, genres, exclude_genres, rules, variant)
        source, degraded = choose_source(redis_ok=True, cold=cold, n_trending=len(trending))
        segment = segment or rules.segment_for(snap.n)
        ruleset = rules.rules_for(segment, variant)
        adj = self.adjustment(cat, rules, segment, variant)
        rated_idx, liked, disliked = self._split_rated(cat, snap.rated, ruleset.avoid.dislike_max_rating)
        avoid_idx = rated_idx if ruleset.avoid.rated else []
        pref, excluded = self._request_terms(cat, genres, exclude_genres)
        explored: _Explored = "none"
        index = self.index_of(cat) if source is Source.PERSONALISED and pref is None and not excluded else None
        if source is Source.PERSONALISED and index is not None and ruleset.exploration.kind != "ucb":
            assert snap.mu is not None
            explored, latent = self._exploration(cat, snap, ruleset)
            seq = self.coratings.get(cat.model_version, CoRatingTerm(None)).touched(cat.index_of, snap.rated_at)
            adj_key = (cat.version, rules.version, segment, variant)
            pool, rel = self._indexed_pool(index, cat, latent.astype(np.float32, copy=False), (prior_gen, prior),
                                           seq, (adj_key, adj), avoid_idx)  # fmt: skip
        elif source is Source.PERSONALISED:
            assert snap.mu is not None
            explored, latent = self._exploration(cat, snap, ruleset)
            raw = await self.batcher.raw_scores(cat.decoder, latent)
            if explored == "ucb":
                assert snap.logvar is not None
                raw = explore_scores(raw, cat.decoder, snap.mu, snap.logvar, "ucb", ruleset.exploration.scale,
                                     decoder_sq=self._squared_decoder(cat))  # fmt: skip
            seq_logits = self.coratings.get(cat.model_version, CoRatingTerm(None)).logits(
                cat.index_of, cat.n, snap.rated_at
            )
            total = personal_scores(cat, snap.mu, raw, prior, seq_logits)
            total += adj
            pool, rel = self._personal_pool(cat, total, pref, excluded, avoid_idx)
        else:
            pool, rel = self._filtered_cold_pool(
                cat, self._cold_pool(cat, trending, source), adj, pref, excluded, avoid_idx
            )
        picks = self._select(cat, ruleset, pool, rel, k, disliked)
        result = self._render(
            cat, picks, liked, genres, user_id=user_id, k=k, source=source, degraded=degraded,
            segment=segment, variant=variant, rules=rules, state_version=snap.version, exploration=explored,
        )  # fmt: skip
        self.cache.put(key, result, ttl_s=COLD_TTL_S if source is not Source.PERSONALISED else None)
        self.telemetry.served(variant, segment, source.value, degraded, False, explored)
        return result

    @staticmethod
    def _exploration(cat: Catalog, snap: UserSnapshot, ruleset: RuleSet) -> tuple[_Explored, np.ndarray]:
        """The exploration kind that applies (models/exploration.py) and the latent vector to decode.

        Thompson decodes one posterior draw, seeded from (rules seed, user id, state version): the same
        list for the same state and rules, which is what the cache key holds; the draw goes through the
        shared mat-vec like a mean would. UCB decodes the mean and adds its bonus after. A state without a
        usable ``logvar`` (absent, another width, not finite) is ranked by its mean and says ``"none"``.
        """
        ex, mu, logvar = ruleset.exploration, snap.mu, snap.logvar
        assert mu is not None
        if ex.kind == "none" or logvar is None or logvar.shape != (cat.latent,) or not np.isfinite(logvar).all():
            return "none", mu
        if ex.kind == "thompson":
            return ex.kind, thompson_latent(mu, logvar, draw_rng(ex.seed, snap.user_id, snap.version), ex.scale)
        return ex.kind, mu

    def _squared_decoder(self, cat: Catalog) -> np.ndarray:
        """``decoder ** 2`` of the catalogue (UCB's per-logit variance), computed once per catalogue version."""
        sq = self._decoder_sq
        if sq is None or sq[0] != cat.version:
            sq = self._decoder_sq = (cat.version, np.square(cat.decoder))
        return sq[1]

    @staticmethod
    def _split_rated(
        cat: Catalog, rated: dict[int, float], dislike_max: float
    ) -> tuple[list[int], dict[int, float], list[int]]:
        """One pass over the rated hash: catalogue indices of rated items, liked ones (``LIKED_MIN_RATING``, with their
        rating, for the explanations) and disliked ones (<= ``dislike_max``), in the hash's order."""
        index_of = cat.index_of
        rated_idx: list[int] = []
        liked: dict[int, float] = {}
        disliked: list[int] = []
        for mid, r in rated.items():
            i = index_of.get(int(mid))
            if i is None:
                continue
            rated_idx.append(i)
            if r >= LIKED_MIN_RATING:
                liked[i] = r
            if r <= dislike_max:
                disliked.append(i)
        return rated_idx, liked, disliked

    def _cold_pool(
        self, cat: Catalog, trending: list[tuple[int, float]], source: Source
    ) -> tuple[np.ndarray, np.ndarray]:
        """(pool indices, relevance) for a cold start: trending scores, else store popularity."""
        if source is Source.TRENDING:
            pairs = [(i, s) for i, s in ((cat.index(m), s) for m, s in trending) if i is not None]
            if pairs:
                idx = np.array([p[0] for p in pairs], dtype=np.int64)
                rel = np.array([p[1] for p in pairs], dtype=np.float32)
                std = float(rel.std())
                rel = (rel - rel.mean()) / std if std > 1e-9 else np.zeros_like(rel)
                return idx, rel.astype(np.float32)
        idx = cat.popularity_order[: self.settings.gateway_candidate_pool]
        rel = cat.log_pop[idx]
        std = float(rel.std())
        return idx, ((rel - rel.mean()) / std if std > 1e-9 else np.zeros_like(rel)).astype(np.float32)

    @staticmethod
    def _request_terms(
        cat: Catalog, genres: Sequence[str], exclude_genres: Sequence[str]
    ) -> tuple[np.ndarray | None, list[int]]:
        """A request's ``genres=`` boost per item (None without one) and its excluded genre columns."""
        pref = preference_boost(cat, genres, PREFERENCE_WEIGHT) if genres else None
        return pref, [j for j in (cat.genre_index(g) for g in exclude_genres) if j is not None]

    def _personal_pool(
        self, cat: Catalog, total: np.ndarray, pref: np.ndarray | None, excluded: list[int], avoid_idx: list[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The candidate pool (indices, relevance) from a personalised score vector (updated in place)."""
        if pref is not None:
            total += pref
        if excluded:
            total[cat.genre_matrix[:, excluded].any(axis=1)] = -np.inf
        if avoid_idx:
            total[avoid_idx] = -np.inf
        pool = candidate_pool(total, self.settings.gateway_candidate_pool)
        return pool, total[pool]

    @staticmethod
    def _filtered_cold_pool(
        cat: Catalog, cold: tuple[np.ndarray, np.ndarray], adj: np.ndarray, pref: np.ndarray | None,
        excluded: list[int], avoid_idx: list[int],
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """A cold-start pool with the rule set's adjustment, the request's genres and the avoids applied."""
        pool, rel = cold
        rel = rel + adj[pool]
        if pref is not None:
            rel = rel + pref[pool]
        keep = np.isfinite(rel)
        if excluded:
            keep &= ~cat.genre_matrix[np.ix_(pool, np.asarray(excluded))].any(axis=1)
        if avoid_idx:
            keep &= ~np.isin(pool, avoid_idx)
        return pool[keep], rel[keep]

    @staticmethod
    def _select(
        cat: Catalog, ruleset: RuleSet, pool: np.ndarray, rel: np.ndarray, k: int, disliked: list[int]
    ) -> list[Pick]:
        """Drop items too similar to a dislike, then MMR with the caps (:func:`gateway.engine.select`)."""
        unit = cat.unit[pool]
        dislikes = np.array(disliked, dtype=np.int64)
        if dislikes.size and pool.size:
            keep = ~too_similar_to_dislikes(cat, pool, dislikes, ruleset.avoid.dislike_similarity, unit)
            pool, rel, unit = pool[keep], rel[keep], unit[keep]
        return select(cat, pool, rel, k, ruleset, unit)

    def _render(
        self, cat: Catalog, picks: list[Pick], liked: dict[int, float], genres: Sequence[str], *,
        user_id: int, k: int, source: Source, degraded: bool,
        segment: Segment, variant: str, rules: LoadedRules, state_version: int, exploration: _Explored = "none",
    ) -> RecommendationList:  # fmt: skip
        reasons = explain(cat, picks, liked, genres)
        if source is not Source.PERSONALISED:
            for r in reasons:
                r.insert(0, "trending now" if source is Source.TRENDING else "popular")
        # model_construct: every field is built right here from typed catalogue columns, so validation
        # would only re-check our own types (21 model validations per list, on every uncached request);
        # tests/test_gateway_api.py checks responses against the OpenAPI schema
        items = [
            RecommendedMovie.model_construct(
                movie_id=int(cat.movie_ids[p.index]),
                title=cat.titles[p.index],
                genres=list(cat.genres[p.index]),
                year=int(cat.years[p.index]) or None,
                score=round(p.score, 4),
                reasons=why,
            )
            for p, why in zip(picks, reasons, strict=True)
        ]
        return RecommendationList.model_construct(
            user_id=user_id, k=k, items=items, source=source, degraded=degraded, cached=False, segment=segment,
            variant=variant, rule_set=rules.doc.name, rules_version=rules.version, state_version=state_version,
            model_version=cat.model_version, exploration=exploration,
        )  # fmt: skip

    def _degraded(
        self, user_id: int, k: int, genres: Sequence[str], exclude_genres: Sequence[str], rules: LoadedRules,
        variant: str,
    ) -> RecommendationList:  # fmt: skip
        """Redis is unreachable: the source Rule 2 gives (store popularity, degraded) under the "new" rule set."""
        cat = self.catalog
        source, degraded = choose_source(redis_ok=False, cold=True, n_trending=0)
        ruleset = rules.rules_for("new", variant)
        adj = self.adjustment(cat, rules, "new", variant)
        pref, excluded = self._request_terms(cat, genres, exclude_genres)
        pool, rel = self._filtered_cold_pool(cat, self._cold_pool(cat, [], source), adj, pref, excluded, [])
        picks = self._select(cat, ruleset, pool, rel, k, [])
        self.telemetry.served(variant, "new", source.value, degraded, False)
        return self._render(
            cat, picks, {}, genres, user_id=user_id, k=k, source=source, degraded=degraded,
            segment="new", variant=variant, rules=rules, state_version=0,
        )  # fmt: skip
