"""The exploration arms side by side on the prequential STREAMING walk (``reelstream explore-eval``).

Every arm walks the same STREAM with its own copy of the model (the walk moves the item prior's
counts), so the rows differ only in how the lists were ranked. The exploit row is the plain model:
the same figures ``reelstream evaluate`` reports for it. See ``docs/evaluation.md``, "Exploration".
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from models.base import Recommender
from models.data import Interactions
from models.evaluation.prequential import prequential
from models.exploration import KINDS, Exploring
from reelstream.errors import ConfigError

__all__ = ["Arm", "evaluate_arms", "parse_arm"]


@dataclass(frozen=True)
class Arm:
    """One exploration arm: ``kind`` (``thompson`` or ``ucb``) at ``scale``."""

    kind: str
    scale: float

    @property
    def name(self) -> str:
        return f"{self.kind} x{self.scale:g}"


def parse_arm(spec: str) -> Arm:
    """``KIND:SCALE`` -> :class:`Arm`; ConfigError names what is wrong.

    >>> parse_arm("thompson:0.5")
    Arm(kind='thompson', scale=0.5)
    >>> parse_arm("ucb:-1")
    Traceback (most recent call last):
    ...
    reelstream.errors.ConfigError: --arm 'ucb:-1': the scale must be a finite number from 0 to 10
    """
    kind, sep, raw = spec.partition(":")
    if not sep or kind not in KINDS:
        raise ConfigError(f"--arm {spec!r}: expected KIND:SCALE with KIND one of {list(KINDS)}, e.g. thompson:0.5")
    try:
        scale = float(raw)
    except ValueError:
        raise ConfigError(f"--arm {spec!r}: the scale {raw!r} is not a number") from None
    if not 0.0 <= scale <= 10.0:  # NaN fails both comparisons
        raise ConfigError(f"--arm {spec!r}: the scale must be a finite number from 0 to 10")
    return Arm(kind, scale)


def _row(name: str, kind: str, scale: float, result: Any) -> dict[str, Any]:
    g = result.groups
    return {
        "arm": name, "kind": kind, "scale": scale, "events": g["overall"]["events"],
        "hr": g["overall"]["hr"], "ndcg": g["overall"]["ndcg"], "mrr": g["overall"]["mrr"],
        "warm_hr": g["warm"]["hr"], "cold_hr": g["cold"]["hr"], "coverage": result.coverage,
        "novelty": result.novelty, "diversity": result.diversity, "seconds": round(result.seconds, 2),
    }  # fmt: skip


def evaluate_arms(
    model: Recommender,
    data: Interactions,
    arms: Sequence[Arm],
    *,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Exploit, then each arm, on the STREAMING walk; ``model`` is fitted (and primed) and left unchanged."""
    runs: list[tuple[str, str, float, Recommender]] = [("exploit", "none", 0.0, model)]
    runs += [(a.name, a.kind, a.scale, Exploring(model, a.kind, a.scale, seed)) for a in arms]
    rows = []
    for name, kind, scale, learner in runs:
        result = prequential(copy.deepcopy(learner), data, streaming=True, name=name)
        rows.append(_row(name, kind, scale, result))
        if log is not None:
            log(f"{name:<14} HR@20 {rows[-1]['hr']:.4f}  coverage {rows[-1]['coverage']:.3f}  ({result.seconds:.1f} s)")
    return {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "protocol": "prequential streaming, k=20 (docs/evaluation.md)",
        "seed": seed,
        "data": {"version": data.version, "history_ratings": len(data.history), "stream_ratings": len(data.stream)},
        "arms": rows,
    }
