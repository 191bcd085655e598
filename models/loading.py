"""Where the training and evaluation data come from: the feature store, or a MovieLens folder."""

from __future__ import annotations

from pathlib import Path

from models.data import Interactions, from_movielens, from_store

__all__ = ["load_interactions"]


def load_interactions(store_dir: Path, *, data: Path | None = None, split_quantile: float = 0.8) -> Interactions:
    """The current feature-store version, or (``data`` given) a MovieLens folder split at ``split_quantile``.

    DataError when there is no store yet (the message says to run ``reelstream bootstrap``).
    """
    if data is not None:
        return from_movielens(data, split_quantile=split_quantile)
    from bootstrap.store import load_store

    return from_store(load_store(store_dir))
