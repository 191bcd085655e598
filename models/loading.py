"""Where the training and evaluation data come from: the feature store, or a MovieLens folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from models.data import Interactions, from_movielens, from_store

if TYPE_CHECKING:
    from models.hybrid_vae import HybridVAE

__all__ = ["load_evaluated", "load_interactions"]


def load_interactions(store_dir: Path, *, data: Path | None = None, split_quantile: float = 0.8) -> Interactions:
    """The current feature-store version, or (``data`` given) a MovieLens folder split at ``split_quantile``.

    DataError when there is no store yet (the message says to run ``reelstream bootstrap``).
    """
    if data is not None:
        return from_movielens(data, split_quantile=split_quantile)
    from bootstrap.store import load_store

    return from_store(load_store(store_dir))


def load_evaluated(
    store_dir: Path, models_dir: Path, *, model_dir: Path | None = None, data: Path | None = None
) -> tuple[Interactions, Path, HybridVAE]:
    """The data, the model folder (default: ``models_dir/CURRENT``) and its hybrid VAE, checked to match and
    primed with the data's HISTORY (the item prior's counts at the split): what an offline walk starts from."""
    from models.hybrid_vae import HybridVAE
    from models.runtime import current_model_dir
    from reelstream.errors import ModelError

    interactions = load_interactions(store_dir, data=data)
    folder = model_dir or current_model_dir(models_dir)
    vae = HybridVAE.load(folder, expect_data_version=interactions.version if data is None else None)
    if vae.runtime_.n_items != interactions.n_items:
        raise ModelError(f"{folder}: model has {vae.runtime_.n_items} movies, the data {interactions.n_items}")
    vae.prime(interactions.history)
    return interactions, folder, vae
