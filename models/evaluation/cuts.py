"""Re-splitting one dataset at another global time quantile, with the feature store's rules.

The feature store cuts once (``bootstrap/split.py``); an evaluation that is scored at one cut only can
be tuned to that cut. :func:`cut_at` merges HISTORY and STREAM back into one time-ordered log and
cuts it again at ``quantile``, exactly as ``bootstrap`` would have:

* the cut time is the ``lower`` quantile of all rating timestamps (a real rating time, so at least
  that share of ratings lands in HISTORY), and HISTORY is ``ts <= cut``;
* the index spaces (users, movies, side features) stay those of ``data``; the evaluation catalogue
  (:meth:`~models.data.Interactions.known_items`) becomes the movies with a HISTORY rating at the new
  cut, so a movie first rated after it is neither ranked nor scored.
"""

from __future__ import annotations

import numpy as np

from models.data import Events, Interactions
from reelstream.errors import DataError

__all__ = ["all_events", "cut_at", "cut_time"]


def all_events(data: Interactions) -> Events:
    """HISTORY then STREAM as one log in ``(ts, user, item)`` order (stable: equal keys keep their order)."""
    h, s = data.history, data.stream
    ev = Events(np.concatenate([h.user, s.user]), np.concatenate([h.item, s.item]),
                np.concatenate([h.rating, s.rating]), np.concatenate([h.ts, s.ts]))  # fmt: skip
    order = np.lexsort((ev.item, ev.user, ev.ts))
    return Events(ev.user[order], ev.item[order], ev.rating[order], ev.ts[order])


def cut_time(ts: np.ndarray, quantile: float) -> int:
    """The ``lower`` ``quantile`` of ``ts``: what ``bootstrap.split.resolve_cut`` picks.

    >>> cut_time(np.array([5, 1, 3, 2, 4]), 0.8)
    4
    """
    if not 0.0 < quantile < 1.0:
        raise DataError(f"cut quantile must be in (0, 1), got {quantile}")
    if len(ts) == 0:
        raise DataError("cannot cut a dataset with no ratings")
    return int(np.quantile(ts, quantile, method="lower"))


def cut_at(data: Interactions, quantile: float) -> Interactions:
    """``data`` (HISTORY and STREAM together) split again at the global time ``quantile`` (``ts <= cut``)."""
    ev = all_events(data)
    cut = cut_time(ev.ts, quantile)
    before = ev.ts <= cut
    return Interactions(
        history=ev.select(before), stream=ev.select(~before), n_users=data.n_users, n_items=data.n_items,
        item_side=data.item_side, side_names=data.side_names, movie_ids=data.movie_ids, genres=data.genres,
        version=data.version, side_year_range=data.side_year_range,
        metadata={**data.metadata, "split": {"method": "quantile", "quantile": quantile, "cut_ts": cut,
                                             "history_ratings": int(before.sum()),
                                             "stream_ratings": int((~before).sum())},
                  "split_ts": cut, "split_quantile": quantile},
    )  # fmt: skip
