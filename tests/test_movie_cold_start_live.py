"""Item cold start end to end: ``reelstream movie add`` and ``POST /movies`` announce two new movies through the
real broker, a real worker stores them, a real gateway scores them from their side features.

The model is built by hand so that what each user should get follows from its definition, not from the code
under test: one latent dimension per MovieLens genre; a catalogue movie's encoder and decoder rows are the
indicator vector of its genres (bias 0, identity encoder head). The two tags the model knows have rows too:
``tag=paper craft`` = half of Animation + Children, ``tag=slasher`` = half of Horror + Thriller, as a trained
model learns from what tagged movies were rated with. By the encoder's formula (models/state.py) a user who
liked n movies whose genres are exactly {Animation, Children} has ``mu = tanh(sqrt(n)) (e_Animation +
e_Children)``, so a new movie with those two genres and the paper-craft tag scores ``3 tanh(sqrt(n))``, above
every catalogue movie (at most ``2 tanh(sqrt(n))``), and a Horror|Thriller movie scores 0 for that user.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys

import httpx
import numpy as np
import polars as pl
from aiokafka import AIOKafkaConsumer, TopicPartition

from models.runtime import ModelRuntime
from models.state import FoldInWeights
from reelstream.settings import Settings
from schemas import redis_keys as keys
from schemas.movies import GENRES
from schemas.side_features import GENRE, TAG, feature_name, side_metadata
from schemas.wire import codec_for
from streams.producer import EventProducer
from tests.live_system import GatewayProcess, Live
from tests.stream_support import wait_for

APPLY_TIMEOUT_S = 60
TAGS = ("paper craft", "slasher")
#: New movie ids, beyond the bundled dataset's (at most 193,609).
PAPER, SLASHER = 990_001, 990_002
#: Fresh users (the bundled dataset's are 1..610; this worker folds no HISTORY): an Animation/Children fan,
#: a Horror/Thriller fan, and a second Animation/Children fan whose segment's hard rules exclude Animation.
KIDS, HORROR, KIDS_EXCLUDED = 880_001, 880_002, 880_003


def genre_model(settings: Settings) -> pl.DataFrame:
    """Save the hand-built genre model over the live fixture's CURRENT model; returns the store's movies."""
    items = pl.read_parquet(next(settings.store_dir.glob("v*/items.parquet")))
    col = {g: j for j, g in enumerate(GENRES)}
    rows = np.zeros((items.height, len(GENRES)), dtype=np.float32)
    for i, genres in enumerate(items["genres"].to_list()):
        for g in genres:
            rows[i, col[g]] = 1.0
    side = np.vstack([np.eye(len(GENRES), dtype=np.float32), np.zeros((len(TAGS), len(GENRES)), dtype=np.float32)])
    side[len(GENRES), [col["Animation"], col["Children"]]] = 0.5
    side[len(GENRES) + 1, [col["Horror"], col["Thriller"]]] = 0.5
    g0 = np.zeros(len(GENRES), dtype=np.float32)
    folder = settings.models_dir / "m0001"
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata.pop("item_prior", None)  # decoder + bias only: the expectation above is the whole score
    names = [feature_name(GENRE, g) for g in GENRES] + [feature_name(TAG, t) for t in TAGS]
    metadata.update(side_metadata(names, None))
    runtime = ModelRuntime(
        weights=FoldInWeights(rows, g0, np.eye(len(GENRES), dtype=np.float32), g0, np.zeros_like(side[: len(GENRES)]),
                              g0),
        item_decoder=rows, item_bias=np.zeros(items.height, dtype=np.float32),
        movie_ids=items["movie_id"].to_numpy().astype(np.int64), side_in=side, side_dec=side,
        side_bias=np.zeros(len(names), dtype=np.float32), metadata=metadata,
    )  # fmt: skip
    runtime.save(folder)
    return items


def movies_with_genres(items: pl.DataFrame, genres: set[str], n: int) -> list[int]:
    exact = items.filter(pl.col("genres").map_elements(lambda g: set(g) == genres, return_dtype=pl.Boolean))
    assert exact.height >= n, f"the bundled data has {exact.height} movies with exactly {genres}"
    return exact["movie_id"].head(n).to_list()


async def rate_all(settings: Settings, ratings: list[tuple[int, int]]) -> None:
    async with EventProducer(settings) as producer:
        for user, movie in ratings:
            await producer.send(user, movie, 5.0, source="live", known_movie=lambda _: True)


async def read_back(settings: Settings, partition: int, offset: int) -> tuple[bytes, dict]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    tp = TopicPartition(settings.topic_movies, partition)
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, offset)
        msg = await asyncio.wait_for(consumer.getone(), 20)
        return msg.key, codec_for("MovieEvent").decode(msg.value)
    finally:
        await consumer.stop()


def ranked(url: str, user: int, k: int, **params: str) -> list[int]:
    body = httpx.get(f"{url}/recommendations/{user}", params={"k": k, **params}, timeout=10).json()
    assert body["source"] == "personalised", body
    return [it["movie_id"] for it in body["items"]]


def test_announced_movies_reach_matching_users_and_never_excluded_ones(live: Live) -> None:
    s = live.settings
    items = genre_model(s)
    kids = movies_with_genres(items, {"Animation", "Children"}, 12)
    horror = movies_with_genres(items, {"Horror", "Thriller"}, 6)
    live.worker("movies")
    gateway = GatewayProcess({**live.env, "REELSTREAM_PROBE_INTERVAL_S": "0",
                              "REELSTREAM_GATEWAY_MOVIE_REFRESH_S": "0.3"}, live.log_dir)  # fmt: skip
    try:
        gateway.wait_ready()
        auth = {"Authorization": f"Bearer {s.admin_secret()}"}
        # Hard rules: users with 10 or more ratings ("heavy") never get Animation.
        doc = httpx.get(f"{gateway.url}/rules", headers=auth, timeout=10).json()["document"]
        doc["segments"] |= {"heavy_min_ratings": 10, "heavy": {"avoid": {"exclude_genres": ["Animation"]}}}
        assert httpx.put(f"{gateway.url}/rules", json=doc, headers=auth, timeout=10).status_code == 200

        asyncio.run(rate_all(s, [(KIDS, m) for m in kids[:6]] + [(HORROR, m) for m in horror]
                             + [(KIDS_EXCLUDED, m) for m in kids]))  # fmt: skip

        cli = subprocess.run(
            [sys.executable, "-m", "reelstream.shell.cli", "movie", "add", "--id", str(PAPER), "--title",
             "Paper Boats (2026)", "--genre", "Animation,Children", "--year", "2026", "--tag", "Paper Craft"],
            env=live.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert cli.returncode == 0 and "warning" not in cli.stdout, (cli.stdout, cli.stderr)
        where = re.search(r"partition (\d+) offset (\d+)", cli.stdout)
        assert where is not None, cli.stdout
        key, event = asyncio.run(read_back(s, int(where[1]), int(where[2])))
        assert key == str(PAPER).encode()
        assert event == {"movie_id": PAPER, "title": "Paper Boats (2026)", "genres": ["Animation", "Children"],
                         "year": 2026, "tags": ["Paper Craft"]}  # fmt: skip

        body = {"movie_id": SLASHER, "title": "Night Shift (2025)", "genres": ["Horror", "Thriller"], "year": 2025,
                "tags": ["slasher"]}  # fmt: skip
        assert httpx.post(f"{gateway.url}/movies", json=body, timeout=10).status_code == 401
        resp = httpx.post(f"{gateway.url}/movies", json=body, headers=auth, timeout=10)
        assert resp.status_code == 202, resp.text
        sent = resp.json()
        assert sent["topic"] == s.topic_movies and sent["replaces"] is False and sent["tags_without_feature"] == []
        assert asyncio.run(read_back(s, sent["partition"], sent["offset"])) == (str(SLASHER).encode(), body)

        for mid in (PAPER, SLASHER):
            wait_for(lambda mid=mid: httpx.get(f"{gateway.url}/movies/{mid}", timeout=5).status_code == 200,
                     APPLY_TIMEOUT_S, f"the gateway to serve announced movie {mid}")  # fmt: skip
        detail = httpx.get(f"{gateway.url}/movies/{PAPER}", timeout=5).json()
        assert (detail["title"], detail["genres"], detail["in_model"]) == (
            "Paper Boats (2026)",
            ["Animation", "Children"],
            False,
        )
        for user, n in ((KIDS, 6), (HORROR, 6), (KIDS_EXCLUDED, 12)):
            wait_for(lambda user=user, n=n: live.redis.hget(keys.user(user), "n") == str(n).encode(),
                     APPLY_TIMEOUT_S, f"user {user}'s {n} ratings applied")  # fmt: skip

        # Each new movie is the first pick of the user whose taste it matches, and not in the other's top 5.
        kids_list, horror_list = ranked(gateway.url, KIDS, 5), ranked(gateway.url, HORROR, 5)
        assert kids_list[0] == PAPER and SLASHER not in kids_list, kids_list
        assert horror_list[0] == SLASHER and PAPER not in horror_list, horror_list
        # The same taste as KIDS, but a segment whose hard rules exclude Animation: never, however asked.
        for params in ({}, {"genres": "Animation"}, {"genres": "Children"}):
            excluded = ranked(gateway.url, KIDS_EXCLUDED, 100, **params)
            assert excluded and PAPER not in excluded, (params, excluded)
        served = httpx.get(f"{gateway.url}/recommendations/{KIDS_EXCLUDED}", params={"k": 100}, timeout=10).json()
        assert served["segment"] == "heavy" and not any("Animation" in it["genres"] for it in served["items"])

        # Announced again (new title, one more genre): the running gateway serves the new metadata, same ranking.
        again = {"movie_id": PAPER, "title": "Paper Boats: Director's Cut (2026)", "tags": ["paper craft"],
                 "genres": ["Animation", "Children", "Fantasy"], "year": 2026}  # fmt: skip
        resp = httpx.post(f"{gateway.url}/movies", json=again, headers=auth, timeout=10)
        assert resp.status_code == 202 and resp.json()["replaces"] is True, resp.text
        wait_for(lambda: httpx.get(f"{gateway.url}/movies/{PAPER}", timeout=5).json()["title"] == again["title"],
                 APPLY_TIMEOUT_S, "the gateway to serve the re-announced metadata")  # fmt: skip
        assert httpx.get(f"{gateway.url}/movies/{PAPER}", timeout=5).json()["genres"] == again["genres"]
        assert ranked(gateway.url, KIDS, 5)[0] == PAPER
        assert PAPER not in ranked(gateway.url, KIDS_EXCLUDED, 100, genres="Animation")
        assert live.redis.hget(keys.STATS, "dead_letters") in (None, b"0")
    finally:
        gateway.stop()
