"""The models a gateway serves: the serving catalogue, the ones a hot swap still needs, announced movies, indexes.

One mixin of :class:`gateway.service.Gateway` (the state it reads is set in ``Gateway.__init__``): which
model a user's state belongs to, following ``rs:model`` (streams/swap.py), the worker's item prior, movies a
``MovieEvent`` announced (``rs:movie:*``), the rating contract's catalogue, and each catalogue's retrieval
index (gateway/retrieval.py), built off the request path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from gateway.catalog import Catalog, NewMovie
from gateway.parts import GatewayParts
from gateway.prior import ItemPrior
from gateway.retrieval import ItemIndex
from schemas import redis_keys as keys
from schemas.movie_record import MovieRecord, decode_movie
from schemas.user_record import RecordError

log = logging.getLogger(__name__)


__all__ = ["ServedModels"]


class ServedModels(GatewayParts):
    """Which catalogue, prior, co-rating term and index serve a request (a mixin of ``Gateway``)."""

    others: dict[str, tuple[Catalog, ItemPrior]]
    announced: set[int]
    load_model: Callable[[str], tuple[Catalog, ItemPrior]] | None
    _announced_ms: dict[int, int | None]
    _fallback_logged: set[str]
    _loaded_from: set[str]
    _indexes: dict[str, ItemIndex]
    _index_building: set[str]
    _index_lock: threading.Lock

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
        fresh: list[NewMovie] = []
        changed: list[NewMovie] = []
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
