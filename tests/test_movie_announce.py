"""Announcing movies: the announcement contract, ``reelstream movie add``'s errors and ``POST /movies``' answers.

The live path (broker, worker, gateway, ranking) is tests/test_movie_cold_start_live.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.catalog import Catalog
from gateway.producer import KafkaEventPublisher, SentMovie
from gateway.rules import RulesStore
from gateway.service import Gateway
from gateway.state import RedisState
from models.runtime import ModelRuntime
from reelstream.settings import PROJECT_ROOT, Settings
from reelstream.shell import local_services
from reelstream.shell.commands.movie import split_genres
from schemas.movie_record import encode_movie
from schemas.movies import announcement_problem
from schemas.side_features import GENRE, feature_name, side_metadata
from schemas.wire import codec_for
from streams.events import MovieInCatalogue, MovieRefused, judged_movie
from streams.rules import movie_event_problem
from tests.stream_support import install_model
from tests.user_state import movielens_items

HEAT = 6
SIDE_GENRES = ("Action", "Animation", "Horror", "Thriller")


@pytest.mark.parametrize(
    ("movie_id", "title", "genres", "year", "tags", "field", "says"),
    [
        (0, "T", [], None, [], "movie_id", "outside 1..9007199254740992"),
        (2**53 + 1, "T", [], None, [], "movie_id", "outside"),
        (5, "   ", [], None, [], "title", "empty title"),
        (5, "T", ["Animation", "Kids"], None, [], "genres", "unknown genre 'Kids'"),
        (5, "T", ["animation"], None, [], "genres", "did you mean 'Animation'?"),
        (5, "T", ["Scifi"], None, [], "genres", "did you mean 'Sci-Fi'?"),
        (5, "T", ["(no genres listed)"], None, [], "genres", "give no genre instead"),
        (5, "T", ["Action", ""], None, [], "genres", "empty genre"),
        (5, "T", ["Action|Crime"], None, [], "genres", "contains '|'"),
        (5, "T", ["Action"], 1869, [], "year", "outside 1870..2100"),
        (5, "T", ["Action"], 2101, [], "year", "outside 1870..2100"),
        (5, "T", ["Action"], 2000, ["ok", " "], "tags", "empty tag"),
        (5, "T", ["Action"], 2000, ["a|b"], "tags", "contains '|'"),
    ],
)
def test_the_contract_names_the_field_and_the_reason(
    movie_id: int, title: str, genres: list[str], year: int | None, tags: list[str], field: str, says: str
) -> None:
    problem = announcement_problem(movie_id, title, genres, year, tags)
    assert problem is not None and problem[0] == field and says in problem[1], problem
    with pytest.raises(MovieRefused) as refused:
        judged_movie(movie_id, title, genres, year, tags, in_catalogue=lambda _: False)
    assert refused.value.field == field


def test_an_accepted_announcement_is_what_the_worker_stores() -> None:
    record = judged_movie(990_001, "Paper Boats (2026)", ["Animation", "Children"], 2026, ["Paper Craft"],
                          in_catalogue=lambda _: False)  # fmt: skip
    assert movie_event_problem(record) is None
    assert codec_for("MovieEvent").decode(codec_for("MovieEvent").encode(record)) == record
    assert encode_movie(record["title"], record["genres"], record["year"], record["tags"], 1)[3] == "Animation|Children"
    assert judged_movie(7, "No genres", [], None, [], in_catalogue=lambda _: False)["genres"] == []


def test_a_movie_with_trained_rows_is_refused() -> None:
    with pytest.raises(MovieInCatalogue, match="already in the catalogue"):
        judged_movie(HEAT, "Heat (1995)", ["Action"], 1995, [], in_catalogue={HEAT}.__contains__)


def test_genres_repeat_or_come_as_a_comma_list() -> None:
    assert split_genres(["Animation, Children", "Comedy"]) == ["Animation", "Children", "Comedy"]
    assert split_genres([]) == []
    assert split_genres(["Action,"]) == ["Action", ""]  # refused by the contract, not dropped


# --- reelstream movie add ---------------------------------------------------------------


def movie_add(settings: Settings, *args: str, bootstrap: str = "127.0.0.1:9") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REELSTREAM_VAR_DIR": str(settings.var_dir), "KAFKA_BOOTSTRAP": bootstrap}
    argv = [sys.executable, "-m", "reelstream.shell.cli", "movie", "add", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def test_movie_add_bad_input_and_a_dead_broker_exit_2_with_one_line(settings: Settings) -> None:
    install_model(settings, np.array([1, 2, HEAT]))  # genre features Action, Comedy, Drama, Horror; no tags
    dead = f"127.0.0.1:{local_services.free_port()}"
    cases = [
        (["--id", "0", "--title", "T"], "movie_id: movie id 0 is outside"),
        (["--id", "5", "--title", ""], "title: empty title"),
        (["--id", "5", "--title", "T", "--genre", "Action,Kids"], "unknown genre 'Kids'"),
        (["--id", "5", "--title", "T", "--tag", "a|b"], "contains '|'"),
        (["--id", str(HEAT), "--title", "Heat (1995)"], "already in the catalogue"),
        (["--id", "5", "--title", "T", "--genre", "Action", "--tag", "heist"], f"broker {dead} did not take"),
    ]
    for args, says in cases:
        done = movie_add(settings, *args, bootstrap=dead)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and says in lines[0] and "Traceback" not in done.stderr, (args, done.stderr)
    # the warning for a tag the model has no feature for comes before the broker is tried
    assert "no feature for tag 'heist'" in done.stdout


# --- POST /movies -----------------------------------------------------------------------


class FakeProducer:
    """Records announcements (the broker path is the live test's); ``send`` is not used here."""

    def __init__(self) -> None:
        self.announced: list[tuple] = []

    async def send(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("POST /movies produced a rating")

    async def announce(
        self, movie_id: int, title: str, genres: Sequence[str], year: int | None, tags: Sequence[str], *,
        in_catalogue: Callable[[int], bool],
    ) -> SentMovie:  # fmt: skip
        judged_movie(movie_id, title, genres, year, tags, in_catalogue=in_catalogue)
        self.announced.append((movie_id, title, list(genres), year, list(tags)))
        return SentMovie(movie_id, 3, 41)

    async def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    items = movielens_items(PROJECT_ROOT / "data" / "ml-latest-small")
    runtime = ModelRuntime.random(items["movie_id"].to_numpy(), seed=2)  # 4 side rows, named below
    runtime.metadata.update(side_metadata([feature_name(GENRE, g) for g in SIDE_GENRES], None))
    return Catalog.build(runtime, items)


def gateway_for(settings: Settings, catalog: Catalog) -> Gateway:
    state = RedisState(settings.redis_url, timeout=settings.gateway_redis_timeout)
    return Gateway(settings, catalog, RulesStore(settings.rules_path), state)


@pytest.fixture
def fake() -> FakeProducer:
    return FakeProducer()


@pytest.fixture
def client(settings: Settings, catalog: Catalog, fake: FakeProducer) -> Iterator[TestClient]:
    app = create_app(settings, gateway=gateway_for(settings, catalog), producer=fake, monitors=False)
    with TestClient(app) as tc:
        yield tc


NEW = {"movie_id": 990_001, "title": "Paper Boats (2026)", "genres": ["Animation"], "year": 2026, "tags": ["x"]}


def test_post_movies_needs_the_bearer_token(client: TestClient, fake: FakeProducer) -> None:
    assert client.post("/movies", json=NEW).status_code == 401
    assert client.post("/movies", json=NEW, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert fake.announced == []


def test_post_movies_answers_202_with_what_was_sent(client: TestClient, fake: FakeProducer, settings: Settings) -> None:
    auth = {"Authorization": f"Bearer {settings.admin_secret()}"}
    resp = client.post("/movies", json=NEW, headers=auth)
    assert resp.status_code == 202, resp.text
    assert resp.json() == NEW | {"topic": settings.topic_movies, "partition": 3, "offset": 41, "replaces": False,
                                 "tags_without_feature": ["x"]}  # fmt: skip
    assert fake.announced == [tuple(NEW.values())]
    client.app.state.gateway.announced.add(NEW["movie_id"])  # what a catalogue refresh records once it is applied
    again = client.post("/movies", json=NEW | {"title": "Paper Boats (2027)"}, headers=auth)
    assert again.status_code == 202 and again.json()["replaces"] is True


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        (NEW | {"genres": ["Kids"]}, "genres", "unknown genre 'Kids'"),
        (NEW | {"tags": ["a|b"]}, "tags", "contains '|'"),
        (NEW | {"title": "  "}, "title", "empty title"),
        (NEW | {"year": 3000}, "year", "less than or equal to 2100"),
        (NEW | {"movie_id": 0}, "movie_id", "greater than or equal to 1"),
        (NEW | {"rating": 5}, "rating", "Extra inputs"),
    ],
)
def test_post_movies_refuses_bad_input_by_field(
    client: TestClient, fake: FakeProducer, settings: Settings, body: dict, field: str, says: str
) -> None:
    resp = client.post("/movies", json=body, headers={"Authorization": f"Bearer {settings.admin_secret()}"})
    assert resp.status_code == 422, resp.text
    (error,) = resp.json()["detail"]
    assert error["loc"] == ["body", field] and says in error["msg"], error
    assert fake.announced == []


def test_post_movies_409_for_a_movie_with_trained_rows(client: TestClient, fake: FakeProducer, settings) -> None:
    resp = client.post(
        "/movies", json=NEW | {"movie_id": HEAT}, headers={"Authorization": f"Bearer {settings.admin_secret()}"}
    )
    assert resp.status_code == 409 and "already in the catalogue" in resp.json()["detail"]
    assert fake.announced == []


def test_post_movies_503_when_the_broker_is_down(settings: Settings, catalog: Catalog, tmp_path: Path) -> None:
    dead = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{local_services.free_port()}"})
    app = create_app(dead, gateway=gateway_for(dead, catalog), producer=KafkaEventPublisher(dead), monitors=False)
    with TestClient(app) as tc:
        resp = tc.post("/movies", json=NEW, headers={"Authorization": f"Bearer {dead.admin_secret()}"})
    assert resp.status_code == 503 and resp.headers["Retry-After"] == str(dead.gateway_retry_after_s)
    assert "unreachable" in resp.json()["detail"]


class MovieRecords:
    """The ``rs:movie:*`` hashes as RedisState.movie_events returns them (all the catalogue refresh reads)."""

    def __init__(self) -> None:
        self.docs: dict[int, dict[str, str]] = {}

    def movie_events(self) -> list[dict[str, str]]:
        return [doc | {"movie_id": str(mid)} for mid, doc in self.docs.items()]


def test_a_re_announced_movie_gets_its_new_metadata_and_row(settings: Settings, catalog: Catalog) -> None:
    records = MovieRecords()
    gw = Gateway(settings, catalog, RulesStore(settings.rules_path), records)  # type: ignore[arg-type]
    records.docs[990_001] = {"title": "Old (2026)", "genres": "Animation", "year": "2026", "tags": "",
                             "updated_ms": "1"}  # fmt: skip
    records.docs[HEAT] = {"title": "Not Heat", "genres": "Horror", "year": "1995", "tags": "", "updated_ms": "1"}
    assert gw.refresh_movies() == 1 and gw.refresh_movies() == 0  # the model's Heat keeps its trained row
    first, i = gw.catalog, gw.catalog.index(990_001)
    records.docs[990_001] = {"title": "New (2025)", "genres": "Horror|Thriller", "year": "2025", "tags": "",
                             "updated_ms": "2"}  # fmt: skip
    assert gw.refresh_movies() == 1 and gw.refresh_movies() == 0
    cat = gw.catalog
    assert (cat.index(990_001), cat.n) == (i, first.n) and cat.version != first.version
    assert (cat.titles[i], cat.genres[i], int(cat.years[i])) == ("New (2025)", ("Horror", "Thriller"), 2025)
    assert (
        cat.genre_matrix[i, cat.genre_index("Horror")] == 1 and cat.genre_matrix[i, cat.genre_index("Animation")] == 0
    )
    # the row is the one a gateway started after the re-announcement builds; every other row is unchanged
    restarted = Gateway(settings, catalog, RulesStore(settings.rules_path), records)  # type: ignore[arg-type]
    assert restarted.refresh_movies() == 1
    assert np.array_equal(cat.decoder[i], restarted.catalog.decoder[i]) and cat.bias[i] == restarted.catalog.bias[i]
    assert not np.array_equal(cat.decoder[i], first.decoder[i])
    assert np.array_equal(np.delete(cat.decoder, i, axis=0), np.delete(first.decoder, i, axis=0))
    h = cat.index(HEAT)
    assert cat.titles[h] == "Heat (1995)" and np.array_equal(cat.decoder[h], catalog.decoder[h])
    assert gw.serves_unannounced(HEAT) and not gw.serves_unannounced(990_001)
