"""An oracle for the stream path that does not share its arithmetic (issue 14, "Tests").

The other stream tests compare Redis with :class:`streams.store.MemoryFeatureTables` fed by the same
:meth:`RatingProcessor.plan`, so a wrong fold (counts, sums, squares, means, decayed scores) would pass both
sides. :class:`Oracle` computes the Redis state again from the raw events and the documented formulas only:
``docs/redis-keys.md`` (every key and field), the docstrings of ``streams/processor.py`` and
``streams/store.py`` (trending and prior: ``log sum_e exp(d * ts_e)``, ``d = ln 2 / half-life``, event
seconds; the prior clock a max of event ms), ``schemas/user_record.py`` (what Redis holds is read with its
*decode* functions) and ``models/state.py`` (``pre = sum_i w_i W_in[i]`` over each movie's latest rating,
``norm2 = sum_i w_i^2``, ``n_events`` = movies rated, the rating weights). It never calls ``plan``, ``_fold``,
``fold_in``, ``rating_weight`` or the memory store; ``encode`` (the documented encoder) maps its own ``pre`` to
``mu``/``logvar``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import redis

from models.runtime import ModelRuntime
from models.state import DISLIKED_WEIGHT, LIKED_WEIGHT, LUKEWARM_WEIGHT, UserState, encode
from reelstream.settings import Settings
from schemas import redis_keys as keys
from schemas.ratings import LIKED_MIN_RATING, MAX_RATING, MIN_RATING, PROBE_SOURCE
from schemas.user_record import decode_rated_at, decode_recent_list, decode_user, pack_rating
from schemas.wire import codec_for
from streams.events import rating_event, user_key
from streams.online import OnlineRatingModel
from streams.processor import Message, RatingProcessor
from streams.store import RedisFeatureTables

TOPIC = "ratings-oracle"
PARTITIONS = 3
MOVIES = np.arange(1, 81)
TRENDING_HALF_LIFE_S = 3600.0  # short half-lives, so the ~1-day stream's events carry visibly different weights
PRIOR = {"beta": 0.5, "half_life_s": 7200.0}
PROBE = Settings.model_fields["probe_user_base"].default
T0 = 1_400_000_000_000
STEP_MS = 600_000
LATE = T0 + 3 * 86400_000  #: user 7's first event, later than every other (last_ms, the clock: maxima)
REL = 1e-9  # pre, norm2, sums, means, trending and prior scores
LATENT_ABS = 1e-6  # mu and logvar (float32)
STATS_FIELDS = ("events_applied", "dead_letters", "duplicates_skipped", "movies_applied", "log_resets", "events_lost")


# --- the oracle -----------------------------------------------------------------------------------


def weight(rating: float) -> float:
    """The encoder input weight, from models/state.py's documented bands (liked >= 4, lukewarm 3-3.5)."""
    if rating >= LIKED_MIN_RATING:
        return LIKED_WEIGHT
    return LUKEWARM_WEIGHT if rating >= 3.0 else DISLIKED_WEIGHT


def log_decayed_count(ts_ms: list[int], half_life_s: float) -> float:
    """``log sum_e exp(d * t_e)`` with ``d = ln 2 / half_life_s``, t in seconds, summed exactly (fsum)."""
    d = math.log(2.0) / half_life_s
    xs = [d * t / 1000.0 for t in ts_ms]
    top = max(xs)
    return top + math.log(math.fsum(math.exp(x - top) for x in xs))


@dataclass
class Sent:
    """One message as delivered, with the event it carries (the oracle reads the event, never the bytes)."""

    msg: Message
    event: dict[str, Any]


