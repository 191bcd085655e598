"""Offline evaluation of learners; the protocol is written down in ``docs/evaluation.md``.

* :func:`prequential` walks STREAM in time order and ranks the catalogue before
  every positive event (HR@20, NDCG@20, MRR@100; overall, warm and cold users),
  in the STATIC (state frozen at the split) or STREAMING (state folded in per
  event) flavour;
* :func:`next_period` ranks once per user at the split and scores all of the
  user's STREAM positives (Recall@20, NDCG@100);
* :mod:`models.evaluation.metrics` holds the per-list metrics.
"""

from models.evaluation.prequential import PrequentialResult, prequential
from models.evaluation.static import NextPeriodResult, next_period

__all__ = ["NextPeriodResult", "PrequentialResult", "next_period", "prequential"]
