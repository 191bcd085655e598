"""Movie details and similar movies (``GET /movies/...``): one mixin of :class:`gateway.service.Gateway`."""

from __future__ import annotations

import logging
import math

import numpy as np

from gateway.api.models import (
    MovieDetail,
    SimilarList,
    SimilarMovie,
)
from gateway.engine import (
    candidate_pool,
)
from gateway.errors import MovieNotFound, StateUnavailable
from gateway.parts import GatewayParts

log = logging.getLogger(__name__)


__all__ = ["MovieDetails"]


class MovieDetails(GatewayParts):
    """A movie's catalogue row with its live statistics; its nearest decoder rows (a mixin of ``Gateway``)."""

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
