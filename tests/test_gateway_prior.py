"""The gateway serves the evaluated model: decoder + bias + the item prior from the worker's ``rs:items:prior``."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from gateway.catalog import Catalog
from gateway.prior import ItemPrior
from gateway.rules import RulesStore
from gateway.service import Gateway
from gateway.state import RedisState
from models.runtime import ModelRuntime, trending_increment
from reelstream.settings import Settings
from schemas import redis_keys as keys
from schemas.wire import codec_for
from streams.events import rating_event, user_key
from streams.online import OnlineRatingModel
from streams.processor import Message, RatingProcessor
from streams.store import RedisFeatureTables
from tests.gateway_support import recommend
from tests.user_state import synthetic_items, write_user

DAY = 86400.0
IDS = np.arange(1, 501) * 3
NOW_MS = 1_600_000_000_000
#: Movies the stream makes popular: B (3 events now), C (2), D (1); A had 20 events 30 days ago.
A, B, C, D = 30, 60, 90, 120


def _runtime(beta: float) -> ModelRuntime:
    rt = ModelRuntime.random(IDS, hidden=16, latent=8, seed=5)
    rt.metadata["item_prior"] = {"beta": beta, "half_life_s": 1 * DAY}
    return rt


def _stream(settings: Settings, client: redis.Redis, runtime: ModelRuntime) -> None:
    """The worker's own path: trending kept at 1000 days (A leads it), the prior at the model's 1 day."""
    codec = codec_for("RatingEvent")
    events = [(A, NOW_MS - int(30 * DAY * 1000))] * 20 + [(B, NOW_MS)] * 3 + [(C, NOW_MS)] * 2 + [(D, NOW_MS)]
    msgs = [Message("ratings", 0, i, codec.encode(rating_event(900 + i, m, 4.0, ts, "replay")), key=user_key(900 + i))
            for i, (m, ts) in enumerate(events)]  # fmt: skip
    processor = RatingProcessor(
        runtime, RedisFeatureTables(client), topic="ratings", min_ts_ms=0, max_future_ms=10**15,
        half_life_s=1000 * DAY, online=OnlineRatingModel(seed=0),
    )  # fmt: skip
    processor.run(msgs)
    top = [int(m) for m in client.zrevrange(keys.ITEMS_TRENDING, 0, 3)]
    assert top == [A, B, C, D]  # what "trending" means for the cold start is unchanged


def _gateway(settings: Settings, runtime: ModelRuntime, cache: int = 100) -> Gateway:
    s = settings.model_copy(update={"gateway_cache_size": cache})
    catalog = Catalog.build(runtime, synthetic_items(IDS.tolist(), seed=2))
    return Gateway(s, catalog, RulesStore(s.rules_path), RedisState(s.redis_url), prior=ItemPrior(runtime))


def test_large_beta_ranks_a_new_users_list_by_the_prior_from_redis(live_settings: Settings, rclient) -> None:
    runtime = _runtime(1000.0)
    _stream(live_settings, rclient, runtime)
    write_user(rclient, runtime, 7, [(int(IDS[-1]), 4.0)], ts0=NOW_MS)  # one rating: personalised, new-ish
    g = _gateway(live_settings, runtime)
    before = recommend(g, 7, 10)
    assert before.source == "personalised" and g.prior.source == "none"  # no primed counts, not yet read
    assert g.refresh_prior() is True and g.prior.source == "redis" and g.prior.now_s == NOW_MS / 1000
    after = recommend(g, 7, 10)
    assert not after.cached  # the prior's generation is in the cache key
    assert [it.movie_id for it in after.items[:3]] == [B, C, D]  # the prior's order, not trending's (A first)
    assert A not in [it.movie_id for it in before.items[:3]]
    assert g.refresh_prior() is False and recommend(g, 7, 10).cached  # unchanged zset: same generation, a hit


def test_prior_vector_is_the_models_prior_logits(live_settings: Settings, rclient) -> None:
    runtime = _runtime(0.8)
    _stream(live_settings, rclient, runtime)
    g = _gateway(live_settings, runtime)
    g.refresh_prior()
    _, vec = g.prior.current(g.catalog.n)
    assert vec is not None
    zset = np.full(runtime.n_items, -np.inf)
    for member, score in rclient.zrange(keys.ITEMS_PRIOR, 0, -1, withscores=True):
        zset[runtime.item_index(int(member))] = score
    np.testing.assert_array_equal(vec, runtime.prior_logits(zset, NOW_MS / 1000, half_life_s=DAY))
    assert vec[runtime.item_index(B)] == pytest.approx(0.8 * np.log(4.0), rel=1e-5)


def test_empty_zset_serves_the_models_primed_history_counts(live_settings: Settings, rclient) -> None:
    runtime = _runtime(1000.0)
    primed = np.full(runtime.n_items, -np.inf)
    primed[runtime.item_index(D)] = float(trending_increment(100.0, DAY))  # one HISTORY event, at the clock
    runtime.primed_prior = (primed, 100.0)
    g = _gateway(live_settings, runtime)
    write_user(rclient, runtime, 8, [(int(IDS[-1]), 4.0)], ts0=NOW_MS)
    assert g.refresh_prior() is False and g.prior.source == "primed"  # nothing in Redis yet
    assert recommend(g, 8, 5).items[0].movie_id == D
    _stream(live_settings, rclient, runtime)  # the worker applies events: Redis takes over
    assert g.refresh_prior() is True and g.prior.source == "redis"
    assert [it.movie_id for it in recommend(g, 8, 5).items[:3]] == [B, C, D]


def test_a_model_without_prior_serves_decoder_and_bias_only(live_settings: Settings, rclient) -> None:
    runtime = _runtime(0.0)
    _stream(live_settings, rclient, runtime)
    assert not rclient.exists(keys.ITEMS_PRIOR, keys.ITEMS_PRIOR_CLOCK)  # the worker keeps no prior zset
    g = _gateway(live_settings, runtime)
    assert not g.prior.active and g.refresh_prior() is False and g.prior.current(g.catalog.n) == (0, None)
