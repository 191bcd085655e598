"""Every served list becomes an ImpressionEvent on its own topic, keyed by user; a broker outage drops and
counts them while every request still answers (gateway/impressions.py)."""

from __future__ import annotations

import asyncio
import json
import math
import uuid

import polars as pl
import pytest
import redis
from fastapi.testclient import TestClient

from gateway.api.models import RecommendationList, RecommendedMovie
from gateway.app import create_app
from gateway.impressions import ImpressionRecorder
from models.runtime import ModelRuntime
from reelstream.settings import Settings
from reelstream.shell import local_services
from schemas.wire import codec_for
from streams.admin import ensure_topics_sync
from streams.events import user_key
from streams.producer import EventProducer
from tests.stream_support import read_topic, wait_for
from tests.test_gateway_api import HEAT, TOY_STORY, make_gateway
from tests.user_state import write_user


async def _rating_partition(settings: Settings, user_id: int) -> int:
    async with EventProducer(settings) as producer:
        sent = await producer.send(user_id, HEAT, 4.0, source="live", known_movie=lambda _: True)
    return sent.partition


HISTORY_USERS = 610


def test_every_served_list_is_recorded_with_what_was_served(
    live_settings: Settings, runtime: ModelRuntime, items: pl.DataFrame, rclient: redis.Redis
) -> None:
    s = live_settings.model_copy(update={"topic_impressions": f"impressions-{uuid.uuid4().hex[:8]}"})
    ensure_topics_sync(s)
    write_user(rclient, runtime, 7, [(HEAT, 5.0), (TOY_STORY, 4.0)])
    gateway = make_gateway(s, runtime, items, history_users=HISTORY_USERS)
    served: list[tuple[dict, int, str]] = []
    with TestClient(create_app(s, gateway=gateway, impressions=True)) as tc:
        for uid, params in ((7, {"k": 5}), (7, {"k": 5}), (123456, {"k": 3}), (7, {"k": 4, "served_at_ms": 42})):
            before = gateway.wall_ms()
            body = tc.get(f"/recommendations/{uid}", params=params).json()
            served.append((body, before, "event" if "served_at_ms" in params else "wall"))
        wait_for(lambda: gateway.impressions is not None and gateway.impressions.snapshot()["sent"] == 4, 30,
                 "four impressions acknowledged")  # fmt: skip
        stats = tc.get("/stats").json()["impressions"]
    assert stats["recorded"] == stats["sent"] == 4 and stats["broker_down"] == stats["queue_full"] == 0
    got = sorted(
        ((r.key, r.partition, r.value) for r in asyncio.run(read_topic(s, s.topic_impressions, "ImpressionEvent", 4))),
        key=lambda r: (r[2]["user_id"], r[2]["served_ms"], r[2]["cached"]),
    )
    assert len(got) == 4
    n_ratings = dict(zip(items["movie_id"].to_list(), items["n_ratings"].to_list(), strict=True))
    expected = sorted(served, key=lambda b: (b[0]["user_id"], 42 if b[2] == "event" else b[1], b[0]["cached"]))
    for (key, _, event), (body, before, clock) in zip(got, expected, strict=True):
        assert key == user_key(body["user_id"])
        assert event["movie_ids"] == [i["movie_id"] for i in body["items"]]
        for field in ("user_id", "variant", "segment", "model_version", "rules_version", "source", "cached",
                      "degraded", "exploration"):  # fmt: skip
            assert event[field] == body[field], field
        assert event["clock"] == clock
        # novelty as docs/evaluation.md defines it: mean -log2(share of HISTORY users who rated each movie)
        share = [max(n_ratings.get(i["movie_id"], 0), 1) / HISTORY_USERS for i in body["items"]]
        assert event["novelty"] == pytest.approx(sum(-math.log2(x) for x in share) / len(share), rel=1e-6)
        assert event["served_ms"] == 42 if clock == "event" else before <= event["served_ms"] <= gateway.wall_ms()
    assert [e["cached"] for _, _, e in got if e["user_id"] == 7 and e["clock"] == "wall"] == [False, True]
    assert len({e["impression_id"] for _, _, e in got}) == 4
    # keyed like the ratings: the same partition number as the user's ratings, so one worker owns both
    assert {p for _, p, e in got if e["user_id"] == 7} == {asyncio.run(_rating_partition(s, 7))}


