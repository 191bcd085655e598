"""How training sizes itself to its data: the large-data plan and the time budget split across phases.

On ml-latest-small (100k ratings, 9,742 movies) the exact softmax, batches of 128 and early stopping take
about a minute. At ML-32M shape (25.6 M HISTORY ratings, 87,585 movies) the same settings cost about half
an hour per epoch on two cores, so above :data:`LARGE_HISTORY` ratings the plan changes: batches of 1,024,
a sampled softmax over 4,096 drawn movies plus the batch's positives above :data:`WIDE_CATALOGUE` movies
(``models/training.py``), validation-walk settings scored on 20,000 events instead of 50,000 (HR@20's
standard error stays under 0.003), and a wall-clock budget (:data:`DEFAULT_BUDGET_MIN`) split over the phases of
``reelstream train``: the validation fit, the scoring-parameter search, the final fit (warm-started from the
validation fit) and the rest (loading, the co-rating tables, the evaluation walk, writing). Every value can
be set by hand; the plan only fills what is not given.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEFAULT_BUDGET_MIN",
    "LARGE_HISTORY",
    "SHARES",
    "WIDE_CATALOGUE",
    "TrainingPlan",
    "final_fit_seconds",
    "plan",
]

#: HISTORY ratings above which training uses the large-data plan.
LARGE_HISTORY = 500_000
#: Movies above which the training softmax is sampled.
WIDE_CATALOGUE = 20_000
#: The budget of a large-data ``reelstream train``, minutes (issue goal: 20 minutes at ML-32M shape).
DEFAULT_BUDGET_MIN = 20.0
#: Share of the budget each phase may spend; what is left covers loading, co-rating tables, the evaluation.
SHARES = {"validation_fit": 0.30, "search": 0.20, "final_fit": 0.25}


@dataclass(frozen=True)
class TrainingPlan:
    """The training settings for one dataset; ``None`` budgets mean "no limit"."""

    batch_size: int
    sampled_softmax: int
    budget_s: float | None
    #: scored events of each validation-walk setting (every stride-th positive beyond this)
    walk_events: int = 50_000

    def seconds(self, phase: str) -> float | None:
        """The seconds ``phase`` (a key of :data:`SHARES`) may spend."""
        return None if self.budget_s is None else self.budget_s * SHARES[phase]


def plan(n_history: int, n_items: int, *, batch_size: int | None = None, sampled_softmax: int | None = None,
         budget_minutes: float | None = None) -> TrainingPlan:  # fmt: skip
    """The plan for ``n_history`` HISTORY ratings over ``n_items`` movies; given values are kept.

    >>> plan(100_000, 9_742)
    TrainingPlan(batch_size=128, sampled_softmax=0, budget_s=None, walk_events=50000)
    >>> plan(25_600_000, 87_585)
    TrainingPlan(batch_size=1024, sampled_softmax=4096, budget_s=1200.0, walk_events=20000)
    >>> plan(25_600_000, 87_585, sampled_softmax=0, budget_minutes=45).budget_s
    2700.0
    """
    large = n_history > LARGE_HISTORY
    if batch_size is None:
        batch_size = 1024 if large else 128
    if sampled_softmax is None:
        sampled_softmax = 4096 if large and n_items > WIDE_CATALOGUE else 0
    if budget_minutes is None and large:
        budget_minutes = DEFAULT_BUDGET_MIN
    budget_s = None if budget_minutes is None else 60.0 * budget_minutes
    return TrainingPlan(batch_size, sampled_softmax, budget_s, walk_events=20_000 if large else 50_000)


#: Share of the budget kept free at the end for what estimates miss (writing the model, the summary).
MARGIN = 0.03
#: The final fit is never given less than this (seconds): one useful pass of a warm-started model.
MIN_FINAL_FIT_S = 30.0


def final_fit_seconds(budget_s: float, elapsed_s: float, *, finish_s: float, history_ratio: float,
                      walk_s: float) -> float:  # fmt: skip
    """The final fit's seconds so that the whole run ends within ``budget_s``: a deadline, not a share.

    The phases before it can overrun their shares (a fit closes its epoch and builds its co-rating table
    after its batches stop), so the final fit gets what is left once the tail is reserved: its own
    finishing work (``finish_s``, measured on the validation fit, scaled by ``history_ratio``, the full
    HISTORY over the inner one), the evaluation walk (``walk_s``, estimated from the search's pace) and
    :data:`MARGIN` of the budget. Never below :data:`MIN_FINAL_FIT_S`.

    >>> final_fit_seconds(1200, 765, finish_s=100, history_ratio=1.25, walk_s=50)
    224.0
    >>> final_fit_seconds(1200, 1190, finish_s=100, history_ratio=1.25, walk_s=50)
    30.0
    """
    left = budget_s - elapsed_s - finish_s * history_ratio - walk_s - MARGIN * budget_s
    return max(MIN_FINAL_FIT_S, round(left, 1))