@dataclass
class Oracle:
    """The state the documented rules give for a sequence of delivered batches."""

    catalogue: set[int]
    probe_base: int
    fences: dict[int, int] = field(default_factory=dict)  #: partition -> highest offset seen
    users: dict[int, list[tuple[int, float, int]]] = field(default_factory=dict)  #: applied (movie, rating, ts)
    items: dict[int, list[tuple[float, int]]] = field(default_factory=dict)  #: shared: (rating, ts), no probes
    applied: int = 0  #: events applied (probes too)
    dead: int = 0  #: dead letters
    skipped: int = 0  #: fenced offsets and duplicate events

    def refused(self, ev: dict[str, Any]) -> bool:
        """The rating contract's rules this sequence exercises (range, half step, catalogue, probe ids)."""
        r = ev["rating"]
        in_range = MIN_RATING <= r <= MAX_RATING and float(r * 2).is_integer()
        probe_ok = (ev["source"] == PROBE_SOURCE) == (ev["user_id"] >= self.probe_base)
        return not (in_range and probe_ok and ev["movie_id"] in self.catalogue)

    def deliver(self, batch: list[Sent]) -> None:
        """At or below the partition's fence: skipped; invalid: a dead letter; a copy of an applied rating
        event (user, movie, rating, event time): a duplicate, skipped; otherwise applied."""
        top = dict(self.fences)
        for s in batch:
            p, off, ev = s.msg.partition, s.msg.offset, s.event
            if off <= self.fences.get(p, -1):
                self.skipped += 1
                continue
            top[p] = max(top.get(p, -1), off)
            if self.refused(ev):
                self.dead += 1
                continue
            uid, entry = ev["user_id"], (ev["movie_id"], ev["rating"], ev["event_ts"])
            if entry in self.users.get(uid, []):
                self.skipped += 1
                continue
            self.applied += 1
            self.users.setdefault(uid, []).append(entry)
            if ev["source"] != PROBE_SOURCE:
                self.items.setdefault(ev["movie_id"], []).append((ev["rating"], ev["event_ts"]))
        self.fences = top

    def latest(self, uid: int) -> dict[int, tuple[float, int]]:
        """Movie -> its latest applied rating and event time."""
        return {mid: (r, ts) for mid, r, ts in self.users[uid]}

    def learned(self) -> list[int]:
        """Event times of the applied events that feed the shared tables."""
        return [ts for evs in self.items.values() for _, ts in evs]


# --- the comparison ---------------------------------------------------------------------------------


def _close(got: float | None, want: float, rel: float = REL) -> bool:
    return got is not None and abs(got - want) <= rel * max(abs(want), 1.0)


def _vector_close(got: np.ndarray | None, want: np.ndarray, rel: float) -> bool:
    """Within ``rel`` of the vector's max-norm, floored at 1 (the scale of W_in's rows), so a ``pre`` that
    re-ratings cancelled to zero compares absolutely instead of dividing rounding noise by zero."""
    if got is None or got.shape != want.shape:
        return False
    return float(np.max(np.abs(got - want), initial=0.0)) <= rel * max(float(np.max(np.abs(want), initial=0.0)), 1.0)


