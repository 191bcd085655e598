"""Exploration arms in the gateway: rules validation, PUT /rules, lists that explore but keep the hard rules."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.catalog import Catalog
from gateway.errors import RulesError
from gateway.rules import LoadedRules, RulesStore, parse_rules
from gateway.service import Gateway
from gateway.state import RedisState
from models.exploration import draw_rng, thompson_latent
from models.runtime import ModelRuntime
from reelstream.settings import Settings
from schemas import redis_keys as keys
from schemas.user_record import decode_user
from tests.user_state import apply_rating, write_user

HEAT, TOY_STORY, JUMANJI, GOLDENEYE = 6, 1, 2, 10
LIKED = [(HEAT, 5.0), (TOY_STORY, 4.0), (GOLDENEYE, 4.5), (JUMANJI, 1.0)]


@pytest.fixture
def gw(live_settings: Settings, runtime: ModelRuntime, items: pl.DataFrame) -> Iterator[Gateway]:
    state = RedisState(live_settings.redis_url, timeout=live_settings.gateway_redis_timeout)
    yield Gateway(live_settings, Catalog.build(runtime, items), RulesStore(live_settings.rules_path), state)
    state.close()


@pytest.fixture
def client(live_settings: Settings, gw: Gateway) -> Iterator[TestClient]:
    with TestClient(create_app(live_settings, gateway=gw)) as tc:
        yield tc


def auth(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.admin_secret()}"}


def document(explore: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Two arms: control (exploit) and explore (the given exploration), over ``base``."""
    arms = [{"name": "control", "weight": 1}, {"name": "explore", "weight": 1, "overrides": {"exploration": explore}}]
    return {"name": "t", "version": 1, "base": base or {}, "variants": {"salt": "x", "arms": arms}}


def yaml_of(doc: dict[str, Any]) -> str:
    return json.dumps(doc)  # JSON is YAML


def put_rules(client: TestClient, settings: Settings, doc: dict[str, Any]) -> dict[str, Any]:
    resp = client.put("/rules", json=doc, headers=auth(settings))
    assert resp.status_code == 200, resp.text
    return resp.json()


def ids(body: dict) -> list[int]:
    return [it["movie_id"] for it in body["items"]]


def rec(client: TestClient, uid: int, variant: str, **params: Any) -> dict[str, Any]:
    resp = client.get(f"/recommendations/{uid}", params={"k": 20, "variant": variant, **params})
    assert resp.status_code == 200, resp.text
    return resp.json()


# --- validation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exploration", "field", "message"),
    [
        ({"kind": "epsilon"}, "kind", "'none', 'thompson' or 'ucb'"),
        ({"kind": "ucb", "scale": -0.1}, "scale", "greater than or equal to 0"),
        ({"kind": "ucb", "scale": 11}, "scale", "less than or equal to 10"),
        ({"kind": "thompson", "scale": float("nan")}, "scale", "finite number"),
        ({"kind": "thompson", "seed": -1}, "seed", "greater than or equal to 0"),
        ({"kind": "thompson", "seed": 1.5}, "seed", "integer"),
        ({"kind": "thompson", "temperature": 2}, "temperature", "Extra inputs"),
    ],
)
def test_bad_exploration_values_are_refused_with_the_field(exploration: dict, field: str, message: str) -> None:
    with pytest.raises(RulesError) as err:
        parse_rules(yaml_of({"base": {"exploration": exploration}}))
    locs = [e["loc"] for e in err.value.errors]
    assert ("base", "exploration", field) in locs, locs
    assert message in str(err.value)
    # in a variant's overrides: refused at load time, naming the variant and the field
    with pytest.raises(RulesError, match=rf"(?s)variant 'explore'.*exploration\.{field}"):
        parse_rules(yaml_of(document(exploration)))


def test_default_is_exploit_and_overrides_merge() -> None:
    loaded = LoadedRules.from_text(yaml_of(document({"kind": "ucb", "scale": 0.5})))
    assert loaded.rules_for("heavy", "control").exploration.kind == "none"
    explore = loaded.rules_for("new", "explore").exploration
    assert (explore.kind, explore.scale, explore.seed) == ("ucb", 0.5, 0)


def test_put_rules_refuses_a_bad_exploration_with_a_422(client: TestClient, live_settings: Settings) -> None:
    bad = document({"kind": "thompson"}, base={"exploration": {"kind": "boltzmann"}})
    resp = client.put("/rules", json=bad, headers=auth(live_settings))
    assert resp.status_code == 422
    assert ["body", "base", "exploration", "kind"] in [e["loc"] for e in resp.json()["detail"]]
    resp = client.put("/rules", json=document({"kind": "ucb", "scale": 99}), headers=auth(live_settings))
    assert resp.status_code == 422 and "exploration.scale" in resp.text and "variant 'explore'" in resp.text
    assert client.put("/rules", json=document({"kind": "ucb"})).status_code == 401


