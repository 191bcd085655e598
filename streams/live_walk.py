"""The live walk: a replay of STREAM that is also the offline prequential walk, through the real serving path.

``reelstream walk`` (docs/experiments.md) replays STREAM with every user served (``--serve-rate 1``), and
before each event :class:`LiveWalk`

1. waits until the worker has applied every event produced so far (``rs:offsets:{topic}`` at or past each
   partition's latest acknowledged offset) and the gateway serves the item prior that counts them (``GET
   /stats`` ``item_prior.events`` at ``rs:items:prior:clock`` ``events``; the gateway re-reads it in the
   background), so the list is served from the state the offline walk ranks from;
2. asks the gateway for the user's list of 20 at the event's time (:class:`ServeTraffic`);
3. scores the event by the offline walk's own rule (:func:`models.evaluation.prequential.is_scored`: a positive
   rating of a HISTORY movie the user had not rated): a hit when the movie is in the served list.

:func:`offline_walk` is the other side: :func:`models.evaluation.prequential` over the same events with the
served model as a learner (:class:`models.continual.RuntimeLearner`, the numpy runtime the worker and the
gateway run). :func:`compare` lines the two up event by event.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import polars as pl
import redis.asyncio as aioredis

from bootstrap.store import FeatureStore
from models.continual import RuntimeLearner
from models.data import Interactions, from_store
from models.evaluation.prequential import is_scored, prequential
from models.runtime import ModelRuntime
from reelstream.redis_client import SIDE_READ_TIMEOUT_S
from schemas import redis_keys as keys
from schemas.redis_keys import text
from streams.serve_traffic import LIST_LENGTH, ServeTraffic

__all__ = ["APPLY_TIMEOUT_S", "LiveWalk", "OfflineWalk", "WalkStep", "compare", "offline_walk"]

#: How long a list waits for the events before it to be applied; past it the list is served anyway, counted late.
APPLY_TIMEOUT_S = 30.0
#: Interval of the applied-offset reads while waiting (one HMGET each).
APPLY_POLL_S = 0.002
#: The answer's ``source`` when the request failed.
FAILED = "failed"


@dataclass(frozen=True, slots=True)
class WalkStep:
    """One scored event of the live walk."""

    user_id: int
    movie_id: int
    source: str  #: the answer's source (personalised, trending, popularity) or ``failed``
    cached: bool
    rank: int | None  #: the movie's 1-based position in the served list; None: not in it


class LiveWalk(ServeTraffic):
    """The replay's serve hook of ``reelstream walk`` (module docstring)."""

    def __init__(
        self, base_url: str, redis_url: str, topic: str, history: pl.DataFrame, k: int = LIST_LENGTH,
        apply_timeout_s: float = APPLY_TIMEOUT_S,
    ) -> None:  # fmt: skip
        super().__init__(base_url, 1.0, k)
        self.redis_url, self.offsets_key, self.apply_timeout_s = redis_url, keys.offsets(topic), apply_timeout_s
        self.catalogue = set(history["movie_id"].unique().to_list())
        self.seen: defaultdict[int, set[int]] = defaultdict(set)
        for uid, mid in zip(history["user_id"].to_list(), history["movie_id"].to_list(), strict=True):
            self.seen[uid].add(mid)
        self.steps: list[WalkStep] = []
        self.events = 0  #: events walked
        self.late = 0  #: lists served before the events before them were seen applied (APPLY_TIMEOUT_S)
        self.unacked = 0  #: sends that failed (the replay resends them; their list did not wait for them)
        self.wait_s = 0.0  #: time spent waiting: for the broker's acknowledgements, the worker and the gateway
        self.ack_wait_s = 0.0  #: of which for the broker's acknowledgements of the events sent
        self.prior_wait_s = 0.0  #: of which for the gateway to serve the item prior of the applied events
        self._acks: list[asyncio.Future[Any]] = []
        self._due: dict[int, int] = {}  #: partition -> the offset the worker must have applied
        self._redis: aioredis.Redis | None = None

    async def __aenter__(self) -> LiveWalk:
        await super().__aenter__()
        self._redis = aioredis.Redis.from_url(self.redis_url, socket_timeout=SIDE_READ_TIMEOUT_S)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await super().__aexit__(*exc)
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def before(self, user_id: int, movie_id: int, rating: float, event_ms: int) -> None:
        self.events += 1
        await self._applied()
        body = await self.request(user_id, event_ms)
        seen = self.seen[user_id]
        if is_scored(rating, movie_id in self.catalogue, movie_id in seen):
            self.steps.append(_step(user_id, movie_id, body))
        seen.add(movie_id)

    def sent(self, user_id: int, ack: asyncio.Future[Any]) -> None:
        self._acks.append(ack)

    async def _applied(self) -> None:
        """Until the worker's applied offsets reach every event sent so far (or APPLY_TIMEOUT_S: late)."""
        started = time.perf_counter()
        for ack in self._acks:
            try:
                meta = await ack
            except Exception:  # a failed send is the replay's to resend; the list goes on
                self.unacked += 1
                continue
            self._due[meta.partition] = max(self._due.get(meta.partition, -1), meta.offset)
        self._acks.clear()
        self.ack_wait_s += time.perf_counter() - started
        if not self._due:
            return
        deadline = started + self.apply_timeout_s
        applied = await self._until(self._offsets_applied, deadline)
        prior_started = time.perf_counter()
        if not applied or not await self._until(self._prior_served, deadline):
            self.late += 1
        self.prior_wait_s += time.perf_counter() - prior_started
        self._due.clear()
        self.wait_s += time.perf_counter() - started

    async def _until(self, check: Callable[[], Awaitable[bool]], deadline: float) -> bool:
        while not await check():
            if time.perf_counter() > deadline:
                return False
            await asyncio.sleep(APPLY_POLL_S)
        return True

    async def _offsets_applied(self) -> bool:
        assert self._redis is not None, "use LiveWalk as an async context manager"
        fields = [str(p) for p in self._due]
        try:
            got = await self._redis.hmget(self.offsets_key, fields)
        except (OSError, aioredis.RedisError):
            return False
        return all(raw is not None and int(text(raw)) >= self._due[int(f)] for f, raw in zip(fields, got, strict=True))

    async def _prior_served(self) -> bool:
        """The gateway's item prior counts every event the worker counted (true when it serves no Redis prior)."""
        assert self._redis is not None and self._client is not None, "use LiveWalk as an async context manager"
        try:
            raw = await self._redis.hget(keys.ITEMS_PRIOR_CLOCK, "events")
            served = (await self._client.get("/stats")).json().get("item_prior") or {}
        except (OSError, aioredis.RedisError, httpx.HTTPError, ValueError):
            return False
        if served.get("source") == "none":
            return True
        return raw is None or int(served.get("events", 0)) >= int(text(raw))


