"""``replay --serve-rate``: each served user's list is requested, at the event's time, just before their event
is produced (streams/serve_traffic.py); a gateway that does not answer costs counts, never events."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from collections.abc import Iterator

import polars as pl
import pytest
import uvicorn

from gateway.app import create_app
from models.runtime import ModelRuntime
from reelstream.addresses import gateway_url
from reelstream.settings import Settings
from reelstream.shell import local_services
from streams.admin import ensure_topics_sync, high_watermarks
from streams.replay import replay
from streams.serve_traffic import ServeTraffic, is_served
from tests.stream_support import read_topic, wait_for
from tests.test_gateway_api import make_gateway

USERS = list(range(1, 13))


@pytest.fixture
def case(live_settings: Settings, tmp_path) -> Settings:
    tag = uuid.uuid4().hex[:8]
    s = live_settings.model_copy(update={
        "topic_ratings": f"ratings-{tag}", "topic_movies": f"movies-{tag}", "topic_dead_letters": f"dead-{tag}",
        "topic_impressions": f"impressions-{tag}", "var_dir": tmp_path / "var",
    })  # fmt: skip
    ensure_topics_sync(s)
    return s


def _stream(runtime: ModelRuntime) -> pl.DataFrame:
    movies = runtime.movie_ids[:40].tolist()
    rows = [(u, int(movies[(u * 7 + j) % 40]), 4.0, 1_600_000_000 + 60 * (u * 3 + j)) for u in USERS for j in range(3)]
    rows.sort(key=lambda r: r[3])
    return pl.DataFrame(rows, schema=["user_id", "movie_id", "rating", "ts"], orient="row")


@pytest.fixture
def gateway_server(case: Settings, runtime: ModelRuntime, items: pl.DataFrame) -> Iterator[tuple[str, object]]:
    """The gateway app under a real uvicorn server on a free loopback port, recording impressions."""
    gw = make_gateway(case, runtime, items)
    port = local_services.free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(case, gateway=gw, impressions=True), host="127.0.0.1",
                                           port=port, log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "the gateway to start")
    yield gateway_url("127.0.0.1", port), gw
    server.should_exit = True
    thread.join(timeout=30)


def test_each_served_users_list_is_requested_at_the_events_time(case: Settings, runtime, gateway_server) -> None:
    url, gw = gateway_server
    stream = _stream(runtime)
    rate = 0.5
    expected = Counter((u, ts * 1000) for u, ts in zip(stream["user_id"], stream["ts"], strict=True)
                       if is_served(u, rate))  # fmt: skip
    assert 0 < sum(expected.values()) < stream.height  # the fraction picks some users, not all

    async def run() -> tuple:
        async with ServeTraffic(url, rate) as traffic:
            done = await replay(case, stream, fingerprint="serve-test", serve=traffic)
        return done, traffic.summary

    done, served = asyncio.run(run())
    assert done.events == stream.height
    assert served.requested == served.served == sum(expected.values()) and served.failed == 0
    wait_for(lambda: gw.impressions is not None and gw.impressions.snapshot()["sent"] == served.served, 30,
             "the impressions acknowledged")  # fmt: skip
    got = [r.value for r in asyncio.run(read_topic(case, case.topic_impressions, "ImpressionEvent", served.served))]
    assert Counter((e["user_id"], e["served_ms"]) for e in got) == expected
    assert {e["clock"] for e in got} == {"event"} and all(len(e["movie_ids"]) == 20 for e in got)


def test_a_gateway_that_does_not_answer_costs_counts_not_events(case: Settings, runtime) -> None:
    stream = _stream(runtime)
    dead = gateway_url("127.0.0.1", local_services.free_port())

    async def run() -> tuple:
        async with ServeTraffic(dead, 1.0) as traffic:
            done = await replay(case, stream, fingerprint="serve-dead", serve=traffic)
        return done, traffic.summary

    done, served = asyncio.run(run())
    assert done.events == stream.height
    assert served.requested == served.failed == stream.height and served.served == 0
    assert set(served.errors) == {"ConnectError"}
    ends = asyncio.run(high_watermarks(case, case.topic_ratings))
    assert sum(ends.values()) == stream.height  # every event produced all the same
