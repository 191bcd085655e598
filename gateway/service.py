"""The gateway's use cases: state + rules + catalogue + cache -> response models.

:class:`Gateway` is what the routes call (through ``gateway.api.deps``).
``recommend``, the hot path, is a coroutine that runs on the event loop: its
Redis reads are async and the scoring that follows is a millisecond of numpy,
cheaper inline than a threadpool hop (:mod:`gateway.state` has the figures).
Everything else is synchronous and runs in Starlette's threadpool, where a slow
Redis or broker blocks only a worker thread.

Per uncached personalised recommendation: one Redis round trip when the response
cache is off (the state version comes with the state hash; with the cache on, a
cheap ``HGET version`` first so hits stay small), one full-catalogue mat-vec
shared with the other requests ready at the same moment
(:class:`~gateway.batching.ScoreBatcher`, bit-identical to scoring alone), plus
bias and the model's streaming item prior (:class:`~gateway.prior.ItemPrior`,
refreshed in the background; its generation is part of the cache key), a few
vectorised passes, then work on the candidate pool only (:mod:`gateway.engine`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gateway.api.models import (
    ComponentHealth,
    Health,
    MovieDetail,
    ProfileRating,
    RecommendationList,
    RecommendedMovie,
    SimilarList,
    SimilarMovie,
    Stats,
    UserProfile,
)
from gateway.batching import ScoreBatcher
from gateway.cache import ResponseCache
from gateway.catalog import Catalog, NewMovie
from gateway.corating import CoRatingTerm
from gateway.decisions import (
    Source,
    choose_source,
    rule_3_unknown_user,
    rule_4_state_does_not_fit_model,
    rule_6_worker_alive,
)
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
from gateway.errors import MovieNotFound, StateUnavailable, UserNotFound
from gateway.prior import ItemPrior
from gateway.retrieval import ItemIndex
from gateway.rules import LoadedRules, RuleSet, RulesStore
from gateway.state import StateReader, UserSnapshot
from gateway.telemetry import Telemetry
from models.exploration import draw_rng, explore_scores, thompson_latent
from reelstream.addresses import broker_answers
from reelstream.settings import Settings
from schemas import redis_keys as keys
from schemas.archive_status import unarchived_tail
from schemas.movie_record import MovieRecord, decode_movie
from schemas.ratings import LIKED_MIN_RATING
from schemas.user_record import RecordError

__all__ = ["Gateway"]

log = logging.getLogger(__name__)

#: Rule-set adjustments kept (per catalogue, rules version, segment and variant) before the cache is cleared.
ADJUSTMENTS_KEPT = 64
#: How long a cold-start list is cached (it follows trending, which has no version).
COLD_TTL_S = 1.0
#: Weight of one ``genres=`` preference, in score standard deviations.
PREFERENCE_WEIGHT = 2.0
#: How long a /health probe of the broker or the worker heartbeats is reused.
PROBE_TTL_S = 1.0


class _Probe:
    """A value recomputed at most every ``ttl`` seconds."""

    def __init__(self, fn: Callable[[], Any], ttl: float, clock: Callable[[], float]) -> None:
        self.fn, self.ttl, self.clock = fn, ttl, clock
        self.at = -math.inf
        self.value: Any = None
        self.lock = threading.Lock()

    def get(self) -> Any:
        with self.lock:
            if self.clock() - self.at >= self.ttl:
                self.value = self.fn()
                self.at = self.clock()
            return self.value


class Gateway:
    """Recommendations, profiles, movies, health and stats."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        rules: RulesStore,
        state: StateReader,
        *,
        telemetry: Telemetry | None = None,
        prior: ItemPrior | None = None,
        corating: CoRatingTerm | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        """``prior``: the model's item prior (``ItemPrior(runtime)``); None serves decoder + bias only."""
        self.settings = settings
        self.catalog = catalog
        self.rules = rules
        self.state = state
        self.telemetry = telemetry or Telemetry()
        self.prior = prior or ItemPrior(None)
        #: each loaded model's co-rating term (gateway/corating.py), by model version
        self.coratings: dict[str, CoRatingTerm] = {catalog.model_version: corating or CoRatingTerm(None)}
        self.cache = ResponseCache(settings.gateway_cache_size, clock=clock)
        self.batcher = ScoreBatcher(settings.gateway_batch_max)
        self.clock = clock
        self.wall_ms = wall_ms
        self._adjust: dict[tuple[str, str, str, str], np.ndarray] = {}
        self._adjust_lock = threading.Lock()
        self._decoder_sq: tuple[str, np.ndarray] | None = None  # (catalogue version, decoder ** 2) for UCB
        self._broker = _Probe(self._probe_broker, PROBE_TTL_S, clock)
        self._workers = _Probe(self._probe_workers, PROBE_TTL_S, clock)
        #: movies the catalogue holds because a MovieEvent announced them (the worker knows them too)
        self.announced: set[int] = set()
        #: each announced movie's ``updated_ms`` when its row was built (a later one means it was announced again)
        self._announced_ms: dict[int, int | None] = {}
        #: models other than the serving one (``catalog``/``prior``) that users' states still name during a
        #: hot swap (streams/swap.py): version -> (catalogue, prior); see :meth:`refresh_models`
        self.others: dict[str, tuple[Catalog, ItemPrior]] = {}
        #: version -> (catalogue, prior) for a model folder (set by ``build_gateway``; None: never loads one)
        self.load_model: Callable[[str], tuple[Catalog, ItemPrior]] | None = None
        self._fallback_logged: set[str] = set()
        self._loaded_from: set[str] = set()  #: model folders loaded into ``others`` during this swap
        #: retrieval indexes by catalogue version (gateway/retrieval.py); built off the request path
        self._indexes: dict[str, ItemIndex] = {}
        self._index_building: set[str] = set()
        self._index_lock = threading.Lock()

    def model_of(self, version: str | None) -> tuple[Catalog, ItemPrior]:
        """The catalogue and prior of the model a user's state belongs to (None: a user without state).

        A version not loaded here is scored with the serving model, counted in
        ``gateway_model_fallback_total`` and logged once (a state written by an unknown model).
        """
        cat = self.catalog
        if version is None or version == cat.model_version:
            return cat, self.prior
        other = self.others.get(version)
        if other is not None:
            return other
        self.telemetry.model_fallbacks.labels(version).inc()
        if version not in self._fallback_logged:
            self._fallback_logged.add(version)
            log.warning("states of model %s are scored with the serving model %s (not loaded here)",
                        version, cat.model_version)  # fmt: skip
        return cat, self.prior

    # --- candidate retrieval ----------------------------------------------------------------
    def uses_index(self, cat: Catalog) -> bool:
        """Whether personalised candidates for ``cat`` come from an index (settings; large catalogues only)."""
        return self.settings.gateway_retrieval == "index" and cat.n >= self.settings.gateway_index_min_items

    def build_index(self, cat: Catalog) -> ItemIndex:
        """The retrieval index of ``cat``: regrouped from the same model's earlier index when there is one
        (announced movies: no training), else trained (about a second at 87,585 movies)."""
        with self._index_lock:
            index = self._indexes.get(cat.version)
            earlier = next((i for v, i in self._indexes.items() if v.split("/")[0] == cat.model_version), None)
        if index is not None:
            return index
        if earlier is not None:
            index = earlier.extended(cat.version, cat.decoder)
        else:
            index = ItemIndex.build(cat.version, cat.decoder, probe=self.settings.gateway_index_probe)
        with self._index_lock:
            live = {self.catalog.version, *(c.version for c, _ in self.others.values()), cat.version}
            self._indexes = {v: i for v, i in self._indexes.items() if v in live}  # drop replaced catalogues'
            self._indexes[cat.version] = index
            self._index_building.discard(cat.version)
        log.info("retrieval index for %s: %d lists, probing %.1f%%", cat.version, index.centroids.shape[0],
                 100 * index.probe)  # fmt: skip
        return index

    def index_of(self, cat: Catalog) -> ItemIndex | None:
        """``cat``'s index when it is ready; otherwise None (score exactly) and, once, a build in a thread."""
        index = self._indexes.get(cat.version)
        if index is not None or not self.uses_index(cat):
            return index
        with self._index_lock:
            if cat.version in self._index_building:
                return None
            self._index_building.add(cat.version)
        threading.Thread(target=self._build_quietly, args=(cat,), name="retrieval-index", daemon=True).start()
        return None

    def _build_quietly(self, cat: Catalog) -> None:
        try:
            self.build_index(cat)
        except Exception:  # the exact path keeps serving; the next request tries again
            log.exception("retrieval index for %s failed; scoring exactly", cat.version)
            with self._index_lock:
                self._index_building.discard(cat.version)

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

    # --- recommendations ------------------------------------------------------------------
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
        segment: str | None = None,
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
            cold = rule_3_unknown_user(snap.exists, snap.mu) or rule_4_state_does_not_fit_model(snap.mu, cat.latent)
            trending = await self.state.atrending(self.settings.gateway_candidate_pool) if cold else []
        except StateUnavailable:
            return self._degraded(user_id, k, genres, exclude_genres, rules, variant)
        source, degraded = choose_source(
            redis_ok=True, exists=snap.exists, mu=snap.mu, latent=cat.latent, n_trending=len(trending)
        )
        segment = segment or rules.segment_for(snap.n)
        ruleset = rules.rules_for(segment, variant)
        adj = self.adjustment(cat, rules, segment, variant)
        rated_idx, liked, disliked = self._split_rated(cat, snap.rated, ruleset.avoid.dislike_max_rating)
        avoid_idx = rated_idx if ruleset.avoid.rated else []
        pref, excluded = self._request_terms(cat, genres, exclude_genres)
        explored = "none"
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
            seq = self.coratings.get(cat.model_version, CoRatingTerm(None)).logits(cat.index_of, cat.n, snap.rated_at)
            total = personal_scores(cat, snap.mu, raw, prior, seq)
            total += adj
            pool, rel = self._personal_pool(cat, total, pref, excluded, avoid_idx)
        else:
            pool, rel = self._filtered_cold_pool(
                cat, self._cold_pool(cat, trending, source), adj, pref, excluded, avoid_idx
            )
        picks = self._select(cat, ruleset, pool, rel, k, disliked)
        result = self._render(
            cat, picks, liked, genres, user_id=user_id, k=k, source=source.value, degraded=degraded,
            segment=segment, variant=variant, rules=rules, state_version=snap.version, exploration=explored,
        )  # fmt: skip
        self.cache.put(key, result, ttl_s=COLD_TTL_S if source is not Source.PERSONALISED else None)
        self.telemetry.served(variant, segment, source.value, degraded, False, explored)
        return result

    @staticmethod
    def _exploration(cat: Catalog, snap: UserSnapshot, ruleset: RuleSet) -> tuple[str, np.ndarray]:
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
            keep &= ~cat.genre_matrix[np.ix_(pool, excluded)].any(axis=1)
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
        user_id: int, k: int, source: str, degraded: bool, segment: str, variant: str, rules: LoadedRules,
        state_version: int, exploration: str = "none",
    ) -> RecommendationList:  # fmt: skip
        reasons = explain(cat, picks, liked, genres)
        if source != "personalised":
            for r in reasons:
                r.insert(0, "trending now" if source == "trending" else "popular")
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
        """Rule 2: Redis is unreachable, serve store popularity under the "new" rule set."""
        cat = self.catalog
        ruleset = rules.rules_for("new", variant)
        adj = self.adjustment(cat, rules, "new", variant)
        pref, excluded = self._request_terms(cat, genres, exclude_genres)
        pool, rel = self._filtered_cold_pool(cat, self._cold_pool(cat, [], Source.POPULARITY), adj, pref, excluded, [])
        picks = self._select(cat, ruleset, pool, rel, k, [])
        self.telemetry.served(variant, "new", Source.POPULARITY.value, True, False)
        return self._render(
            cat, picks, {}, genres, user_id=user_id, k=k, source=Source.POPULARITY.value, degraded=True,
            segment="new", variant=variant, rules=rules, state_version=0,
        )  # fmt: skip

    # --- users and movies -----------------------------------------------------------------
    def profile(self, user_id: int) -> UserProfile:
        snap = self.state.user(user_id, details=True)  # StateUnavailable -> 503: no fallback for a profile
        if not snap.exists:
            raise UserNotFound(f"user {user_id} has no state")
        cat = self.catalog
        rules = self.rules.current()
        f = snap.fields
        n = snap.n
        mean = std = None
        try:
            total, sumsq = float(f["sum"]), float(f.get("sumsq", "nan"))
            if n > 0:
                mean = total / n
                var = sumsq / n - mean * mean
                std = math.sqrt(max(var, 0.0)) if math.isfinite(var) else None
        except (KeyError, ValueError):
            pass
        genre_counts: Counter[str] = Counter()
        for mid, r in snap.rated.items():
            i = cat.index(mid)
            if i is not None and r >= LIKED_MIN_RATING:
                genre_counts.update(cat.genres[i])
        recent = []
        for mid, r, ts in snap.recent:
            i = cat.index(mid)
            recent.append(ProfileRating(movie_id=mid, title=cat.titles[i] if i is not None else f"movie {mid}",
                                        rating=r, ts_ms=ts))  # fmt: skip
        unc = None
        if snap.logvar is not None and snap.logvar.size and np.isfinite(snap.logvar).all():
            unc = float(np.exp(snap.logvar.astype(np.float64)).mean())

        def opt_int(name: str) -> int | None:
            try:
                return int(float(f[name]))
            except (KeyError, ValueError):
                return None

        return UserProfile(
            user_id=user_id, state_version=snap.version, segment=rules.segment_for(n), n_ratings=n,
            mean_rating=mean, rating_std=std, first_ms=opt_int("first_ms"), last_ms=opt_int("last_ms"),
            top_genres=genre_counts.most_common(5), recent=recent, latent_uncertainty=unc,
            model_version=f.get("model_version", cat.model_version),
        )  # fmt: skip

    def search_users(self, prefix: str, limit: int) -> list[int]:
        """User ids with state starting with ``prefix``; freshness-probe users are left out."""
        return self.state.user_ids(prefix, limit, below=self.settings.probe_user_base)

    def movie(self, movie_id: int) -> MovieDetail:
        cat = self.catalog
        i = cat.index(movie_id)
        if i is None:
            raise MovieNotFound(f"movie {movie_id} is not in the catalogue")
        live_n = live_mean = None
        try:
            stats = self.state.item_stats(movie_id)
            if stats:
                live_n = int(float(stats.get("n", 0)))
                live_mean = float(stats["mean"]) if "mean" in stats else None
        except (StateUnavailable, ValueError):
            pass
        mean = float(cat.mean_rating[i])
        return MovieDetail(
            movie_id=movie_id, title=cat.titles[i], genres=list(cat.genres[i]), year=int(cat.years[i]) or None,
            n_ratings=int(cat.n_ratings[i]), mean_rating=mean if math.isfinite(mean) else None,
            live_n=live_n, live_mean=live_mean, in_model=bool(cat.in_model[i]),
        )  # fmt: skip

    def similar(self, movie_id: int, k: int) -> SimilarList:
        cat = self.catalog
        i = cat.index(movie_id)
        if i is None:
            raise MovieNotFound(f"movie {movie_id} is not in the catalogue")
        key = ("similar", movie_id, k, cat.version)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        sims = cat.unit @ cat.unit[i]
        sims[i] = -np.inf
        pool = candidate_pool(sims, min(k, cat.n))
        pool = pool[np.argsort(-sims[pool])][:k]
        out = SimilarList(
            movie_id=movie_id, model_version=cat.model_version,
            items=[SimilarMovie(movie_id=int(cat.movie_ids[j]), title=cat.titles[j], genres=list(cat.genres[j]),
                                similarity=round(float(sims[j]), 4)) for j in pool],
        )  # fmt: skip
        self.cache.put(key, out)
        return out

    def refresh_prior(self) -> bool:
        """Re-read the worker's ``rs:items:prior`` (gateway/prior.py); True when the serving prior changed."""
        for cat, prior in list(self.others.values()):
            prior.refresh(cat, self.state)
        return self.prior.refresh(self.catalog, self.state)

    def refresh_models(self) -> bool:
        """Follow ``rs:model`` (streams/swap.py); True when the set of models changed.

        A new ``serving`` model is loaded and becomes the one new users and cold paths use; the previous one
        is kept while the swap runs (users not re-encoded yet are scored with it), and dropped once the
        swap is done (every state then names the serving model).
        """
        pointer = self.state.model_pointer()
        serving = pointer.get("serving")
        if not serving or self.load_model is None:
            return False
        changed = False
        if serving != self.catalog.model_version:
            loaded = self.others.pop(serving, None) or self.load_model(serving)
            self.others[self.catalog.model_version] = (self.catalog, self.prior)
            self._loaded_from.add(self.catalog.model_version)
            self.prior = loaded[1]
            self.catalog = loaded[0]
            log.info("serving model %s (hot swap: %s)", serving, pointer.get("swap", "?"))
            changed = True
        if pointer.get("swap") == "running":
            source = pointer.get("swap_from")
            if source and source != serving and source not in self._loaded_from:
                cat, prior = self.load_model(source)  # keyed by the version its states name
                self.others[cat.model_version] = (cat, prior)
                self._loaded_from.add(source)
                changed = True
        elif self.others:
            self.others.clear()
            self._loaded_from.clear()
            changed = True
        if changed:
            self.refresh_movies()
        return changed

    def refresh_movies(self) -> int:
        """Add movies announced by MovieEvents (``rs:movie:*``) to the catalogue, and replace the rows of announced
        movies whose record changed since (announced again: ``updated_ms`` moved); returns how many.

        During a hot swap the other model's catalogue gets the new movies too (streams/swap.py)."""
        docs = self.state.movie_events()
        for version, (other, other_prior) in list(self.others.items()):
            extra = self._announced(other, [dict(d) for d in docs])
            if extra:
                self.others[version] = (other.with_new_movies(extra), other_prior)
        cat = self.catalog
        fresh, changed = [], []
        for doc in docs:
            read = _announced_movie(doc, lambda mid: cat.index(mid) is not None and mid not in self.announced)
            if read is None:
                continue
            mid, movie = read
            announced = mid in self.announced
            if announced and movie.updated_ms == self._announced_ms.get(mid):
                continue
            self._announced_ms[mid] = movie.updated_ms
            side = cat.side.vector(movie.genres, movie.year, movie.tags)  # the worker's row for it too
            (changed if announced else fresh).append(
                NewMovie(mid, movie.title or f"movie {mid}", movie.genres, movie.year, side)
            )
        if fresh:
            self.announced.update(m.movie_id for m in fresh)  # first: a request that sees the row may rate it
            cat = cat.with_new_movies(fresh)
        if changed:
            cat = cat.with_replaced_movies(changed)
        if fresh or changed:
            self.catalog = cat
        return len(fresh) + len(changed)

    def serves_unannounced(self, movie_id: int) -> bool:
        """True for a movie the catalogue serves from the model or the feature store, not from an announcement:
        a MovieEvent for it would change nothing here (POST /movies answers 409)."""
        return self.catalog.index(movie_id) is not None and movie_id not in self.announced

    @staticmethod
    def _announced(cat: Catalog, docs: list[dict[str, str]]) -> list[NewMovie]:
        """The announced movies ``cat`` has no row for, with their side rows in ``cat``'s features."""
        fresh = []
        for doc in docs:
            read = _announced_movie(doc, lambda mid: cat.index(mid) is not None)
            if read is None:
                continue
            mid, movie = read
            side = cat.side.vector(movie.genres, movie.year, movie.tags)  # the worker's row for it too
            fresh.append(NewMovie(mid, movie.title or f"movie {mid}", movie.genres, movie.year, side))
        return fresh

    def is_rateable(self, movie_id: int) -> bool:
        """The rating contract's catalogue (schemas/ratings.py): in the model, or announced and seen here.

        A store movie without a model row is served but not rateable: the worker would refuse its ratings.
        """
        cat = self.catalog
        i = cat.index(movie_id)
        return i is not None and (bool(cat.in_model[i]) or movie_id in self.announced)

    # --- health and stats -----------------------------------------------------------------
    def _probe_broker(self) -> ComponentHealth:
        ok = broker_answers(self.settings.kafka_bootstrap, timeout=0.5)
        return ComponentHealth(ok=ok, detail=f"{self.settings.kafka_bootstrap} {'answers' if ok else 'unreachable'}")

    def _probe_workers(self) -> ComponentHealth:
        try:
            beats = self.state.workers()
        except StateUnavailable:
            return ComponentHealth(ok=False, detail="unknown: Redis unreachable")
        now = self.wall_ms()
        stale = self.settings.gateway_worker_stale_ms
        alive = sorted(n for n, ms in beats.items() if rule_6_worker_alive(ms, now, stale))
        if not alive:
            return ComponentHealth(ok=False, detail="no worker heartbeat")
        return ComponentHealth(ok=True, detail="alive: " + ", ".join(alive))

    def health(self) -> Health:
        try:
            self.state.ping()
            redis_h = ComponentHealth(ok=True, detail="answers PING")
        except StateUnavailable as exc:
            redis_h = ComponentHealth(ok=False, detail=str(exc))
        cat = self.catalog
        model_h = ComponentHealth(ok=True, detail=f"{cat.model_version}: {cat.n} items, latent {cat.latent}")
        rules = self.rules.current()
        err = self.rules.last_error
        rules_h = ComponentHealth(ok=err is None, detail=err or f"{rules.doc.name} {rules.version}")
        broker_h, worker_h = self._broker.get(), self._workers.get()
        parts = (broker_h, redis_h, model_h, worker_h, rules_h)
        lost = resets = tail = None
        if redis_h.ok:
            try:
                counters = self.state.stats()
                lost, resets = (int(float(counters.get(k, 0))) for k in ("events_lost", "log_resets"))
                archive = self.state.archive_status()
                tail = unarchived_tail(archive) if archive else None
            except (StateUnavailable, ValueError):
                pass
        return Health(
            status="ok" if all(p.ok for p in parts) else "degraded",
            broker=broker_h, redis=redis_h, model=model_h, worker=worker_h, rules=rules_h,
            events_lost=lost, log_resets=resets, unarchived=tail,
        )  # fmt: skip

    def stats(self) -> Stats:
        t = self.telemetry
        with t._lock:
            counts = [{"method": m, "route": r, "status": s, "count": c} for (m, r, s), c in sorted(t.counts.items())]
            by_variant = dict(t.by_variant)
            explored = dict(t.explored_by_variant)
        try:
            worker_stats = self.state.stats()
        except StateUnavailable:
            worker_stats = {}
        try:
            applied = int(float(worker_stats["events_applied"])) if "events_applied" in worker_stats else None
        except ValueError:
            applied = None
        c, b = self.cache, self.batcher
        return Stats(
            requests=counts, latency_ms=t.percentiles(),
            cache={"hits": c.hits, "misses": c.misses, "hit_rate": c.hit_rate, "size": len(c)},
            scoring={"batches": b.batches, "scored": b.batched, "mean_batch": b.batched / max(b.batches, 1)},
            recommendations_by_variant=by_variant, explored_by_variant=explored, events_applied=applied,
            worker_stats=worker_stats,
        )  # fmt: skip


def _announced_movie(doc: dict[str, str], skip: Callable[[int], bool]) -> tuple[int, MovieRecord] | None:
    """An ``rs:movie:{mid}`` record as ``(movie_id, movie)``; None when malformed (logged) or ``skip(mid)``."""
    try:
        mid = int(doc.pop("movie_id"))
    except (KeyError, ValueError):
        return None
    if skip(mid):
        return None
    try:
        return mid, decode_movie(doc)
    except RecordError as exc:  # the worker refuses its ratings too (unknown_movie)
        log.warning("%s: %s; not added to the catalogue", keys.movie(mid), exc)
        return None
