"""The model's co-rating term at serving time: the user's latest movies, ordered from their rated hash.

The evaluated hybrid VAE adds ``gamma * log(1 + v / tau)`` to its logits, ``v`` summing the co-rating
neighbours of the user's latest rated movies (``models/sequence.py``). The worker does not store that list:
``rs:user:{uid}:rated`` already holds every movie's latest rating with its event time, and ordering it by
(event time, movie id), newest first, gives the list a time-ordered replay builds (``recent_items``). So the
gateway scores exactly the evaluated model from the hash it reads on every request anyway.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from models.runtime import ModelRuntime
from models.sequence import recent_items

__all__ = ["CoRatingTerm"]


class CoRatingTerm:
    """``logits(index_of, n, rated_at)``: the term over a catalogue of ``n`` rows, or None when it adds nothing."""

    def __init__(self, runtime: ModelRuntime | None) -> None:
        self.runtime = runtime
        params = runtime.sequence_params if runtime is not None else {"gamma": 0.0, "length": 0}
        self.length = int(params["length"]) if params["gamma"] else 0

    @property
    def enabled(self) -> bool:
        return self.length > 0

    def _recent(self, index_of: Mapping[int, int], rated_at: Mapping[int, int]) -> list[int] | None:
        if not self.enabled or not rated_at or self.runtime is None:
            return None
        return recent_items({mid: (0.0, ts) for mid, ts in rated_at.items()}, index_of, self.length)

    def logits(self, index_of: Mapping[int, int], n: int, rated_at: Mapping[int, int]) -> np.ndarray | None:
        recent = self._recent(index_of, rated_at)
        return None if recent is None or self.runtime is None else self.runtime.sequence_logits(recent, n=n)

    def touched(self, index_of: Mapping[int, int], rated_at: Mapping[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
        """The term's nonzero entries only (catalogue indices, values): :meth:`logits` without the zeros."""
        recent = self._recent(index_of, rated_at)
        return None if recent is None or self.runtime is None else self.runtime.sequence_touched(recent)
