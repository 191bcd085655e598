"""Gateway HTTP behaviour against a real Redis and a real broker (the session's live_infra)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import redis
from fastapi.testclient import TestClient

from gateway.api.models import RecommendationList
from gateway.app import create_app
from gateway.catalog import Catalog
from gateway.rules import RulesStore
from gateway.service import Gateway
from gateway.state import RedisState
from models.runtime import ModelRuntime
from reelstream.settings import Settings
from reelstream.shell import local_services
from schemas import redis_keys as keys
from tests.stream_support import wait_for
from tests.user_state import apply_rating, write_user

HEAT, TOY_STORY, JUMANJI, GOLDENEYE = 6, 1, 2, 10


def make_gateway(
    settings: Settings, runtime: ModelRuntime, items: pl.DataFrame, url: str | None = None, history_users: int = 0
) -> Gateway:
    state = RedisState(url or settings.redis_url, timeout=settings.gateway_redis_timeout)
    catalog = Catalog.build(runtime, items, history_users=history_users)
    return Gateway(settings, catalog, RulesStore(settings.rules_path), state)


@pytest.fixture
def client(live_settings: Settings, runtime: ModelRuntime, items: pl.DataFrame) -> Iterator[TestClient]:
    app = create_app(live_settings, gateway=make_gateway(live_settings, runtime, items))
    with TestClient(app) as tc:
        yield tc


def ids(body: dict) -> list[int]:
    return [it["movie_id"] for it in body["items"]]


def test_personalised_list_has_explanations_and_versions(client: TestClient, rclient, runtime) -> None:
    version = write_user(rclient, runtime, 7, [(HEAT, 5.0), (TOY_STORY, 4.0), (GOLDENEYE, 4.5)])
    response = client.get("/recommendations/7", params={"k": 20})
    RecommendationList.model_validate_json(response.content)  # built without validation: the schema still holds
    body = response.json()
    assert body["source"] == "personalised" and body["degraded"] is False
    assert body["state_version"] == version == 3
    assert body["model_version"] == runtime.version and body["rules_version"].startswith("v1-")
    assert body["variant"] in {"control", "diverse"} and body["segment"] == "new"
    assert len(body["items"]) == 20 and not {HEAT, TOY_STORY, GOLDENEYE} & set(ids(body))
    # oracle (gateway/engine.py explain): each pick's reason names the liked movie (rated >= 4) whose decoder
    # row is the most cosine-similar to the pick's, with that rating
    liked = {HEAT: ("Heat (1995)", 5.0), TOY_STORY: ("Toy Story (1995)", 4.0), GOLDENEYE: ("GoldenEye (1995)", 4.5)}
    dec = runtime.item_decoder / np.linalg.norm(runtime.item_decoder, axis=1, keepdims=True)
    for it in body["items"]:
        row = dec[runtime.item_index(it["movie_id"])]
        best = max(liked, key=lambda m: float(row @ dec[runtime.item_index(m)]))
        title, rating = liked[best]
        assert it["reasons"][0] == f"because you rated {title} {rating:g}/5", it
    assert all(it["title"] and isinstance(it["genres"], list) for it in body["items"])


def test_cache_hit_then_state_version_bump_invalidates(client: TestClient, rclient, runtime) -> None:
    write_user(rclient, runtime, 8, [(HEAT, 5.0), (JUMANJI, 4.0)])
    first = client.get("/recommendations/8").json()
    again = client.get("/recommendations/8").json()
    assert again["cached"] is True and ids(again) == ids(first)
    top = ids(first)[0]
    apply_rating(rclient, runtime, 8, top, 5.0, 99)  # what the worker does for a new rating
    after = client.get("/recommendations/8").json()
    assert after["cached"] is False and after["state_version"] == first["state_version"] + 1
    assert top not in ids(after)
    stats = client.get("/stats").json()
    assert stats["cache"]["hits"] >= 1 and stats["events_applied"] == 3


def test_posted_rating_reaches_the_topic_and_changes_the_list(
    client: TestClient, rclient, runtime, live_settings: Settings
) -> None:
    from aiokafka import AIOKafkaConsumer

    from schemas.wire import codec_for
    from streams.admin import ensure_topics_sync

    ensure_topics_sync(live_settings)
    write_user(rclient, runtime, 9, [(HEAT, 5.0), (TOY_STORY, 4.5)])
    before = client.get("/recommendations/9").json()
    target = ids(before)[0]
    rating = {"user_id": 9, "movie_id": target, "rating": 4.5, "event_ts": 1_700_000_000_000}
    resp = client.post("/ratings", json=rating)
    assert resp.status_code == 202, resp.text
    accepted = resp.json()

    async def read_back() -> dict:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=live_settings.kafka_bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
        )
        from aiokafka import TopicPartition

        tp = TopicPartition(live_settings.topic_ratings, accepted["partition"])
        await consumer.start()
        try:
            consumer.assign([tp])
            consumer.seek(tp, accepted["offset"])
            msg = await asyncio.wait_for(consumer.getone(), 20)
            return codec_for("RatingEvent").decode(msg.value) | {"key": msg.key}
        finally:
            await consumer.stop()

    event = asyncio.run(read_back())
    assert event["event_id"] == accepted["event_id"] and event["source"] == "api"
    assert (event["user_id"], event["movie_id"], event["rating"], event["key"]) == (9, target, 4.5, b"9")
    # Apply it exactly as the stream worker would, then the list must reflect it.
    apply_rating(rclient, runtime, 9, event["movie_id"], event["rating"], event["event_ts"])
    after = client.get("/recommendations/9").json()
    assert after["state_version"] == before["state_version"] + 1
    assert target not in ids(after)


def test_cold_start_uses_trending_shaped_by_genres(client: TestClient, rclient, runtime) -> None:
    body = client.get("/recommendations/424242", params={"k": 5}).json()
    assert body["source"] == "popularity" and body["state_version"] == 0 and body["segment"] == "new"
    rclient.zadd(keys.ITEMS_TRENDING, {str(m): float(100 - i) for i, m in enumerate([1, 2, 3, 4, 5, 6, 7, 10, 11])})
    body = client.get("/recommendations/424243", params={"k": 5}).json()
    assert body["source"] == "trending" and set(ids(body)) <= {1, 2, 3, 4, 5, 6, 7, 10, 11}
    plain = client.get("/recommendations/424244", params={"k": 3}).json()
    shaped = client.get("/recommendations/424244", params={"k": 3, "genres": "Action"}).json()
    n_action = [sum("Action" in it["genres"] for it in b["items"]) for b in (plain, shaped)]
    assert n_action[1] > n_action[0] and HEAT in ids(shaped)  # Heat trends 6th, Action lifts it into the top 3


def test_profile_movie_similar_health_metrics(client: TestClient, rclient, runtime) -> None:
    write_user(rclient, runtime, 11, [(HEAT, 5.0), (GOLDENEYE, 4.0), (JUMANJI, 1.0)])
    rclient.set(keys.worker("w1"), 0)
    prof = client.get("/users/11/profile").json()
    assert prof["n_ratings"] == 3 and prof["segment"] == "new" and prof["state_version"] == 3
    assert abs(prof["mean_rating"] - 10 / 3) < 1e-6 and prof["latent_uncertainty"] > 0
    assert [r["movie_id"] for r in prof["recent"]] == [JUMANJI, GOLDENEYE, HEAT]
    assert dict(prof["top_genres"])["Action"] == 2
    assert client.get("/users/555/profile").status_code == 404
    movie = client.get(f"/movies/{HEAT}").json()
    assert movie["title"] == "Heat (1995)" and movie["n_ratings"] > 0
    assert client.get("/movies/99999999").status_code == 404
    sim = client.get(f"/movies/{HEAT}/similar", params={"k": 5}).json()
    assert len(sim["items"]) == 5 and HEAT not in [s["movie_id"] for s in sim["items"]]
    assert sim["items"][0]["similarity"] >= sim["items"][-1]["similarity"]
    health = client.get("/health").json()
    assert health["redis"]["ok"] and health["broker"]["ok"] and health["model"]["ok"]
    assert health["worker"]["ok"] is False  # heartbeat from 1970 is stale (Rule 6)
    scored = client.get("/stats").json()["scoring"]["scored"]
    variant = client.get("/recommendations/11").json()["variant"]
    scoring = client.get("/stats").json()["scoring"]
    assert scoring["scored"] == scored + 1 and scoring["mean_batch"] >= 1.0  # one personalised mat-vec
    metrics = client.get("/metrics").text
    assert "gateway_requests_total" in metrics and f'variant="{variant}"' in metrics


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/recommendations/0", "user_id"),
        ("/recommendations/abc", "user_id"),
        ("/recommendations/1?k=0", "k"),
        ("/recommendations/1?k=101", "k"),
        ("/recommendations/1?k=ten", "k"),
        ("/recommendations/1?genres=NotAGenre", "genres"),
        ("/recommendations/1?exclude_genres=Nope", "exclude_genres"),
        ("/movies/-3", "movie_id"),
        ("/movies/1/similar?k=1000", "k"),
    ],
)
def test_bad_parameters_are_422_with_the_field(client: TestClient, path: str, field: str) -> None:
    resp = client.get(path)
    assert resp.status_code == 422
    assert field in [e["loc"][-1] for e in resp.json()["detail"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": 1, "movie_id": 1, "rating": 5.5}, "rating"),
        ({"user_id": 1, "movie_id": 1, "rating": 3.3}, "rating"),
        ({"user_id": 0, "movie_id": 1, "rating": 3.0}, "user_id"),
        ({"user_id": 1, "movie_id": 987654321, "rating": 3.0}, "movie_id"),
        ({"user_id": 1, "rating": 3.0}, "movie_id"),
    ],
)
def test_bad_ratings_are_422(client: TestClient, body: dict, field: str) -> None:
    resp = client.post("/ratings", json=body)
    assert resp.status_code == 422
    assert field in [e["loc"][-1] for e in resp.json()["detail"]]


def test_rules_need_the_bearer_token(client: TestClient, live_settings: Settings) -> None:
    assert client.get("/rules").status_code == 401
    assert client.get("/rules", headers={"Authorization": "Bearer wrong"}).status_code == 401
    auth = {"Authorization": f"Bearer {live_settings.admin_secret()}"}
    current = client.get("/rules", headers=auth).json()
    doc = current["document"] | {"base": current["document"]["base"] | {"diversity": {"mmr_lambda": 0.5}}}
    put = client.put("/rules", json=doc, headers=auth)
    assert put.status_code == 200 and put.json()["version"] == current["version"] + 1
    bad = dict(doc, base={"diversity": {"mmr_lambda": 3}})
    resp = client.put("/rules", json=bad, headers=auth)
    assert resp.status_code == 422 and "mmr_lambda" in resp.json()["detail"][0]["loc"]
    assert client.put("/rules", json=doc).status_code == 401


def test_broker_down_gives_503_with_retry_after(live_settings, runtime, items, tmp_path: Path) -> None:
    dead = live_settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{local_services.free_port()}"})
    app = create_app(dead, gateway=make_gateway(dead, runtime, items))
    with TestClient(app) as tc:
        resp = tc.post("/ratings", json={"user_id": 1, "movie_id": 1, "rating": 4.0})
        assert resp.status_code == 503 and resp.headers["Retry-After"] == str(dead.gateway_retry_after_s)
        assert tc.get("/health").json()["broker"]["ok"] is False


def test_redis_down_degrades_to_popularity(live_settings, runtime, items, tmp_path: Path) -> None:
    port = local_services.free_port()
    run_dir = tmp_path / "own-redis"
    local_services.start_redis(run_dir, "127.0.0.1", port)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        own = redis.Redis.from_url(url)
        write_user(own, runtime, 5, [(HEAT, 5.0), (TOY_STORY, 4.0)])
        own.close()
        app = create_app(live_settings, gateway=make_gateway(live_settings, runtime, items, url))
        with TestClient(app) as tc:
            assert tc.get("/recommendations/5").json()["source"] == "personalised"
            local_services.stop_process(run_dir, "redis")
            response = tc.get("/recommendations/5", params={"k": 10})
            RecommendationList.model_validate_json(response.content)
            body = response.json()
            assert body["degraded"] is True and body["source"] == "popularity" and len(body["items"]) == 10
            top = items.sort("n_ratings", descending=True)["movie_id"].to_list()[:60]
            assert set(ids(body)) <= set(top)
            assert tc.get("/users/5/profile").status_code == 503
            assert tc.get(f"/movies/{HEAT}").status_code == 200  # store metadata, no live stats
            health = tc.get("/health").json()
            assert health["status"] == "degraded" and health["redis"]["ok"] is False
            assert tc.get("/stats").status_code == 200
    finally:
        local_services.stop_process(run_dir, "redis")


def test_new_movie_from_movie_event_is_scored(client: TestClient, rclient, runtime) -> None:
    gw: Gateway = client.app.state.gateway
    rclient.hset(keys.movie(999_001), mapping={"title": "Brand New (2024)", "genres": "Action|Drama", "year": 2024})
    # this call or the app's background refresh (which may be half-way: movie marked announced, catalogue
    # not yet swapped in) adds it; a refresh is a poll, so wait for the catalogue to hold it
    wait_for(lambda: gw.refresh_movies() >= 0 and gw.catalog.index(999_001) is not None, 10,
             "the announced movie in the catalogue")  # fmt: skip
    assert 999_001 in gw.announced
    assert client.get("/movies/999001").json()["in_model"] is False
    write_user(rclient, runtime, 12, [(HEAT, 5.0)])
    assert client.get("/recommendations/12", params={"k": 100}).status_code == 200
    assert np.isfinite(gw.catalog.decoder[gw.catalog.index(999_001)]).all()


def test_health_shows_the_events_a_log_reset_lost(client: TestClient, rclient) -> None:
    """Loss the worker counted at a log reset (memory-only broker restarted) is shown, not silent."""
    assert client.get("/health").json()["events_lost"] == 0  # a fresh Redis: nothing lost, nothing reset
    rclient.hset(keys.STATS, mapping={"events_lost": 7, "log_resets": 2})
    health = client.get("/health").json()
    assert (health["events_lost"], health["log_resets"]) == (7, 2)
    assert health["unarchived"] is None  # no archiver status yet
    # the archiver saw partition 0 reach 15 with 9 archived, partition 3 reach 4 with all archived: 5 left
    rclient.hset(
        keys.ARCHIVE,
        mapping={
            "reelstream.ratings:0:offset": 9,
            "reelstream.ratings:0:highwater": 15,
            "reelstream.ratings:3:offset": 3,
            "reelstream.ratings:3:highwater": 4,
        },
    )
    assert client.get("/health").json()["unarchived"] == 5


def test_health_shows_a_challenger_request_until_retrain_answers_it(client: TestClient, rclient) -> None:
    """The online model's drift alarms (rs:challenger) show in /health as pending, then answered."""
    before = client.get("/health").json()
    assert before["challenger"]["pending"] == 0  # nothing asked yet
    rclient.hset(keys.CHALLENGER, mapping={"requested": 3, "last_alarm_ms": 1_500_000_000_000, "reason": "drift"})
    health = client.get("/health").json()
    assert health["status"] == before["status"]  # informational: it changes no status
    got = health["challenger"]
    assert (got["requested"], got["pending"], got["last_alarm_ms"], got["reason"]) == (3, 3, 1_500_000_000_000, "drift")
    rclient.hset(keys.CHALLENGER, mapping={"answered": 3, "answer": "kept m0001"})
    got = client.get("/health").json()["challenger"]
    assert (got["pending"], got["answer"]) == (0, "kept m0001")
