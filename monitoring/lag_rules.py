"""Burrow-style lag evaluation: named pure rules over a sliding window of offset samples.

A *sample* is what the monitor saw at one instant for one partition: the group's
committed offset, the log-end offset (high watermark), whether the group was
committing, and the time of the latest log reset the worker recorded in Redis
(``rs:resets:{topic}``, streams/log_identity.py). The rules look only at the window of samples and ``now``; nothing
here does I/O, so the whole rule set is tested by a numbered case table
(``tests/test_lag_rules.py``).

Verdicts, worst first::

    RESET   the partition's log was replaced: its end fell below an end seen earlier in the window, the
            committed offset is beyond the end, or the worker recorded a reset within the window (held at
            least RESET_HOLD_S, so a one-shot ``reelstream lag`` shows a recent one)
    REWIND  the committed offset went backwards
    STOP    lag > 0 and no commits in the window
    STALL   lag > 0, commits arrive, but the offset does not move
    WARN    the consumer moves, yet lag grew across the window
    OK      anything else (including a caught-up, idle consumer)

"Committing" is known from the commit time that consumers put in their offset
metadata (``reelstream`` workers and probes do), and otherwise from the group
having live members. Apache Kafka drops dead members after the session
timeout; Tansu keeps them, so there a crashed consumer that wrote no commit
times reads as STALL rather than STOP.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

__all__ = ["RESET_HOLD_S", "PartitionSample", "Verdict", "evaluate_group", "evaluate_partition"]

#: A reset recorded by the worker counts this long before the window's first sample, at least (seconds).
RESET_HOLD_S = 60.0


class Verdict(IntEnum):
    """Partition/group status; a larger value is worse, so a group takes the max of its partitions."""

    OK = 0
    WARN = 1
    STALL = 2
    STOP = 3
    REWIND = 4
    RESET = 5


@dataclass(frozen=True)
class PartitionSample:
    """One observation of one partition."""

    at: float  #: when it was taken (epoch seconds)
    committed: int  #: the group's committed offset (next offset it will read); -1 when none
    end: int  #: log-end offset (high watermark)
    committing: bool  #: the group committed since the previous sample (or is known to be live)
    reset_ms: int | None = None  #: the latest log reset the worker recorded for this partition (epoch ms)

    @property
    def lag(self) -> int:
        return max(self.end - max(self.committed, 0), 0)


# Rule 0 - a replaced log makes every other comparison meaningless (its offsets restart), so it comes first.
def did_log_end_fall(window: Sequence[PartitionSample]) -> bool:
    """Rule 0a - the log end fell below an end seen earlier in the window (within one log it never falls)."""
    highest = -1
    for s in window:
        if s.end < highest:
            return True
        highest = max(highest, s.end)
    return False


def is_committed_beyond_end(window: Sequence[PartitionSample]) -> bool:
    """Rule 0b - the group's committed offset is beyond the log end: it was committed against another log."""
    latest = window[-1]
    return latest.committed > latest.end


def was_reset_recorded(window: Sequence[PartitionSample], hold_s: float = RESET_HOLD_S) -> bool:
    """Rule 0c - the worker recorded a log reset in the window (or less than ``hold_s`` before it began)."""
    at = window[-1].reset_ms
    return at is not None and at / 1000.0 >= window[0].at - hold_s


def is_log_reset(window: Sequence[PartitionSample], hold_s: float = RESET_HOLD_S) -> bool:
    """Rule 0 - any of 0a, 0b, 0c."""
    return did_log_end_fall(window) or is_committed_beyond_end(window) or was_reset_recorded(window, hold_s)


# Rule 1 - a rewind makes every other comparison meaningless, so it is checked next.
def did_offset_rewind(window: Sequence[PartitionSample]) -> bool:
    """Rule 1 - the committed offset went backwards somewhere in the window."""
    return any(b.committed < a.committed for a, b in itertools.pairwise(window))


def is_caught_up(window: Sequence[PartitionSample]) -> bool:
    """Rule 2 - lag was zero at some point in the window: the consumer keeps up."""
    return any(s.lag == 0 for s in window)


def did_offsets_stop_moving(window: Sequence[PartitionSample]) -> bool:
    """Rule 3 - the committed offset is the same in every sample of the window."""
    return len({s.committed for s in window}) == 1


def is_committing(window: Sequence[PartitionSample]) -> bool:
    """Rule 4 - the group committed (or showed itself live) in the latest part of the window."""
    return any(s.committing for s in window[1:]) if len(window) > 1 else window[-1].committing


def is_lag_growing(window: Sequence[PartitionSample]) -> bool:
    """Rule 5 - lag never decreased across the window and ended higher than it started."""
    lags = [s.lag for s in window]
    return all(b >= a for a, b in itertools.pairwise(lags)) and lags[-1] > lags[0]


def evaluate_partition(window: Sequence[PartitionSample], hold_s: float = RESET_HOLD_S) -> Verdict:
    """The verdict for one partition's window (oldest sample first). Order: worst status first."""
    if not window:
        return Verdict.OK
    if is_log_reset(window, hold_s):
        return Verdict.RESET
    if did_offset_rewind(window):
        return Verdict.REWIND
    if is_caught_up(window):
        return Verdict.OK
    if did_offsets_stop_moving(window) and len(window) > 1:
        return Verdict.STALL if is_committing(window) else Verdict.STOP
    if is_lag_growing(window):
        return Verdict.WARN
    return Verdict.OK


def evaluate_group(verdicts: Sequence[Verdict]) -> Verdict:
    """A group is as bad as its worst partition."""
    return max(verdicts, default=Verdict.OK)
