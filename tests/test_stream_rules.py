"""The rating contract's case table (schemas/ratings.py): what is applied, and what goes to the dead letters."""

from __future__ import annotations

import json
import math

import pytest

from schemas.ratings import (
    MAX_ID,
    MAX_RATING,
    MIN_ID,
    MIN_RATING,
    RATING_STEP,
    REASONS,
    SOURCES,
    RatingLimits,
    rating_verdict,
    user_key,
)
from schemas.wire import SCHEMA_DIR

NOW = 1_700_000_000_000
LIMITS = RatingLimits(min_ts_ms=631_152_000_000, max_future_ms=86_400_000, probe_user_base=2_000_000_000)
BASE = LIMITS.probe_user_base
CATALOGUE = {2, 3}
OK = {"user_id": 1, "movie_id": 2, "rating": 4.0, "event_ts": 1_500_000_000_000, "source": "api"}
SAME = object()  #: the key that matches the (changed) user id

CASES = [
    # (n, change, key, expected reason or None)
    (1, {}, SAME, None),
    (2, {"rating": MIN_RATING}, SAME, None),
    (3, {"rating": MAX_RATING}, SAME, None),
    (4, {"rating": 2.5}, SAME, None),  # a half step
    (5, {"user_id": 0}, SAME, "bad_user"),
    (6, {"user_id": -1, "rating": 9.0}, SAME, "bad_user"),  # rule order: the user first
    (7, {"user_id": MAX_ID, "source": "probe"}, SAME, None),  # the largest id (reserved: a probe)
    (8, {"user_id": MAX_ID + 1}, SAME, "bad_user"),
    (9, {}, b"2", "key_mismatch"),
    (10, {}, None, "key_mismatch"),  # no key at all
    (11, {}, b"01", "key_mismatch"),  # not the canonical digits
    (12, {"rating": 9.0}, b"7", "key_mismatch"),  # the key before the rating
    (13, {"user_id": BASE}, SAME, "reserved_user"),  # a person's source in the probe range
    (14, {"user_id": BASE + 5, "source": "replay"}, SAME, "reserved_user"),
    (15, {"user_id": BASE - 1}, SAME, None),  # the last person's id
    (16, {"source": "probe"}, SAME, "reserved_user"),  # a probe outside the probe range
    (17, {"user_id": BASE, "source": "probe"}, SAME, None),
    (18, {"user_id": BASE, "source": "probe", "rating": 0.0}, SAME, "rating_out_of_range"),
    (19, {"rating": 0.0}, SAME, "rating_out_of_range"),
    (20, {"rating": 5.5}, SAME, "rating_out_of_range"),
    (21, {"rating": 3.25}, SAME, "rating_out_of_range"),  # not a half step
    (22, {"rating": math.nan}, SAME, "rating_out_of_range"),
    (23, {"rating": math.inf}, SAME, "rating_out_of_range"),
    (24, {"event_ts": LIMITS.min_ts_ms}, SAME, None),
    (25, {"event_ts": LIMITS.min_ts_ms - 1}, SAME, "bad_timestamp"),
    (26, {"event_ts": NOW + LIMITS.max_future_ms}, SAME, None),
    (27, {"event_ts": NOW + LIMITS.max_future_ms + 1}, SAME, "bad_timestamp"),
    (28, {"rating": 6.0, "event_ts": 0}, SAME, "rating_out_of_range"),  # the rating before the time
    (29, {"movie_id": 99}, SAME, "unknown_movie"),
    (30, {"movie_id": 3}, SAME, None),  # e.g. announced by a MovieEvent
    (31, {"movie_id": 99, "event_ts": 0}, SAME, "bad_timestamp"),  # the movie last (the lookup)
]


@pytest.mark.parametrize(("n", "change", "key", "reason"), CASES, ids=[f"case{c[0]}" for c in CASES])
def test_rule_table(n: int, change: dict, key: object, reason: str | None) -> None:
    event = {**OK, **change}
    wire_key = user_key(event["user_id"]) if key is SAME else key
    verdict = rating_verdict(event, wire_key, now_ms=NOW, limits=LIMITS, known_movie=CATALOGUE.__contains__)
    assert (verdict.reason if verdict else None) == reason
    if verdict is not None:
        assert verdict.reason in REASONS and verdict.detail


def test_every_reason_is_reached_by_the_table() -> None:
    assert {c[3] for c in CASES} - {None} == set(REASONS)


def test_the_sources_are_the_avro_enum() -> None:
    schema = json.loads((SCHEMA_DIR / "rating_event.avsc").read_text())
    (source,) = (f for f in schema["fields"] if f["name"] == "source")
    assert tuple(source["type"]["symbols"]) == SOURCES and source["type"]["default"] == "live"


def test_the_openapi_bounds_of_rating_create_are_the_contracts() -> None:
    from gateway.api.models import RatingCreate

    props = RatingCreate.model_json_schema()["properties"]
    rating = props["rating"]
    assert (rating["minimum"], rating["maximum"], rating["multipleOf"]) == (MIN_RATING, MAX_RATING, RATING_STEP)
    for name in ("user_id", "movie_id"):
        assert (props[name]["minimum"], props[name]["maximum"]) == (MIN_ID, MAX_ID)