def _step(user_id: int, movie_id: int, body: dict[str, Any] | None) -> WalkStep:
    if body is None:
        return WalkStep(user_id, movie_id, FAILED, False, None)
    served = [int(item["movie_id"]) for item in body.get("items", [])]
    rank = served.index(movie_id) + 1 if movie_id in served else None
    return WalkStep(user_id, movie_id, str(body.get("source")), bool(body.get("cached")), rank)


@dataclass(frozen=True)
class OfflineWalk:
    """The offline walk of the same events: its scored events and the rank of each (1-based, in the catalogue)."""

    users: np.ndarray  #: MovieLens user id per scored event
    movies: np.ndarray  #: MovieLens movie id per scored event
    ranks: np.ndarray
    seconds: float


def offline_walk(runtime: ModelRuntime, store: FeatureStore, limit: int | None = None) -> OfflineWalk:
    """:func:`prequential` (streaming, k 20) of ``runtime`` served as a learner over the first ``limit`` STREAM
    events of ``store`` (all: None), the events the replay produces in the same order."""
    data = from_store(store)
    stream = data.stream if limit is None else data.stream.select(np.arange(len(data.stream)) < limit)
    walked = Interactions(
        history=data.history, stream=stream, n_users=data.n_users, n_items=data.n_items, item_side=data.item_side,
        side_names=data.side_names, movie_ids=data.movie_ids, genres=data.genres, version=data.version,
        metadata=data.metadata, side_year_range=data.side_year_range,
    )  # fmt: skip
    learner = RuntimeLearner(runtime, data.movie_ids).fit(walked)
    result = prequential(learner, walked, streaming=True, k=LIST_LENGTH, name=f"served {runtime.version}")
    users, items = _scored_events(walked)
    ids = pl.concat([store.history.select("user_idx", "user_id"), store.stream.select("user_idx", "user_id")]).unique()
    user_id = np.zeros(data.n_users, dtype=np.int64)
    user_id[ids["user_idx"].to_numpy()] = ids["user_id"].to_numpy()
    return OfflineWalk(user_id[users], data.movie_ids[items], result.ranks, result.seconds)


def _scored_events(data: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """The (user, item) indices of the events :func:`prequential` scores, in its order (the same rule)."""
    known = data.known_items()
    seen: set[tuple[int, int]] = set(zip(data.history.user.tolist(), data.history.item.tolist(), strict=True))
    users, items = [], []
    s = data.stream
    for u, i, r in zip(s.user.tolist(), s.item.tolist(), s.rating.tolist(), strict=True):
        if is_scored(r, bool(known[i]), (u, i) in seen):
            users.append(u)
            items.append(i)
        seen.add((u, i))
    return np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)


def _hr(hits: Iterable[bool]) -> float | None:
    got = list(hits)
    return round(sum(got) / len(got), 4) if got else None


def compare(steps: list[WalkStep], offline: OfflineWalk, k: int = LIST_LENGTH) -> dict[str, Any]:
    """Live against offline, event by event: HR@k of each overall and per source, and where they disagree.

    Raises ValueError when the two walks did not score the same events (they must, by the shared rule).
    """
    live_events = [(s.user_id, s.movie_id) for s in steps]
    off_events = list(zip(offline.users.tolist(), offline.movies.tolist(), strict=True))
    if live_events != off_events:
        first = next((j for j, (a, b) in enumerate(zip(live_events, off_events, strict=False)) if a != b),
                     min(len(live_events), len(off_events)))  # fmt: skip
        raise ValueError(f"the walks scored different events: {len(live_events)} live, {len(off_events)} offline, "
                         f"first difference at scored event {first}")  # fmt: skip
    live_hit = [s.rank is not None and s.rank <= k for s in steps]
    off_hit = [int(r) <= k for r in offline.ranks.tolist()]
    by_source: dict[str, dict[str, Any]] = {}
    for source in sorted({s.source for s in steps}):
        idx = [j for j, s in enumerate(steps) if s.source == source]
        by_source[source] = {
            "events": len(idx), "live_hr": _hr(live_hit[j] for j in idx), "offline_hr": _hr(off_hit[j] for j in idx),
            "disagree": sum(live_hit[j] != off_hit[j] for j in idx),
        }  # fmt: skip
    live_hr, off_hr = _hr(live_hit), _hr(off_hit)
    return {
        "k": k, "scored_events": len(steps), "live_hr": live_hr, "offline_hr": off_hr,
        "difference": None if live_hr is None or off_hr is None else round(live_hr - off_hr, 4),
        "disagree": sum(a != b for a, b in zip(live_hit, off_hit, strict=True)),
        "cached": sum(s.cached for s in steps), "by_source": by_source,
    }  # fmt: skip
