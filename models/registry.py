"""Every model a live system may serve at once, by version: what a hot swap needs (docs/models.md).

During a hot swap (``streams/swap.py``) users' states belong to two models: those not yet re-encoded
to the old one, the rest to the new one. The worker folds, and the gateway scores, each user with the
model its state names (``rs:user:{uid}`` ``model_version``), so both load runtimes by version from
``var/models/{version}`` (the folder :func:`models.artifacts.publish` wrote: its name is the version)
and keep them here. Numpy only, no torch.
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path

import numpy as np

from models.runtime import ModelRuntime
from reelstream.errors import ModelError

__all__ = ["ModelSet", "swap_problem"]

log = logging.getLogger(__name__)


class ModelSet:
    """Runtimes by version, each loaded once from ``models_dir/{version}`` (thread-safe)."""

    def __init__(self, models_dir: Path, *preloaded: ModelRuntime, scoring: bool = True) -> None:
        """``scoring``: load the parts only scoring reads too (:meth:`ModelRuntime.load`)."""
        self.models_dir = models_dir
        self.scoring = scoring
        self._runtimes: dict[str, ModelRuntime] = {rt.version: rt for rt in preloaded}
        self._missing: dict[str, str] = {}  #: version -> why it could not be loaded (logged once)
        self._lock = threading.Lock()

    def __contains__(self, version: str) -> bool:
        return version in self._runtimes

    def loaded(self) -> list[ModelRuntime]:
        return list(self._runtimes.values())

    def get(self, version: str) -> ModelRuntime | None:
        """The runtime of ``version``, loading it on first use; None (logged once) when it cannot be loaded."""
        rt = self._runtimes.get(version)
        if rt is not None or version in self._missing:
            return rt
        with self._lock:
            rt = self._runtimes.get(version)
            if rt is not None:
                return rt
            try:
                rt = self.load(version)
            except ModelError as exc:
                self._missing[version] = str(exc)
                log.warning("model %s cannot be loaded: %s", version, exc)
                return None
            self._runtimes[version] = rt
            return rt

    def load(self, version: str) -> ModelRuntime:
        """Load ``version`` (ModelError when there is no such model folder, or it is corrupt)."""
        folder = self.models_dir / version
        if not version or "/" in version or version.startswith(".") or not folder.is_dir():
            raise ModelError(f"no model {version!r} in {self.models_dir}")
        rt = ModelRuntime.load(folder, scoring=self.scoring)
        if rt.version != version:
            raise ModelError(f"{folder}: its metadata names model {rt.version!r}, not {version!r}")
        return rt

    def drop(self, keep: set[str]) -> list[str]:
        """Forget every runtime not in ``keep`` (after a swap finished); returns the versions dropped."""
        with self._lock:
            gone = [v for v in self._runtimes if v not in keep]
            for v in gone:
                del self._runtimes[v]
            return gone


def swap_problem(old: ModelRuntime, new: ModelRuntime) -> str | None:
    """Why users' states cannot move from ``old`` to ``new`` while ingestion goes on, or None when they can.

    * both must know the same movies (a user's rated movies are re-encoded with ``new``'s rows, and a user
      not re-encoded yet keeps folding with ``old``'s: an event ``old`` could not fold would be lost; movies
      announced by MovieEvents get rows from their side features in both). Models trained on one store
      version do: the item index covers every movie of ``movies.csv``;
    * the item prior must be kept at the same half-life (or be absent in both): ``rs:items:prior`` holds
      counts at one half-life, and a new one would need every past event again (a rebuild).
    """
    for a, b in ((new, old), (old, new)):
        missing = np.setdiff1d(b.movie_ids, a.movie_ids)
        if missing.size:
            return f"model {a.version} lacks {missing.size} movie(s) model {b.version} knows (e.g. {int(missing[0])})"
    if old.has_item_prior != new.has_item_prior:
        has, lacks = (old, new) if old.has_item_prior else (new, old)
        return (f"model {has.version} has an item prior and {lacks.version} none: rs:items:prior would have to be "
                "rebuilt (reelstream rebuild --force)")  # fmt: skip
    if old.has_item_prior and not math.isclose(
        old.item_prior["half_life_s"], new.item_prior["half_life_s"], rel_tol=1e-9
    ):
        return (f"model {new.version}'s item prior half-life ({new.item_prior['half_life_s']:g} s) is not "
                f"{old.version}'s ({old.item_prior['half_life_s']:g} s): rs:items:prior is kept at one half-life; "
                "train with the same one, or rebuild (reelstream rebuild --force)")  # fmt: skip
    return None