def test_with_the_broker_down_lists_are_served_and_impressions_dropped_and_counted(
    live_settings: Settings, runtime: ModelRuntime, items: pl.DataFrame, rclient: redis.Redis
) -> None:
    dead = live_settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{local_services.free_port()}"})
    write_user(rclient, runtime, 8, [(HEAT, 5.0)])
    gateway = make_gateway(dead, runtime, items)
    with TestClient(create_app(dead, gateway=gateway, impressions=True)) as tc:
        answers = [tc.get("/recommendations/8", params={"k": 5}) for _ in range(5)]
        assert [a.status_code for a in answers] == [200] * 5 and all(a.json()["items"] for a in answers)
        wait_for(lambda: gateway.impressions is not None and gateway.impressions.snapshot()["broker_down"] == 5, 30,
                 "five impressions counted as dropped")  # fmt: skip
        stats = tc.get("/stats").json()["impressions"]
        metrics = tc.get("/metrics").text
    assert stats["recorded"] == 5 and stats["sent"] == 0 and stats["queued"] == 0
    assert 'gateway_impressions_total{outcome="broker_down"} 5.0' in metrics


def test_a_full_queue_drops_and_counts_instead_of_waiting(settings: Settings) -> None:
    recorder = ImpressionRecorder(settings.model_copy(update={"gateway_impression_queue": 2}))
    item = RecommendedMovie(movie_id=1, title="t", genres=[], year=None, score=0.0, reasons=[])
    result = RecommendationList(user_id=1, k=1, items=[item], source="popularity", degraded=True, cached=False,
                                segment="new", variant="control", rule_set="default", rules_version="r",
                                state_version=0, model_version="m")  # fmt: skip
    for _ in range(3):
        recorder.record(result, 1, "wall")  # no task runs: nothing drains the queue
    assert recorder.snapshot() == {"recorded": 2, "sent": 0, "queue_full": 1, "broker_down": 0, "shutdown": 0,
                                   "queued": 2, "in_flight": 0}  # fmt: skip
    asyncio.run(recorder.close())
    assert recorder.snapshot()["shutdown"] == 2 and recorder.snapshot()["queued"] == 0


def test_recording_off_records_nothing(live_settings: Settings, runtime: ModelRuntime, items: pl.DataFrame) -> None:
    off = live_settings.model_copy(update={"gateway_impressions": False})
    gateway = make_gateway(off, runtime, items)
    with TestClient(create_app(off, gateway=gateway, impressions=True)) as tc:
        assert tc.get("/recommendations/1").status_code == 200
        assert gateway.impressions is None and tc.get("/stats").json()["impressions"] is None


