"""The Redis key layout: the contract between the stream worker (writer) and the gateway (reader).

Every key the system touches is built here and nowhere else. ``docs/redis-keys.md``
documents the same layout for operators. All keys share the ``rs:`` prefix so a
deployment can share a Redis with other apps.

=============================  ======  =============================================================
key                            type    fields / members
=============================  ======  =============================================================
``rs:user:{uid}``              hash    ``version`` (events applied; bumps on every applied event),
                                       ``pre`` (float64 bytes), ``norm2``, ``n_events``, ``mu`` and
                                       ``logvar`` (float32 bytes), ``n``, ``sum``, ``sumsq`` (over
                                       every applied event), ``first_ms``, ``last_ms`` (min and max
                                       event time), ``model_version``; encoded and decoded only by
                                       :mod:`schemas.user_record`, like the two keys below
``rs:user:{uid}:rated``        hash    movie_id -> the latest rating and its event time, packed:
                                       ``event_ts_ms * 10 + half_stars - 1``
``rs:user:{uid}:recent``       list    newest first, ``movie_id:packed``, capped at RECENT_MAX
``rs:user:{uid}:impressions``  hash    impression_id -> msgpack ``[served_ms, arm, top-20 hits, hit flags,
                                       movie ids...]`` (``hit flags``: one ``0``/``1`` per rank): the user's
                                       latest IMPRESSIONS_KEPT served lists (attribution)
``rs:user:{uid}:impressions:order`` zset impression_id -> served_ms of those lists: the oldest in O(log n)
``rs:exp:{arm}``               hash    one A/B arm and segment (``variant:segment``): ``impressions``,
                                       ``users``, ``hits``, ``hit_lists_20``, ``hits_5``, ``hits_10``, ``hits_20``,
                                       ``dcg_20``, ``hit_rating_sum``, ``novelty_lists``, ``novelty_sum``
``rs:exp:{arm}:users``         set     users served in the arm; ``:movies``: movies served (coverage)
``rs:exp:{arm}:days``          hash    per UTC day of serving ``{day}:lists`` and ``{day}:hit_lists_20`` (day =
                                       served_ms // EXPERIMENT_DAY_MS): the hit rate over time
``rs:exp:arms``                set     every arm with impressions
``rs:item:{mid}``              hash    ``n``, ``sum``, ``mean``
``rs:items:trending``          zset    movie_id -> log of the decayed event count, in log space:
                                       ``log(sum_e exp(lambda * t_e))`` with t in event seconds and
                                       ``lambda = ln 2 / trending_half_life_s``; the order is the
                                       trending order at any time; the decayed count at time ``t`` is
                                       ``exp(score - lambda * t)``
``rs:items:prior``             zset    movie_id -> the same log-space decayed event count as trending,
                                       but with ``lambda = ln 2 / item_prior.half_life_s`` of the
                                       loaded model (kept only when the model has an item prior); the
                                       gateway adds ``beta * log(1 + exp(score - lambda * now))`` to
                                       every logit (``ModelRuntime.prior_logits``)
``rs:items:prior:clock``       hash    ``event_ms`` (the latest event time the worker applied, epoch
                                       ms: the prior's ``now``), ``events`` (events counted in the
                                       prior zset), ``half_life_s`` (the half-life it is kept with)
``rs:items:popular``           zset    movie_id -> rating count
``rs:movie:{mid}``             hash    movies added by ``MovieEvent``: ``title``, ``genres`` and
                                       ``tags`` (``|``-joined), ``year`` (empty: unknown),
                                       ``updated_ms``; codec :mod:`schemas.movie_record`
``rs:offsets:{topic}``         hash    partition -> highest applied offset (exactly-once effect; -1
                                       right after a log reset re-based the partition)
``rs:fence:{topic}``           hash    partition -> the identity of the log that offset fences:
                                       ``epoch:fingerprint:highwater`` (streams/log_identity.py),
                                       written by the same script as the offset
``rs:resets:{topic}``          hash    partition -> the latest log reset detected there, JSON:
                                       ``at_ms``, ``reason``, ``old_offset``, ``old_epoch``,
                                       ``epoch``, ``highwater``, ``lost``
``rs:online``                  hash    river online model, prequential, all workers together:
                                       ``n``, ``abs_sum``, ``sq_sum``, ``mae``, ``rmse``, ``drifts``
``rs:challenger``              hash    the online model's call for a challenger (docs/models.md):
                                       ``requested`` (drift alarms counted, exactly-once with their
                                       batch), ``last_alarm_ms`` (the event time of the latest
                                       event ADWIN alarmed at), ``reason``; ``reelstream retrain`` answers it:
                                       ``answered`` (the ``requested`` it ran for), ``answered_ms``,
                                       ``answer`` (promoted / kept / failed: why)
``rs:worker:{name}``           string  heartbeat (epoch ms), expires after worker_heartbeat_ttl_s
``rs:worker:{name}:freshness``  hash    produce-to-commit latency (ms) of the worker's latest
                                       events: ``n``, ``p50``, ``p99``, ``max``; expires like above
``rs:stats``                   hash    events_applied, dead_letters, duplicates_skipped,
                                       movies_applied, log_resets, events_lost (estimated)
``rs:seed``                    hash    what ``reelstream seed`` applied: ``status`` (running, done),
                                       ``store_version``, ``model_version``, ``rows``, ``topic``,
                                       ``started_ms``, ``finished_ms``, ``swap_to`` (a hot swap's target);
                                       a bulk seed in progress: ``bulk_rows``, ``bulk_user`` (its cursor);
                                       a rebuild (streams/rebuild.py)
                                       adds ``rebuild`` (running, done), ``rebuild_started_ms``,
                                       ``rebuilt_ms``, ``archive_records``
``rs:model``                   hash    the serving pointer: ``serving`` (the model new users start
                                       on), ``previous``; the hot swap to ``serving``: ``swap``
                                       (running, done), ``swap_from``, ``users`` (re-encoded so far),
                                       ``retries`` (CAS misses), ``started_ms``, ``finished_ms``
``rs:rebuild:lock``            string  the rebuild in progress: its holder's token; expires after
                                       rebuild_lock_ttl_s unless the holder renews it
``rs:archive``                 hash    ``reelstream archive``'s status (streams/archive.py): per
                                       partition ``{topic}:{p}:offset`` (archived, -1: none yet),
                                       ``:epoch``, ``:highwater`` (last seen), ``:segments``,
                                       ``:records``, ``:last_write_ms``; totals ``records``,
                                       ``segments``, ``resets``, ``lost``, ``state``, ``pid``,
                                       ``started_ms``, ``updated_ms``
=============================  ======  =============================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "ARCHIVE",
    "CHALLENGER",
    "EXPERIMENT_ARMS",
    "EXPERIMENT_DAY_MS",
    "IMPRESSIONS_KEPT",
    "ITEMS_POPULAR",
    "ITEMS_PRIOR",
    "ITEMS_PRIOR_CLOCK",
    "ITEMS_TRENDING",
    "MODEL",
    "ONLINE",
    "PREFIX",
    "REBUILD_LOCK",
    "RECENT_MAX",
    "SEED",
    "STATS",
    "experiment",
    "fence",
    "item",
    "movie",
    "offsets",
    "resets",
    "text",
    "text_hash",
    "user",
    "user_impressions",
    "user_impressions_order",
    "user_rated",
    "user_recent",
    "worker",
    "worker_freshness",
]

PREFIX = "rs"
ITEMS_TRENDING = f"{PREFIX}:items:trending"
ITEMS_POPULAR = f"{PREFIX}:items:popular"
#: The model's item prior counts (like trending, at the model's ``item_prior.half_life_s``) and their clock.
ITEMS_PRIOR = f"{PREFIX}:items:prior"
ITEMS_PRIOR_CLOCK = f"{PREFIX}:items:prior:clock"
ONLINE = f"{PREFIX}:online"
#: The online model's drift alarms asking for a challenger, and ``reelstream retrain``'s answer to them.
CHALLENGER = f"{PREFIX}:challenger"
STATS = f"{PREFIX}:stats"
#: What ``reelstream seed`` applied (HISTORY's store and model version); see streams/seed.py.
SEED = f"{PREFIX}:seed"
#: Which model serves (``serving``, ``previous``) and the hot swap between them (streams/swap.py).
MODEL = f"{PREFIX}:model"
#: Held by the one process rebuilding the feature tables (streams/rebuild.py); others wait for it.
REBUILD_LOCK = f"{PREFIX}:rebuild:lock"
#: ``reelstream archive``'s progress: archived offset, epoch and segments per partition (streams/archive.py).
ARCHIVE = f"{PREFIX}:archive"
#: How many recent ratings a user's ``recent`` list keeps.
RECENT_MAX = 50


def user(user_id: int) -> str:
    """The user's state and statistics hash.

    >>> user(42)
    'rs:user:42'
    """
    return f"{PREFIX}:user:{user_id}"


def user_rated(user_id: int) -> str:
    return f"{PREFIX}:user:{user_id}:rated"


def user_recent(user_id: int) -> str:
    return f"{PREFIX}:user:{user_id}:recent"


def user_impressions(user_id: int) -> str:
    return f"{PREFIX}:user:{user_id}:impressions"


def user_impressions_order(user_id: int) -> str:
    return f"{PREFIX}:user:{user_id}:impressions:order"


#: Served lists kept per user for attribution (the oldest by serving time goes first).
IMPRESSIONS_KEPT = 20
#: Every arm (``variant:segment``) that has impressions.
EXPERIMENT_ARMS = f"{PREFIX}:exp:arms"
#: The serving-day buckets of ``rs:exp:{arm}:days`` (UTC days of ``served_ms``).
EXPERIMENT_DAY_MS = 86_400_000


def experiment(arm: str, part: str = "") -> str:
    """An arm's counters (``part`` ''), its ``users`` / ``movies`` set, or its ``days`` hash.

    >>> experiment("control:new"), experiment("control:new", "users")
    ('rs:exp:control:new', 'rs:exp:control:new:users')
    """
    return f"{PREFIX}:exp:{arm}" + (f":{part}" if part else "")


def item(movie_id: int) -> str:
    return f"{PREFIX}:item:{movie_id}"


def movie(movie_id: int) -> str:
    return f"{PREFIX}:movie:{movie_id}"


def offsets(topic: str) -> str:
    """Highest applied offset per partition of ``topic``.

    >>> offsets("reelstream.ratings")
    'rs:offsets:reelstream.ratings'
    """
    return f"{PREFIX}:offsets:{topic}"


def fence(topic: str) -> str:
    """Per partition of ``topic``, the identity of the log its applied offset fences.

    >>> fence("reelstream.ratings")
    'rs:fence:reelstream.ratings'
    """
    return f"{PREFIX}:fence:{topic}"


def resets(topic: str) -> str:
    """Per partition of ``topic``, the latest log reset detected (JSON)."""
    return f"{PREFIX}:resets:{topic}"


def worker(name: str) -> str:
    return f"{PREFIX}:worker:{name}"


def worker_freshness(name: str) -> str:
    """Freshness percentiles of one worker's latest events."""
    return f"{PREFIX}:worker:{name}:freshness"


def text(raw: object) -> str:
    """One Redis reply value as text.

    redis-py returns ``bytes`` (the clients here never set ``decode_responses``), tests and the in-memory
    tables hand back ``str``; bytes that are not UTF-8 come back with U+FFFD rather than raising, so the record
    codecs report them as the field they fail to parse.
    """
    return raw.decode(errors="replace") if isinstance(raw, bytes | bytearray) else str(raw)


def text_hash(raw: Mapping[Any, Any]) -> dict[str, str]:
    """An ``HGETALL`` reply with its fields and values as text (see :func:`text`)."""
    return {text(k): text(v) for k, v in raw.items()}