# --- serving ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["thompson", "ucb"])
def test_an_exploring_variant_differs_from_exploit_but_keeps_the_hard_rules(
    client: TestClient, rclient, runtime, live_settings: Settings, kind: str
) -> None:
    blocked = [1221, 2571, 296, 318, 356]
    base = {"avoid": {"exclude_genres": ["Horror"], "blocklist": blocked, "dislike_similarity": 0.5}}
    put_rules(client, live_settings, document({"kind": kind, "scale": 2.0, "seed": 4}, base=base))
    write_user(rclient, runtime, 21, LIKED)
    control, explore = rec(client, 21, "control", k=50), rec(client, 21, "explore", k=50)
    assert (control["exploration"], explore["exploration"]) == ("none", kind)
    assert explore["source"] == control["source"] == "personalised"
    assert ids(explore) != ids(control) and len(set(ids(explore)) - set(ids(control))) >= 5
    assert len(ids(explore)) == 50
    for body in (control, explore):
        served = set(ids(body))
        assert not served & {m for m, _ in LIKED}  # avoid.rated
        assert not served & set(blocked)  # avoid.blocklist
        assert not any("Horror" in it["genres"] for it in body["items"])  # avoid.exclude_genres


def test_dislike_similarity_is_kept_when_exploring(gw: Gateway, client: TestClient, rclient, runtime,
                                                   live_settings: Settings) -> None:  # fmt: skip
    put_rules(client, live_settings, document({"kind": "thompson", "scale": 3.0}, base={
        "avoid": {"dislike_similarity": 0.3}, "diversity": {"genre_cap": 1000}}))  # fmt: skip
    write_user(rclient, runtime, 22, LIKED)
    cat = gw.catalog
    disliked = cat.unit[cat.index(JUMANJI)]
    for uid_variant in ("control", "explore"):
        body = rec(client, 22, uid_variant, k=100)
        sims = cat.unit[[cat.index(m) for m in ids(body)]] @ disliked
        assert sims.max() < 0.3, uid_variant


def test_exploring_lists_are_deterministic_for_a_user_state_and_rules(
    gw: Gateway, client: TestClient, rclient, runtime, live_settings: Settings
) -> None:
    put_rules(client, live_settings, document({"kind": "thompson", "scale": 1.5, "seed": 1}))
    version = write_user(rclient, runtime, 23, LIKED)
    first = rec(client, 23, "explore")
    gw.cache.clear()  # recomputed, not served from the cache
    again = rec(client, 23, "explore")
    assert again["cached"] is False and ids(again) == ids(first) and again["state_version"] == version
    # the draw is the documented one: z = mu + scale * sigma * eps, eps from (seed, user, state version)
    stored = decode_user(rclient.hgetall(keys.user(23)))
    z = thompson_latent(stored.mu, stored.logvar, draw_rng(1, 23, version), 1.5)
    cat = gw.catalog
    logits = cat.decoder @ z + cat.bias  # this gateway has no item prior
    logits[[cat.index(m) for m, _ in LIKED]] = -np.inf  # avoid.rated
    logits[cat.unit @ cat.unit[cat.index(JUMANJI)] >= 0.92] = -np.inf  # the default dislike_similarity
    assert cat.index(ids(first)[0]) == int(np.argmax(logits))  # MMR's first pick: the most relevant
    # another seed: another draw, another list
    put_rules(client, live_settings, document({"kind": "thompson", "scale": 1.5, "seed": 2}))
    assert ids(rec(client, 23, "explore")) != ids(first)
    put_rules(client, live_settings, document({"kind": "thompson", "scale": 1.5, "seed": 1}))
    assert ids(rec(client, 23, "explore")) == ids(first)
    # a new state version is a new draw
    apply_rating(rclient, runtime, 23, ids(first)[-1], 3.0, 99)
    after = rec(client, 23, "explore")
    assert after["state_version"] == version + 1 and after["exploration"] == "thompson"


def test_cold_users_and_states_without_logvar_are_served_by_the_mean(
    gw: Gateway, client: TestClient, rclient, runtime, live_settings: Settings
) -> None:
    put_rules(client, live_settings, document({"kind": "thompson", "scale": 2.0}))
    cold = rec(client, 999_999, "explore")
    assert cold["source"] != "personalised" and cold["exploration"] == "none"
    write_user(rclient, runtime, 24, LIKED)
    rclient.hdel(keys.user(24), "logvar")
    body = rec(client, 24, "explore")
    assert body["source"] == "personalised" and body["exploration"] == "none"
    assert ids(body) == ids(rec(client, 24, "control"))


def test_arms_and_stats_show_the_exploring_arm(client: TestClient, rclient, runtime, live_settings: Settings) -> None:
    put_rules(client, live_settings, document({"kind": "ucb", "scale": 1.0}))
    loaded = LoadedRules.from_text(yaml_of(document({"kind": "ucb", "scale": 1.0})))
    users = {}
    for uid in itertools.count(30):
        users.setdefault(loaded.variant_for(str(uid)), uid)
        if len(users) == 2:
            break
    for uid in users.values():
        write_user(rclient, runtime, uid, LIKED)
        client.get(f"/recommendations/{uid}")
    client.get(f"/recommendations/{users['explore']}")  # a cached explored list counts too
    arms = {a["name"]: a for a in client.get("/rules/arms").json()["arms"]}
    assert arms["explore"]["exploration"] == {"new": "ucb", "casual": "ucb", "heavy": "ucb"}
    assert arms["control"]["exploration"]["heavy"] == "none" and arms["control"]["weight"] == 1.0
    stats = client.get("/stats").json()
    assert stats["recommendations_by_variant"] == {"control": 1, "explore": 2}
    assert stats["explored_by_variant"] == {"explore": 2}
