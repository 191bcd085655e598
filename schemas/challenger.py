"""``rs:challenger``: the online model's call for a challenger, and ``reelstream retrain``'s answer.

Written by three sides, read by three: the worker counts drift alarms into ``requested`` in its batch's fenced
commit (``streams/processor.py``, so an alarm counts once with its batch); the live hit-rate watch counts a
fall there once per closed serving day (``hit_rate_day``, ``monitoring/hit_rate.py``); ``reelstream retrain`` writes
``answered`` (the ``requested`` it ran for) and ``answer`` when it finishes; ``reelstream lag``, the gateway's
``/health`` and ``/stats`` read it with :func:`decode_challenger`. A request is *pending* while
``requested > answered``: a retrain that ran answers every alarm counted before it started.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from schemas.redis_keys import text

__all__ = ["Challenger", "answer_fields", "decode_challenger"]


@dataclass(frozen=True, slots=True)
class Challenger:
    """``rs:challenger`` decoded (zeros and None where the hash has nothing yet)."""

    requested: int = 0  #: drift alarms counted since the system started
    answered: int = 0  #: the ``requested`` value the latest retrain ran for
    last_alarm_ms: int | None = None  #: the event time of the latest event ADWIN alarmed at
    reason: str | None = None
    answered_ms: int | None = None
    answer: str | None = None  #: what the latest retrain did (promoted or kept, why); a failed round: none
    hit_rate_day: int | None = None  #: the latest serving day the hit-rate watch asked for (monitoring/hit_rate.py)

    @property
    def pending(self) -> int:
        """Alarms no retrain has answered yet (0: nothing asked)."""
        return max(self.requested - self.answered, 0)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pending": self.pending}


def _int(raw: Any) -> int | None:
    try:
        return int(float(text(raw)))
    except ValueError:
        return None


def decode_challenger(raw: Mapping[Any, Any]) -> Challenger:
    """``HGETALL rs:challenger`` (bytes or text); a field that does not parse reads as absent.

    >>> c = decode_challenger({b"requested": b"3", b"answered": b"1", b"reason": b"drift"})
    >>> c.pending, c.reason, c.last_alarm_ms
    (2, 'drift', None)
    >>> decode_challenger({}).pending
    0
    """
    got = {text(k): v for k, v in raw.items()}
    ints = {name: _int(got[name]) if name in got else None for name in ("requested", "answered", "last_alarm_ms",
                                                                       "answered_ms", "hit_rate_day")}  # fmt: skip
    texts = {name: text(got[name]) if name in got else None for name in ("reason", "answer")}
    return Challenger(requested=ints["requested"] or 0, answered=ints["answered"] or 0,
                      last_alarm_ms=ints["last_alarm_ms"], reason=texts["reason"], answered_ms=ints["answered_ms"],
                      answer=texts["answer"], hit_rate_day=ints["hit_rate_day"])  # fmt: skip


def answer_fields(requested: int, answer: str, now_ms: int) -> dict[str, Any]:
    """The fields ``reelstream retrain`` writes when it finishes a round started at ``requested`` alarms.

    >>> answer_fields(4, "kept m0001", 1000)
    {'answered': 4, 'answer': 'kept m0001', 'answered_ms': 1000}
    """
    return {"answered": requested, "answer": answer, "answered_ms": now_ms}