def test_experiments_report_each_arm_against_the_control(
    live_settings: Settings, runtime: ModelRuntime, items: pl.DataFrame, rclient: redis.Redis, tmp_path
) -> None:
    """Counters written by the worker's processors (real Redis), read back by GET /experiments: 200 control
    lists with 20 hit, 200 "diverse" lists with 40 hit. By hand: 0.1 and 0.2, diff 0.1, se = sqrt(.2 * .8 / 200
    + .1 * .9 / 200) = 0.0353553, interval 0.1 +- 0.0692951 = (0.0307049, 0.1692951): ahead."""
    from streams.events import rating_event
    from streams.online import OnlineRatingModel
    from streams.processor import ImpressionProcessor, Message, RatingProcessor
    from streams.store import RedisFeatureTables

    store = RedisFeatureTables(rclient)
    t0, mids = 1_500_000_000_000, [int(m) for m in runtime.movie_ids[:20]]
    codec = codec_for("ImpressionEvent")
    imps, rates = [], []
    for i in range(400):
        variant, user = ("control", 1000 + i) if i < 200 else ("diverse", 1000 + i)
        ev = {"impression_id": f"x{i}", "user_id": user, "movie_ids": mids, "variant": variant, "segment": "new",
              "model_version": "m", "rules_version": "r", "source": "personalised", "cached": False,
              "degraded": False, "exploration": "none", "served_ms": t0, "clock": "event",
              "novelty": (3.0 if i % 2 == 0 else None) if i < 200 else 1.5}  # fmt: skip
        imps.append(Message("imp", 0, i, codec.encode(ev), key=user_key(user)))
        if (i < 200 and i % 10 == 0) or (i >= 200 and i % 5 == 0):
            rates.append(Message("rat", 0, len(rates), codec_for("RatingEvent").encode(
                rating_event(user, mids[3], 4.0, t0 + 1000, "replay")), key=user_key(user)))  # fmt: skip
    impressions = ImpressionProcessor(store, topic="imp")
    assert impressions.commit(impressions.plan(imps))
    RatingProcessor(runtime, store, topic="rat", min_ts_ms=0, max_future_ms=10**15, half_life_s=3600.0,
                    online=OnlineRatingModel()).run(rates)  # fmt: skip
    rules = tmp_path / "ab-rules.yaml"
    doc = live_settings.model_copy(update={"gateway_rules_path": rules})
    rules.write_text("name: ab\nvariants:\n  arms:\n    - {name: control, weight: 1}\n"
                              "    - {name: diverse, weight: 1}\n")  # fmt: skip
    with TestClient(create_app(doc, gateway=make_gateway(doc, runtime, items))) as tc:
        body = tc.get("/experiments").json()
    control, diverse = body["arms"]
    assert (control["variant"], control["verdict"], control["impressions"]) == ("control", "control", 200)
    assert control["hit_rate"] == pytest.approx(0.1) and diverse["hit_rate"] == pytest.approx(0.2)
    assert diverse["low"] == pytest.approx(0.0307049, abs=1e-6) and diverse["high"] == pytest.approx(
        0.1692951, abs=1e-6
    )
    assert diverse["verdict"] == "ahead" and diverse["users"] == 200
    assert (control["novelty"], diverse["novelty"]) == (3.0, 1.5)  # the mean over the lists recorded with one
    assert diverse["ndcg_20"] == pytest.approx(0.2 / math.log2(5)) and diverse["coverage"] == pytest.approx(
        20 / len(runtime.movie_ids)
    )


def test_the_experiments_command_prints_the_arms(
    live_settings: Settings, runtime: ModelRuntime, rclient: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from reelstream.settings import get_settings
    from reelstream.shell.cli import app
    from streams.processor import ImpressionProcessor, Message
    from streams.store import RedisFeatureTables

    models = live_settings.models_dir
    runtime.save(models / "m0001")
    (models / "CURRENT").write_text("m0001")
    codec = codec_for("ImpressionEvent")
    ev = {"impression_id": "z", "user_id": 5, "movie_ids": [int(runtime.movie_ids[0])], "variant": "control",
          "segment": "new", "model_version": "m", "rules_version": "r", "source": "trending", "cached": False,
          "degraded": False, "exploration": "none", "served_ms": 1, "clock": "wall"}  # fmt: skip
    impressions = ImpressionProcessor(RedisFeatureTables(rclient), topic="imp")
    assert impressions.commit(impressions.plan([Message("imp", 0, 0, codec.encode(ev), key=user_key(5))]))
    monkeypatch.setenv("REELSTREAM_VAR_DIR", str(live_settings.var_dir))
    get_settings.cache_clear()
    got = CliRunner().invoke(app, ["experiments", "--json"])
    assert got.exit_code == 0, got.output
    body = json.loads(got.output)
    assert body["control"] == "control" and [a["impressions"] for a in body["arms"]] == [1]
    assert body["arms"][0]["coverage"] == pytest.approx(1 / len(runtime.movie_ids))
    table = CliRunner().invoke(app, ["experiments"])
    assert table.exit_code == 0 and "control" in table.output