def diff(oracle: Oracle, client: redis.Redis, runtime: ModelRuntime, trending_half_life_s: float) -> list[str]:
    """Every way Redis differs from the oracle (empty: it agrees), one line each naming key and field."""
    out: list[str] = []

    def check(ok: bool, where: str, got: Any, want: Any) -> None:
        if not ok:
            out.append(f"{where}: redis {got!r:.120}, oracle {want!r:.120}")

    weights = runtime.weights
    user_keys = {k for u in oracle.users for k in (keys.user(u), keys.user_rated(u), keys.user_recent(u))}
    got_user_keys = {k.decode() for k in client.scan_iter(match=keys.user("*"))}
    check(got_user_keys == user_keys, "user keys", sorted(got_user_keys ^ user_keys), "none extra or missing")
    for uid, events in oracle.users.items():
        rec, where = decode_user(client.hgetall(keys.user(uid))), keys.user(uid)
        ratings = [r for _, r, _ in events]
        times = [ts for _, _, ts in events]
        latest = oracle.latest(uid)
        w = np.array([weight(r) for r, _ in latest.values()], dtype=np.float64)
        rows = weights.w_in[[runtime.index_of[m] for m in latest]].astype(np.float64)
        pre, norm2 = w @ rows, float(w @ w)
        mu, logvar = encode(weights, UserState(pre=pre, norm2=norm2, n_events=len(latest)))
        for name, want in (("version", len(events)), ("n", len(events)), ("first_ms", min(times)),
                           ("last_ms", max(times)), ("n_events", len(latest)),
                           ("model_version", runtime.version)):  # fmt: skip
            check(getattr(rec, name) == want, f"{where}[{name}]", getattr(rec, name), want)
        for name, want in (("sum", math.fsum(ratings)), ("sumsq", math.fsum(r * r for r in ratings)),
                           ("norm2", norm2)):  # fmt: skip
            check(_close(getattr(rec, name), want), f"{where}[{name}]", getattr(rec, name), want)
        check(_vector_close(rec.pre, pre, REL), f"{where}[pre]", rec.pre, pre)
        for name, want in (("mu", mu), ("logvar", logvar)):
            got = getattr(rec, name)
            ok = got is not None and got.shape == want.shape and float(np.max(np.abs(got - want))) <= LATENT_ABS
            check(ok, f"{where}[{name}]", got, want)
        rated = decode_rated_at(client.hgetall(keys.user_rated(uid)))
        check(rated == latest, keys.user_rated(uid), rated, latest)
        recent = decode_recent_list(client.lrange(keys.user_recent(uid), 0, -1))
        want_recent = events[::-1][: keys.RECENT_MAX]
        check(recent == want_recent, keys.user_recent(uid), recent, want_recent)

    item_keys = {keys.item(m) for m in oracle.items}
    got_item_keys = {k.decode() for k in client.scan_iter(match=keys.item("*"))}
    check(got_item_keys == item_keys, "item keys", sorted(got_item_keys ^ item_keys), "none extra or missing")
    for zkey in (keys.ITEMS_POPULAR, keys.ITEMS_TRENDING, keys.ITEMS_PRIOR):
        members = {int(m) for m in client.zrange(zkey, 0, -1)}
        check(members == set(oracle.items), f"{zkey} members", sorted(members), sorted(oracle.items))
    for mid, evs in oracle.items.items():
        h, where = client.hgetall(keys.item(mid)), keys.item(mid)
        n, total = len(evs), math.fsum(r for r, _ in evs)
        got_n = int(h[b"n"]) if b"n" in h else None
        check(got_n == n, f"{where}[n]", got_n, n)
        for name, want in (("sum", total), ("mean", total / n)):
            got = float(h[name.encode()]) if name.encode() in h else None
            check(_close(got, want), f"{where}[{name}]", got, want)
        times = [ts for _, ts in evs]
        for zkey, want in ((keys.ITEMS_POPULAR, float(n)),
                           (keys.ITEMS_TRENDING, log_decayed_count(times, trending_half_life_s)),
                           (keys.ITEMS_PRIOR, log_decayed_count(times, PRIOR["half_life_s"]))):  # fmt: skip
            got = client.zscore(zkey, mid)
            check(_close(got, want), f"{zkey}[{mid}]", got, want)

    clock = {k.decode(): v.decode() for k, v in client.hgetall(keys.ITEMS_PRIOR_CLOCK).items()}
    learned = oracle.learned()
    want_clock = {"event_ms": str(max(learned)), "events": str(len(learned)), "half_life_s": PRIOR["half_life_s"]}
    got_clock = {**clock, "half_life_s": float(clock["half_life_s"]) if "half_life_s" in clock else None}
    check(got_clock == want_clock, keys.ITEMS_PRIOR_CLOCK, got_clock, want_clock)

    stats = client.hgetall(keys.STATS)
    want_stats = {"events_applied": oracle.applied, "dead_letters": oracle.dead, "duplicates_skipped": oracle.skipped}
    for name in STATS_FIELDS:
        got, want = int(stats.get(name.encode(), 0)), want_stats.get(name, 0)
        check(got == want, f"{keys.STATS}[{name}]", got, want)
    online_n = int(client.hget(keys.ONLINE, "n") or 0)
    check(online_n == len(learned), f"{keys.ONLINE}[n]", online_n, len(learned))
    offsets = {int(p): int(o) for p, o in client.hgetall(keys.offsets(TOPIC)).items()}
    check(offsets == oracle.fences, keys.offsets(TOPIC), offsets, oracle.fences)
    return out


