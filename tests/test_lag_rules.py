"""The correctness proof of the lag rules: one numbered case per behaviour (Burrow style)."""

from __future__ import annotations

import pytest

from monitoring.lag_rules import RESET_HOLD_S, PartitionSample, Verdict, evaluate_group, evaluate_partition

T0 = 1_000_000.0  #: the first sample's time (epoch seconds)


def window(*rows: tuple[int, int, bool], reset_at: float | None = None) -> list[PartitionSample]:
    """(committed, end, committing) rows, one second apart from T0; ``reset_at``: a reset the worker recorded."""
    reset_ms = None if reset_at is None else int(reset_at * 1000)
    return [PartitionSample(at=T0 + i, committed=c, end=e, committing=k, reset_ms=reset_ms)
            for i, (c, e, k) in enumerate(rows)]  # fmt: skip


CASES = [
    # 1. caught up the whole time
    (window((10, 10, True), (20, 20, True), (30, 30, True)), Verdict.OK),
    # 2. lagging but catching up (lag shrinking)
    (window((10, 50, True), (30, 60, True), (55, 65, True)), Verdict.OK),
    # 3. lag hit zero once in the window: OK even if it grows later
    (window((10, 10, True), (12, 20, True), (14, 30, True)), Verdict.OK),
    # 4. moving but lag grows every sample
    (window((10, 20, True), (12, 30, True), (14, 40, True)), Verdict.WARN),
    # 5. moving, lag flat: not growing
    (window((10, 20, True), (20, 30, True), (30, 40, True)), Verdict.OK),
    # 6. committing the same offset while lag > 0
    (window((10, 20, True), (10, 25, True), (10, 30, True)), Verdict.STALL),
    # 7. no commits and no progress while lag > 0
    (window((10, 20, False), (10, 25, False), (10, 30, False)), Verdict.STOP),
    # 8. offset went back (reset or replay): rewind beats everything
    (window((50, 60, True), (20, 60, True), (25, 60, True)), Verdict.REWIND),
    # 9. rewind even while caught up at some sample
    (window((50, 50, True), (20, 50, True)), Verdict.REWIND),
    # 10. idle: nothing produced, nothing consumed, no commits: OK (lag is zero)
    (window((10, 10, False), (10, 10, False)), Verdict.OK),
    # 11. a single sample with lag cannot show a trend: OK
    (window((10, 20, False)), Verdict.OK),
    # 12. committing stopped only in the first sample counts as not committing now
    (window((10, 20, True), (10, 20, False), (10, 20, False)), Verdict.STOP),
    # 13. no committed offset yet (-1) and records waiting, nothing moves
    (window((-1, 5, False), (-1, 5, False)), Verdict.STOP),
    # 14. the log end fell (a memory-only broker restarted; its group offsets went with it): reset
    (window((30, 32, True), (-1, 2, False)), Verdict.RESET),
    # 15. the end fell earlier in the window; the consumer caught up with the new log since: still reset
    (window((30, 32, True), (0, 2, True), (2, 2, True)), Verdict.RESET),
    # 16. a committed offset beyond the log end: committed against another log
    (window((31, 2, True)), Verdict.RESET),
    # 17. the worker recorded a reset during the window (caught up otherwise)
    (window((2, 2, True), (4, 4, True), reset_at=T0 + 0.5), Verdict.RESET),
    # 18. a reset recorded within the hold before the window began: still shown
    (window((2, 2, True), (4, 4, True), reset_at=T0 - RESET_HOLD_S + 1), Verdict.RESET),
    # 19. a reset recorded long before the window: the other rules decide
    (window((2, 2, True), (4, 4, True), reset_at=T0 - RESET_HOLD_S - 1), Verdict.OK),
    # 20. a reset beats a rewind (a new log rewinds every offset)
    (window((50, 60, True), (20, 60, True), reset_at=T0), Verdict.RESET),
]


@pytest.mark.parametrize(("samples", "expected"), CASES, ids=[f"case{i + 1}" for i in range(len(CASES))])
def test_partition_verdicts(samples: list[PartitionSample], expected: Verdict) -> None:
    assert evaluate_partition(samples) is expected


def test_group_takes_the_worst_partition() -> None:
    assert evaluate_group([Verdict.OK, Verdict.STALL, Verdict.WARN]) is Verdict.STALL
    assert evaluate_group([Verdict.REWIND, Verdict.RESET, Verdict.STOP]) is Verdict.RESET
    assert evaluate_group([]) is Verdict.OK


def test_lag_never_negative() -> None:
    assert PartitionSample(at=0, committed=12, end=10, committing=True).lag == 0
    assert PartitionSample(at=0, committed=-1, end=7, committing=False).lag == 7
