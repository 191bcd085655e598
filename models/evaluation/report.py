"""Run every learner through both protocols and both flavours; the JSON that ``reelstream evaluate`` writes."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

from models.base import Recommender
from models.data import Interactions
from models.evaluation.prequential import prequential
from models.evaluation.static import next_period

__all__ = ["evaluate_models"]


def evaluate_models(
    models: dict[str, Recommender], data: Interactions, *, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """``models`` are fitted learners; each is copied before a run, since STREAMING mutates global counts."""
    rows, periods = [], []
    for name, model in models.items():
        for streaming in (False, True):
            result = prequential(copy.deepcopy(model) if streaming else model, data, streaming=streaming, name=name)
            rows.append(result.as_dict())
            if log is not None:
                o = result.groups["overall"]
                log(f"{name:<28} {result.flavour:<9} HR@20 {o['hr']:.4f}  ({result.seconds:.1f} s)")
        periods.append(next_period(model, data, name=name).as_dict())
    h, s = data.history, data.stream
    return {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": {
            "version": data.version, "history_ratings": len(h), "stream_ratings": len(s),
            "n_items": data.n_items, "catalogue": int(data.known_items().sum()),
            "split": data.metadata.get("split", data.metadata.get("split_ts")),
        },
        "prequential": rows,
        "next_period": periods,
    }  # fmt: skip
