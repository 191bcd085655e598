"""The validation rules' case table: the correctness proof of what goes to the dead-letter topic."""

from __future__ import annotations

import math

import pytest

from streams.rules import rating_verdict

NOW = 1_700_000_000_000
MIN = 631_152_000_000
FUTURE = 86_400_000
OK = {"user_id": 1, "movie_id": 2, "rating": 4.0, "event_ts": 1_500_000_000_000}

CASES = [
    # (n, change, expected reason or None)
    (1, {}, None),
    (2, {"rating": 0.5}, None),
    (3, {"rating": 5.0}, None),
    (4, {"user_id": 0}, "bad_user"),
    (5, {"user_id": -1, "rating": 9.0}, "bad_user"),  # rule order: user first
    (6, {"rating": 0.0}, "rating_out_of_range"),
    (7, {"rating": 5.5}, "rating_out_of_range"),
    (8, {"rating": 3.25}, "rating_out_of_range"),  # not a half step
    (9, {"rating": math.nan}, "rating_out_of_range"),
    (10, {"event_ts": MIN - 1}, "bad_timestamp"),
    (11, {"event_ts": NOW + FUTURE + 1}, "bad_timestamp"),
    (12, {"event_ts": NOW + FUTURE}, None),
    (13, {"rating": 6.0, "event_ts": 0}, "rating_out_of_range"),  # rating before time
]


@pytest.mark.parametrize(("n", "change", "reason"), CASES, ids=[f"case{c[0]}" for c in CASES])
def test_rule_table(n: int, change: dict, reason: str | None) -> None:
    verdict = rating_verdict({**OK, **change}, NOW, MIN, FUTURE)
    assert (verdict[0] if verdict else None) == reason