# --- the event sequence -------------------------------------------------------------------------------


class Log:
    """Produces messages as the producer would: keyed by user, partition ``user % PARTITIONS``, offsets in order."""

    def __init__(self) -> None:
        self.codec = codec_for("RatingEvent")
        self.offsets = [0] * PARTITIONS
        self.clock = T0

    def send(self, user: int, movie: int, rating: float, ts: int | None = None, source: str = "replay") -> Sent:
        """A new rating event; its time is the next tick of the stream's clock unless given."""
        if ts is None:
            self.clock += STEP_MS
            ts = self.clock
        return self.again(rating_event(user, movie, rating, ts, source))  # type: ignore[arg-type]

    def again(self, ev: dict[str, Any]) -> Sent:
        """``ev`` at the next offset of its partition (a producer's retry, a replay resumed: an exact copy)."""
        p = ev["user_id"] % PARTITIONS
        msg = Message(TOPIC, p, self.offsets[p], self.codec.encode(ev), key=user_key(ev["user_id"]))
        self.offsets[p] += 1
        return Sent(msg, ev)


def _random(log: Log, rng: np.random.Generator, n: int) -> list[Sent]:
    """Users 1..6 on movies 1..60, any half step: many re-ratings, both bounds, times increasing."""
    return [log.send(int(rng.integers(1, 7)), int(rng.integers(1, 61)), float(rng.integers(1, 11)) / 2)
            for _ in range(n)]  # fmt: skip


def batches() -> list[list[Sent]]:
    """Five deliveries covering the cases of issue 14 (see each comment); user 8 outgrows RECENT_MAX."""
    log, rng = Log(), np.random.default_rng(14)
    long_user = [(8, m) for m in range(1, 56)]  # 55 distinct movies: the recent list keeps the latest 50

    b1 = _random(log, rng, 60)
    first = log.send(1, 61, 5.0)  # user 1's movie 61: liked, later disliked, liked again, re-rated
    low = log.send(2, 62, MIN_RATING)  # the lower bound
    b1 += [first, low, log.send(2, 63, MAX_RATING)]  # and the upper one
    b1 += [log.send(7, 64, 3.0, ts=LATE), log.send(7, 65, 4.0, ts=T0 - 3600_000)]  # out of order
    b1 += [log.send(u, m, 4.0) for u, m in long_user[:30]]
    b1 += [log.send(3, 66, 5.5), log.send(4, 9999, 4.0)]  # dead letters: out of range, unknown movie
    b1 += [log.again(low.event)]  # a duplicate within the batch

    b2 = [log.send(1, 61, 0.5)]  # re-rating: liked -> disliked
    b2 += _random(log, rng, 40)
    b2 += [log.again(low.event), log.send(2, 62, MIN_RATING)]  # a copy of the latest; the same rating again, later
    b2 += [log.send(u, m, 4.5) for u, m in long_user[30:]]

    b3 = list(b2)  # redelivery after a crash: every offset fenced

    b4 = [log.again(first.event)]  # a copy of an older rating of a movie since re-rated (the recent list)
    b4 += [log.send(1, 61, 4.0), log.send(1, 61, 4.5)]  # disliked -> liked -> liked
    b4 += [log.send(PROBE, 80, 4.0, ts=T0 + 30 * 86400_000, source=PROBE_SOURCE)]  # latest time of all
    b4 += _random(log, rng, 20)

    b5 = b4[-10:] + _random(log, rng, 10)  # a redelivery overlapping new messages
    return [b1, b2, b3, b4, b5]


