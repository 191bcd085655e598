"""The gateway's use cases, one module per resource, composed into :class:`Gateway` (what the routes call).

:class:`Gateway` holds what the resources share (settings, catalogue and models, rules, Redis state, cache,
telemetry) and takes each resource's use cases from its module, as the routes are split:

* :mod:`gateway.recommender`: ``recommend``, the hot path;
* :mod:`gateway.profiles`: ``profile``, ``search_users``;
* :mod:`gateway.movie_details`: ``movie``, ``similar``;
* :mod:`gateway.status`: ``health``, ``stats``;
* :mod:`gateway.served_models`: which model serves whom, hot swaps, announced movies, retrieval indexes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from gateway.batching import ScoreBatcher
from gateway.cache import ResponseCache
from gateway.catalog import Catalog
from gateway.corating import CoRatingTerm
from gateway.impressions import ImpressionRecorder
from gateway.movie_details import MovieDetails
from gateway.prior import ItemPrior
from gateway.profiles import Profiles
from gateway.recommender import Recommending
from gateway.retrieval import ItemIndex
from gateway.rules import RulesStore
from gateway.served_models import ServedModels
from gateway.state import StateReader
from gateway.status import PROBE_TTL_S, CachedProbe, Status
from gateway.telemetry import Telemetry
from reelstream.settings import Settings

__all__ = ["Gateway"]


class Gateway(ServedModels, Recommending, Profiles, MovieDetails, Status):
    """Recommendations, profiles, movies, health and stats over one set of collaborators."""

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
        #: records every served list (gateway/impressions.py); set by the app when recording is on
        self.impressions: ImpressionRecorder | None = None
        self.batcher = ScoreBatcher(settings.gateway_batch_max)
        self.clock = clock
        self.wall_ms = wall_ms
        self._adjust: dict[tuple[str, str, str, str], np.ndarray] = {}
        self._adjust_lock = threading.Lock()
        self._decoder_sq: tuple[str, np.ndarray] | None = None  # (catalogue version, decoder ** 2) for UCB
        self._broker = CachedProbe(self._probe_broker, PROBE_TTL_S, clock)
        self._workers = CachedProbe(self._probe_workers, PROBE_TTL_S, clock)
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
