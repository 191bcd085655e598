"""User profiles and user search (``GET /users/...``): one mixin of :class:`gateway.service.Gateway`."""

from __future__ import annotations

import logging
import math
from collections import Counter

import numpy as np

from gateway.api.models import (
    ProfileRating,
    UserProfile,
)
from gateway.errors import UserNotFound
from gateway.parts import GatewayParts
from schemas.ratings import LIKED_MIN_RATING

log = logging.getLogger(__name__)


__all__ = ["Profiles"]


class Profiles(GatewayParts):
    """A user's profile from their state; user ids by prefix (a mixin of ``Gateway``)."""

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