def _processor(client: redis.Redis) -> RatingProcessor:
    runtime = ModelRuntime.random(MOVIES, seed=3)
    runtime.metadata["item_prior"] = dict(PRIOR)
    return RatingProcessor(runtime, RedisFeatureTables(client), topic=TOPIC, min_ts_ms=0, max_future_ms=10**15,
                           half_life_s=TRENDING_HALF_LIFE_S, online=OnlineRatingModel(seed=1))  # fmt: skip


def _run(client: redis.Redis, deliveries: list[list[Sent]]) -> tuple[Oracle, RatingProcessor]:
    """Each delivery through the real path (RatingProcessor, the Lua scripts, Redis) and the oracle."""
    proc = _processor(client)
    oracle = Oracle(set(MOVIES.tolist()), PROBE)
    for batch in deliveries:
        proc.run([s.msg for s in batch])
        oracle.deliver(batch)
    return oracle, proc


# --- the tests ------------------------------------------------------------------------------------------


def test_redis_agrees_with_the_documented_formulas(live_settings: Settings) -> None:
    client = redis.Redis.from_url(live_settings.redis_url)
    deliveries = batches()
    oracle, proc = _run(client, deliveries)
    # The sequence exercises what it claims to (so agreement below means something):
    assert len(oracle.users[8]) == 55 > keys.RECENT_MAX
    assert oracle.latest(1)[61] == (4.5, deliveries[3][2].event["event_ts"]) and len(oracle.users[1]) > 4
    assert [r for m, r, _ in oracle.users[2] if m == 62] == [MIN_RATING, MIN_RATING]
    assert (oracle.dead, oracle.skipped) == (2, 3 + len(deliveries[2]) + 10)  # 3 copies, b3, b5's overlap
    assert PROBE in oracle.users and 80 not in oracle.items
    assert any(r == MAX_RATING for evs in oracle.items.values() for r, _ in evs)
    assert max(oracle.learned()) == LATE > deliveries[4][-1].event["event_ts"]  # the clock is a max
    assert diff(oracle, client, proc.runtime, TRENDING_HALF_LIFE_S) == []


def _bump_item_sum(client: redis.Redis, oracle: Oracle) -> str:
    mid = min(oracle.items)
    client.hincrbyfloat(keys.item(mid), "sum", 0.5)
    return f"{keys.item(mid)}[sum]"


def _rerate_in_rated(client: redis.Redis, oracle: Oracle) -> str:
    uid = min(oracle.users)
    mid, r, ts = oracle.users[uid][-1]
    client.hset(keys.user_rated(uid), str(mid), pack_rating(MAX_RATING if r != MAX_RATING else MIN_RATING, ts))
    return keys.user_rated(uid)


def _nudge_trending(client: redis.Redis, oracle: Oracle) -> str:
    mid = min(oracle.items)
    client.zincrby(keys.ITEMS_TRENDING, 0.01, mid)  # 1% more decayed count
    return f"{keys.ITEMS_TRENDING}[{mid}]"


def _count_user_event(client: redis.Redis, oracle: Oracle) -> str:
    uid = min(oracle.users)
    client.hincrby(keys.user(uid), "n_events", 1)
    return f"{keys.user(uid)}[n_events]"


@pytest.mark.parametrize("perturb", [_bump_item_sum, _rerate_in_rated, _nudge_trending, _count_user_event])
def test_the_oracle_reports_a_perturbed_field(live_settings: Settings, perturb: Callable[..., str]) -> None:
    client = redis.Redis.from_url(live_settings.redis_url)
    oracle, proc = _run(client, batches()[:2])
    assert diff(oracle, client, proc.runtime, TRENDING_HALF_LIFE_S) == []
    where = perturb(client, oracle)
    problems = diff(oracle, client, proc.runtime, TRENDING_HALF_LIFE_S)
    assert [p.split(": redis")[0] for p in problems] == [where]
