"""The freshness probe, GET /lag, GET /freshness and the metrics endpoints against the live system.

A real broker and Redis (session fixtures), a real ``reelstream worker`` process,
and the gateway app with its background monitors. Every wait polls a condition
against a deadline.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from monitoring.freshness import FreshnessProbe, ProbeLost
from schemas import redis_keys as keys
from streams.admin import high_watermarks
from streams.metrics import SERIES as WORKER_SERIES
from streams.producer import EventProducer
from tests.live_system import EVALUATION, Live
from tests.stream_support import stats, wait_for

GATEWAY_SERIES = (
    "gateway_request_seconds",  # latency histogram per route
    "gateway_requests",
    "gateway_cache",  # cache hits and misses
    "gateway_recommendations",  # with the degraded label
    "reelstream_lag_messages",
    "reelstream_lag_seconds",
    "reelstream_lag_committed_offset",
    "reelstream_lag_log_end_offset",
    "reelstream_lag_consumption_rate",
    "reelstream_lag_partition_verdict",
    "reelstream_lag_group_verdict",
    "reelstream_freshness_seconds",
    "reelstream_freshness_probes",
)


def test_freshness_probe_times_a_marker_through_a_real_worker(live: Live) -> None:
    settings = live.settings.model_copy(update={"probe_timeout_s": 1.0})
    movies = [int(m) for m in live.runtime.movie_ids[:40]]

    async def without_worker() -> None:
        async with FreshnessProbe(settings, movies) as probe:
            with pytest.raises(ProbeLost, match="not applied within 1 s"):
                await probe.once()

    asyncio.run(without_worker())
    live.worker("fresh")
    # The lost marker is applied once the worker has joined: the worker consumes the probe like any rating.
    wait_for(lambda: stats(live.redis).get("events_applied", 0) >= 1, 60, "the first marker applied")
    # Source "probe": the probe users' own state only, nothing a recommendation or the online model reads.
    shared = (keys.ITEMS_POPULAR, keys.ITEMS_TRENDING, keys.ITEMS_PRIOR, keys.ITEMS_PRIOR_CLOCK, keys.ONLINE)
    shared += tuple(keys.item(m) for m in movies[:6])  # the movies the next six probes rate
    before = [live.redis.dump(k) for k in shared]

    async def with_worker() -> list:
        async with FreshnessProbe(settings.model_copy(update={"probe_timeout_s": 10.0}), movies) as probe:
            return [await probe.once() for _ in range(6)]

    results = asyncio.run(with_worker())
    probe_users = settings.probe_user_ids
    assert [r.user_id for r in results] == [probe_users[i] for i in range(6)]  # users taken in turn
    assert len({r.movie_id for r in results}) == 6  # and movies, so no movie gains popularity
    for r in results:
        assert 0 < r.produce_s <= r.seconds < 10.0
        assert int(live.redis.hget(keys.user(r.user_id), "last_ms")) == round(r.at * 1000)
    assert stats(live.redis)["events_applied"] == 7
    assert live.redis.hlen(keys.user_rated(probe_users[0])) == 1
    assert [live.redis.dump(k) for k in shared] == before


def _families(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def _value(samples: list, name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_gateway_serves_lag_freshness_reports_and_the_named_metrics(live: Live) -> None:
    settings = live.settings
    worker = live.worker("metrics")
    worker_port = int(worker.proc.args[-1])

    async def produce() -> None:
        known = live.runtime.index_of.__contains__
        async with EventProducer(settings) as producer:
            for i in range(20):
                await producer.send(1 + i % 5, int(live.runtime.movie_ids[i]), 4.0, known_movie=known)
            # a producer that wrongly believes in a movie nobody announced: dead letter "unknown_movie"
            await producer.send(7, 999_999_999, 3.0, known_movie=lambda _movie: True)

    asyncio.run(produce())
    wait_for(lambda: stats(live.redis).get("dead_letters", 0) >= 1, 60, "the dead letter")

    with TestClient(create_app(settings, monitors=True)) as tc:
        first = tc.get("/recommendations/1", params={"k": 5}).json()
        again = tc.get("/recommendations/1", params={"k": 5})
        assert again.json()["cached"] is True
        other = next(a for a in tc.get("/rules/arms").json()["variants"] if a != first["variant"])
        switched = tc.get("/recommendations/1", params={"k": 5, "variant": other, "segment": "heavy"}).json()
        assert (switched["variant"], switched["segment"]) == (other, "heavy")
        assert tc.get("/recommendations/1", params={"variant": "nope"}).status_code == 422

        def lag_ok() -> bool:
            r = tc.get("/lag")
            return r.status_code == 200 and r.json()["verdict"] == "OK" and r.json()["samples"] >= 3

        def probed() -> bool:
            f = tc.get("/freshness").json()
            return f["probes"] >= 3 and "metrics" in f["workers"]

        wait_for(lag_ok, 60, "GET /lag with an OK verdict")
        wait_for(probed, 60, "three freshness probes and the worker's freshness window")

        lag = tc.get("/lag").json()
        assert lag["group"] == settings.app_id and lag["error"] is None
        ratings = {p["partition"]: p for p in lag["partitions"] if p["topic"] == settings.topic_ratings}
        assert set(ratings) == set(range(settings.topic_partitions))
        ends = asyncio.run(high_watermarks(settings, settings.topic_ratings))
        for p, row in ratings.items():  # a later probe may have moved the end since the sample: never behind it
            assert row["end"] <= ends[p] and row["lag"] == row["end"] - max(row["committed"], 0)

        fresh = tc.get("/freshness").json()
        assert fresh["lost"] == 0 and fresh["error"] is None
        assert 0 < fresh["percentiles_ms"]["p50_ms"] < 10_000
        assert all(r["user_id"] >= settings.probe_user_base for r in fresh["recent"])
        assert "metrics" in fresh["workers"] and fresh["workers"]["metrics"]["n"] >= 20

        # The probe users have state but are never offered as people to pick.
        assert live.redis.exists(keys.user(settings.probe_user_base))
        users = tc.get("/users", params={"q": ""}).json()["users"]
        assert set(users) >= {1, 2, 3, 4, 5} and max(users) < settings.probe_user_base

        metrics = tc.get("/metrics")
        assert metrics.status_code == 200
        fam = _families(metrics.text)
        missing = [s for s in GATEWAY_SERIES if s not in fam]
        assert not missing, f"gateway /metrics lacks {missing}"
        route = "/recommendations/{user_id}"
        assert _value(fam["gateway_request_seconds"], "gateway_request_seconds_count", route=route) >= 4
        assert _value(fam["gateway_cache"], "gateway_cache_total", result="hit") >= 1
        assert _value(fam["gateway_recommendations"], "gateway_recommendations_total", degraded="false") >= 3
        partition0 = {"group": settings.app_id, "topic": settings.topic_ratings, "partition": "0"}
        assert any(s.labels == partition0 for s in fam["reelstream_lag_messages"])
        verdicts = {s.labels["verdict"]: s.value for s in fam["reelstream_lag_group_verdict"]}
        assert set(verdicts) == {"OK", "WARN", "STALL", "STOP", "REWIND", "RESET"} and sum(verdicts.values()) == 1
        assert _value(fam["reelstream_freshness_seconds"], "reelstream_freshness_seconds_count") >= 3

        reports = tc.get("/reports").json()["reports"]
        assert {"quality", "evaluation"} <= set(reports)
        assert tc.get("/reports/evaluation").json() == EVALUATION
        assert isinstance(tc.get("/reports/quality").json(), dict)
        assert tc.get("/reports/missing").status_code == 404
        assert tc.get("/reports/..%2Fstore").status_code in {404, 422}

        page = tc.get("/")
        assert page.status_code == 200 and "/static/vendor/chart.umd.min.js" in page.text
        vendored = tc.get("/static/vendor/chart.umd.min.js")
        assert vendored.status_code == 200 and "Chart.js v4" in vendored.text[:200]
        assert tc.get("/static/app.js").status_code == 200

    worker_metrics = httpx.get(f"http://127.0.0.1:{worker_port}/metrics", timeout=5.0)
    assert worker_metrics.status_code == 200
    wfam = _families(worker_metrics.text)
    names = {n if n in wfam else n.removesuffix("_total") for n in WORKER_SERIES}
    assert names <= set(wfam), f"worker /metrics lacks {names - set(wfam)}"
    topic = settings.topic_ratings
    applied = _value(wfam["reelstream_worker_events_applied"], "reelstream_worker_events_applied_total", topic=topic)
    assert 21 <= applied <= stats(live.redis)["events_applied"]  # probes included (a late one may land after)
    dead = wfam["reelstream_worker_dead_letters"]
    assert _value(dead, "reelstream_worker_dead_letters_total", topic=topic, reason="unknown_movie") == 1
    assert _value(wfam["reelstream_worker_batch_size"], "reelstream_worker_batch_size_sum", topic=topic) >= 21
    assert _value(wfam["reelstream_worker_apply_seconds"], "reelstream_worker_apply_seconds_count", topic=topic) >= 1
