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

    def logits(self, index_of: Mapping[int, int], n: int, rated_at: Mapping[int, int]) -> np.ndarray | None:
        if not self.enabled or not rated_at or self.runtime is None:
            return None
        recent = recent_items({mid: (0.0, ts) for mid, ts in rated_at.items()}, index_of, self.length)
        return self.runtime.sequence_logits(recent, n=n)
