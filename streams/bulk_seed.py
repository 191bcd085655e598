"""Seeding Redis with HISTORY in bulk: each user's final state computed at once, written with overwrites.

The per-event seed (:func:`streams.seed.fold_history` with ``bulk=False``) folds HISTORY through the worker's
path, one fenced script per ``seed_batch`` rows: about 10-20k ratings/s, 20-45 min for the 25.6M HISTORY
ratings of ML-32M. This module writes the state that path leaves, computed directly from the rows:

* **Validation** is the worker's: the rating contract's rules (:func:`schemas.ratings.rating_verdict`) run
  vectorised over every row, and the rows they flag are judged by ``rating_verdict`` itself, so a refused
  row gets the worker's reason. Movies the model lacks are looked up among the announced ones
  (``rs:movie:{mid}``) by the processor's own code, as the worker does.
* **Duplicates**: a row equal to an earlier applied one (user, movie, rating, event time) is skipped and
  counted in ``duplicates_skipped``, as the worker's dedupe does (the worker remembers the latest rating per
  movie, the batch and the last ``RECENT_MAX`` entries; this remembers every row: they differ only for an
  exact copy of a superseded rating more than a batch and ``RECENT_MAX`` ratings later, where the per-event
  result itself depends on ``seed_batch``). A bootstrapped store holds each (user, movie) pair once.
* **Users** in batches of whole users (``seed_bulk_rows`` rows): ``version`` and ``n`` count applied rows
  (a re-rating counts again), ``sum``/``sumsq`` sum them, ``first_ms``/``last_ms`` are their min/max;
  ``n_events`` counts movies, the ``rated`` hash keeps each movie's latest rating and time, the ``recent``
  list the latest ``RECENT_MAX`` ratings, newest first. ``pre`` is one sparse-matrix product per batch whose
  nonzeros are the weight *changes* ``w(r) - w(previous rating of the movie)`` in row order, so every
  user's sum adds exactly the rows ``fold_in`` adds, in the same order: bit-identical (the weights are 0 or
  1, so no product rounds). ``norm2`` sums the latest weights squared (exact: 0 or 1). ``mu``/``logvar``
  come from :func:`models.state.encode`, per user, the worker's own function. Every field is written through
  :mod:`schemas.user_record`'s codec.
* **Items** last, over all applied rows: ``rs:item:{mid}`` ``n``/``sum``/``mean``, popularity, trending and
  the item prior as ``max + log(sum(exp(x - max)))`` per movie (the per-event path chains ``logaddexp`` per
  batch: equal to ~1e-12 relative, and itself dependent on ``seed_batch`` in the last bits), the prior's
  clock and ``rs:stats``. ``rs:online`` is not fed: the river model lives in the seeding process and its
  prequential sums over HISTORY describe a model no worker holds (docs/durability.md: not part of the view).
* **The end** is one MULTI: ``rs:offsets:{seed_topic}`` and ``rs:fence:{seed_topic}`` exactly as the
  per-event seed leaves them (the last row's offset, its fingerprint, the first row's as the origin), the
  counters and ``rs:seed`` ``status`` = done.

**Cost** (the 25.6M HISTORY ratings, 162k users, of the ML-32M-shaped set; 2 cores shared with other jobs;
``bench/scale.py --phases seed``): 118.4 s, 216k ratings/s, against 142.3 s (180k/s) for the previous code
at the same hour. Redis's ``HSET`` is ~69 s of it (``INFO commandstats`` after the seed): a ``rated`` ziplist
is scanned on every field inserted, so filling one costs its length squared; that is the floor now, and the
Python side is built to stay under it. Three threads overlap: the writer sends batch j (waiting on the
socket, without the GIL) while two builders compute j + 1 and j + 2, whose sparse product (~20% of a
builder's samples) and polars rendering of the ``rated``/``recent`` arguments as protocol bytes run without
the GIL. Removed (py-spy of a 221 s run on a loaded machine): per-argument hiredis packing in the writer
(~21 s holding the GIL), ``np.unique`` + ``searchsorted`` of the movie ids (~21 s; now a table lookup) and
the item tables' redis-py pipeline (~3 s). Past this, RESTORE of pre-built ziplist payloads would skip
Redis's per-field scan (the payload format and its CRC64 are tied to the server version).

**Resumable, idempotent.** Users are written in ``user_id`` order, each batch in one non-transactional
pipeline (DEL then the final values) that ends with ``rs:seed`` ``bulk_user`` = its last user id, so a rerun
after a kill skips the users at or below it and rewrites the rest; item tables are final values too. The
cursor is tied to ``bulk_rows`` (the row count being seeded); the end removes both. Afterwards the offsets
say every row is applied, so a second run applies nothing (through the per-event path's fence).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl
import redis
from scipy import sparse

try:
    import hiredis
except ImportError:  # redis[hiredis] is a dependency; without it the pipeline path is used
    hiredis = None  # type: ignore[assignment]  # the optional-module idiom

from models.runtime import ModelRuntime
from models.state import UserState, encode, rating_weights
from reelstream.errors import DataError
from reelstream.settings import Settings
from schemas import redis_keys as keys
from schemas.ratings import MAX_ID, MAX_RATING, MIN_ID, MIN_RATING, RATING_STEP, RatingLimits, rating_verdict
from schemas.user_record import UserRecord, encode_recent_many, encode_user, pack_ratings
from schemas.wire import codec_for
from streams.events import rating_event, user_key
from streams.log_identity import Fence, fingerprint
from streams.processor import RatingProcessor
from streams.store import RedisFeatureTables

__all__ = ["BULK_ROWS", "BULK_USER", "BulkResult", "bulk_fold", "seed_fence"]

#: ``rs:seed`` fields of a bulk seed in progress: the rows it seeds and the last user id written.
BULK_ROWS, BULK_USER = "bulk_rows", "bulk_user"
#: Threads building user batches ahead of the writer (one per core of the 2-core target: see bulk_fold).
_BUILDERS = 2
#: Movies per item-table pipeline.
_ITEM_CHUNK = 5000
#: One movie's ``rs:item:{mid}`` as final values, by the worker's own commands (its apply script's ``I`` op, on
#: an emptied hash), so Redis formats ``sum`` (HINCRBYFLOAT) and ``mean`` (a Lua number) as it does for the
#: worker. KEYS = the item key; ARGV = count, sum.
_ITEM_LUA = """
redis.call('DEL', KEYS[1])
local cnt = redis.call('HINCRBY', KEYS[1], 'n', ARGV[1])
local sum = redis.call('HINCRBYFLOAT', KEYS[1], 'sum', ARGV[2])
redis.call('HSET', KEYS[1], 'mean', tonumber(sum) / cnt)
return 1
"""


@dataclass
class BulkResult:
    """What one :func:`bulk_fold` call did (``streams.seed.SeedSummary`` carries it to the caller)."""

    applied: int = 0  #: rows applied by this call (users above the cursor)
    skipped: int = 0  #: rows of users an earlier call wrote, plus duplicates of this call's users
    dead: int = 0
    dead_reasons: dict[str, int] | None = None
    users: int = 0
    batches: int = 0


def seed_fence(history: pl.DataFrame) -> Fence:
    """The fence the per-event seed leaves after ``history``: its last row, the first row as the origin."""
    first, last = history.row(0), history.row(history.height - 1)
    n = history.height
    return Fence(n - 1, 0, _fingerprint(last), n, _fingerprint(first))


def _fingerprint(row: tuple) -> str:
    """The fingerprint of the message the per-event seed builds for ``row`` (``streams/seed.py``)."""
    uid, mid, r, ts = row[:4]
    ts_ms = int(ts) * 1000
    value = codec_for("RatingEvent").encode(rating_event(uid, mid, r, ts_ms, "replay"))
    return fingerprint(user_key(uid), value, ts_ms)


def _judge_flagged(
    rows: np.ndarray, uid: np.ndarray, mid: np.ndarray, rating: np.ndarray, ts_ms: np.ndarray, now_ms: int,
    limits: RatingLimits, known: Callable[[int], bool],
) -> dict[int, str]:  # fmt: skip
    """``rating_verdict`` on the rows the vectorised rules flagged, each decoded as the worker decodes it:
    {row it refuses: reason}."""
    codec = codec_for("RatingEvent")
    refused: dict[int, str] = {}
    for i in rows.tolist():
        ev = codec.decode(codec.encode(rating_event(int(uid[i]), int(mid[i]), float(rating[i]), int(ts_ms[i]),
                                                    "replay")))  # fmt: skip
        verdict = rating_verdict(ev, user_key(int(uid[i])), now_ms=now_ms, limits=limits, known_movie=known)
        if verdict is not None:
            refused[i] = verdict.reason
    return refused


def _valid_mask(
    settings: Settings, client: redis.Redis, runtime: ModelRuntime, uid: np.ndarray, mid: np.ndarray,
    rating: np.ndarray, ts_ms: np.ndarray, now_ms: int,
) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:  # fmt: skip
    """(valid rows, each row's item index (-1: not in the model), {refused row: reason}), by the worker's rules."""
    limits = RatingLimits.from_settings(settings)
    movies = np.sort(pl.Series(mid).unique().to_numpy())  # a hash pass, then a sort of the few distinct ids
    unknown = [int(m) for m in movies.tolist() if m not in runtime.index_of]
    if unknown:  # the worker's lookup of announced movies (rs:movie:{mid}), which extends the model
        processor = RatingProcessor(
            runtime, RedisFeatureTables(client), topic=settings.seed_topic, min_ts_ms=settings.event_min_ts_ms,
            max_future_ms=settings.event_max_future_ms, half_life_s=settings.trending_half_life_s,
            probe_user_base=settings.probe_user_base,
        )  # fmt: skip
        processor._add_announced(unknown)
    index_of = runtime.index_of
    movie_idx = np.fromiter((index_of.get(int(m), -1) for m in movies.tolist()), dtype=np.int64, count=len(movies))
    idx = _lookup(movies, movie_idx, mid)
    step = rating / RATING_STEP
    with np.errstate(invalid="ignore"):
        ok = (
            (uid >= MIN_ID) & (uid <= MAX_ID) & (uid < limits.probe_user_base)
            & np.isfinite(rating) & (rating >= MIN_RATING) & (rating <= MAX_RATING) & (step == np.trunc(step))
            & (ts_ms >= limits.min_ts_ms) & (ts_ms <= now_ms + limits.max_future_ms) & (idx >= 0)
        )  # fmt: skip
    flagged = np.flatnonzero(~ok)
    refused: dict[int, str] = {}
    if flagged.size:
        refused = _judge_flagged(flagged, uid, mid, rating, ts_ms, now_ms, limits, index_of.__contains__)
        ok = np.ones_like(ok)
        ok[np.fromiter(refused, dtype=np.int64, count=len(refused))] = False
        if (idx[ok] < 0).any():  # rating_verdict accepted a movie the model cannot fold in: the rules disagree
            raise DataError("bulk seed: a movie accepted by the rating contract has no row in the model")
    return ok, idx, refused


def _lookup(keys_sorted: np.ndarray, values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``values[i]`` where ``x == keys_sorted[i]`` (every ``x`` is a key): a table indexed by id where the ids
    are small and dense enough (ML ids: a few hundred thousand), else a binary search (25.6M rows: ~7 s)."""
    if len(keys_sorted) and keys_sorted[0] >= 0 and keys_sorted[-1] <= max(4 * len(x), 1 << 20):
        table = np.full(int(keys_sorted[-1]) + 1, -1, dtype=values.dtype)
        table[keys_sorted] = values
        return table[x]
    return values[np.searchsorted(keys_sorted, x)]


def _pairs_repeat(uid: np.ndarray, mid: np.ndarray) -> bool:
    """Whether a (user, movie) pair occurs twice (one int64 key per pair where ids allow: cheaper to hash)."""
    if len(uid) and uid.min() >= 0 and mid.min() >= 0 and int(uid.max()) * (int(mid.max()) + 1) < 2**62:
        key = pl.Series(uid * (int(mid.max()) + 1) + mid)
        return key.n_unique() < len(key)
    return bool(pl.DataFrame({"u": uid, "m": mid}).select(pl.struct("u", "m").is_duplicated().any()).item())


def _applied_frame(uid: np.ndarray, idx: np.ndarray, mid: np.ndarray, rating: np.ndarray, ts_ms: np.ndarray,
                   ok: np.ndarray) -> tuple[pl.DataFrame, int]:  # fmt: skip
    """The applied rows sorted by user (row order kept within a user), with per-row fold-in facts; duplicates.

    Columns: ``u``, ``m``, ``i`` (item index), ``r``, ``t`` (ms), ``delta`` (weight change this row makes
    to ``pre``), ``first`` (the user's first rating of the movie), ``latest`` (the movie's latest rating).
    """
    columns = {"u": uid, "m": mid, "i": idx, "r": rating, "t": ts_ms}
    if not ok.all():  # copies only where a row was refused (25.6M rows: ~1.5 s for the first column)
        rows = np.flatnonzero(ok)
        columns = {name: x[rows] for name, x in columns.items()}
    f = pl.DataFrame(columns)
    f = f.with_columns(w=pl.Series(rating_weights(f["r"].to_numpy()).astype(np.float64)))
    dups = 0
    if _pairs_repeat(f["u"].to_numpy(), f["m"].to_numpy()):  # re-ratings (never in a bootstrapped store)
        first_copy = f.select(pl.struct("u", "m", "r", "t").is_first_distinct()).to_series()
        dups = int(f.height - first_copy.sum())
        f = f.filter(first_copy)
        prev = pl.col("w").shift(1).over(["u", "m"])
        latest = pl.int_range(pl.len()).over(["u", "m"]) == pl.len().over(["u", "m"]) - 1
        f = f.with_columns(delta=pl.col("w") - prev.fill_null(0.0), first=prev.is_null(), latest=latest)
    else:
        f = f.with_columns(delta=pl.col("w"), first=pl.lit(True), latest=pl.lit(True))
    return f.sort("u", maintain_order=True), dups


def _user_commands(
    runtime: ModelRuntime, w64: np.ndarray, f: pl.DataFrame, starts: np.ndarray, ends: np.ndarray, users: np.ndarray
) -> tuple[list[bytes | memoryview], int]:
    """One batch's users (rows ``f``, user ``k`` at ``starts[k]:ends[k]``) as Redis protocol bytes: one DEL of
    their keys, then each user's final keys; (the chunks to send in order, the replies they produce).

    The ``rated`` and ``recent`` arguments (~25M and ~10M at ML-32M) are rendered by polars in one pass per
    batch rather than packed one by one: packing them took the writer thread ~20 s of GIL time per 25.6M rows.
    """
    r, t, m, latest = f["r"].to_numpy(), f["t"].to_numpy(), f["m"].to_numpy(), f["latest"].to_numpy()
    delta = f["delta"].to_numpy()
    lo = starts - starts[0]
    counts = ends - starts
    n_ev = np.add.reduceat(f["first"].to_numpy().astype(np.int64), lo)
    norm2 = np.add.reduceat(np.where(latest, f["w"].to_numpy() ** 2, 0.0), lo)
    sums = np.add.reduceat(r, lo)
    sumsq = np.add.reduceat(r * r, lo)
    first_ms = np.minimum.reduceat(t, lo)
    last_ms = np.maximum.reduceat(t, lo)
    # pre: the weight changes in row order (zero changes dropped, as fold_in skips them): CSR keeps the
    # entries' order and adds delta * w_in row by row, which is fold_in's arithmetic
    nz = delta != 0.0
    row_of = np.repeat(np.arange(len(users)), counts)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(row_of[nz], minlength=len(users)))])
    csr = sparse.csr_matrix((delta[nz], f["i"].to_numpy()[nz], indptr), shape=(len(users), w64.shape[0]))
    pre = np.asarray(csr @ w64)
    # the rated entries: each movie's latest row, per user (HSET's movie_id, packed pairs: the codec's)
    rated_rows = np.flatnonzero(latest)
    rated_lo = np.append(np.searchsorted(rated_rows, lo), len(rated_rows))
    rated = _bulk(m[rated_rows], pack_ratings(r[rated_rows], t[rated_rows]))
    # the recent entries: each user's last RECENT_MAX rows, newest first (as LPUSH of the oldest first leaves it)
    kept = np.flatnonzero(np.repeat(ends - starts[0], counts) - np.arange(len(r)) <= keys.RECENT_MAX)
    recent_lo = np.append(np.searchsorted(kept, lo), len(kept))
    seg = np.repeat(np.arange(len(users)), np.diff(recent_lo))
    kept = kept[recent_lo[seg] + recent_lo[seg + 1] - 1 - np.arange(len(kept))]  # reversed within each user
    recent = _bulk(encode_recent_many(m[kept], r[kept], t[kept]))
    weights, version = runtime.weights, runtime.version
    user_keys = [(keys.user(u), keys.user_rated(u), keys.user_recent(u)) for u in users.tolist()]
    heads: list[bytes] = [_pack(("DEL", *(k for ks in user_keys for k in ks)))]
    for k in range(len(users)):
        a, b = int(lo[k]), int(lo[k] + counts[k])
        state = UserState(pre[k], float(norm2[k]), int(n_ev[k]))
        mu, logvar = encode(weights, state)
        rec = UserRecord(
            version=b - a, pre=pre[k], norm2=state.norm2, n_events=state.n_events, mu=mu, logvar=logvar,
            n=b - a, sum=float(sums[k]), sumsq=float(sumsq[k]), first_ms=int(first_ms[k]),
            last_ms=int(last_ms[k]), model_version=version,
        )  # fmt: skip
        heads.append(_pack(("HSET", user_keys[k][0], *encode_user(rec))))
    n_rated, n_recent = np.diff(rated_lo).tolist(), np.diff(recent_lo).tolist()
    rated_heads = [_head("HSET", ks[1], 2 * n) for ks, n in zip(user_keys, n_rated, strict=True)]
    recent_heads = [_head("RPUSH", ks[2], n) for ks, n in zip(user_keys, n_recent, strict=True)]
    chunks = [*heads, *_commands(rated_heads, rated, rated_lo), *_commands(recent_heads, recent, recent_lo)]
    return chunks, 1 + 3 * len(users)


def _pack(command: tuple) -> bytes:
    """One command in the Redis protocol, as redis-py would send it (hiredis packs in C)."""
    if hiredis is not None:
        return hiredis.pack_command(command)
    return b"".join(redis.connection.PythonRespSerializer(6000, redis.connection.Encoder("utf-8", "strict", False)
                                                          .encode).pack(*command))  # fmt: skip


def _head(name: str, key: str, n_args: int) -> bytes:
    """A command's protocol header up to its key; ``n_args`` arguments follow it."""
    return f"*{n_args + 2}\r\n${len(name)}\r\n{name}\r\n${len(key.encode())}\r\n{key}\r\n".encode()


def _bulk(*columns: np.ndarray | pl.Series) -> pl.Series:
    """Row ``i`` of ``columns`` as consecutive protocol bulk strings (``$len\r\nvalue\r\n``, each value's
    decimal or ASCII text): one command's arguments ``i``."""
    names = [f"c{j}" for j in range(len(columns))]
    text = [pl.col(c).cast(pl.String) for c in names]
    parts = [
        p for x in text for p in (pl.lit("$"), x.str.len_bytes().cast(pl.String), pl.lit("\r\n"), x, pl.lit("\r\n"))
    ]
    return pl.DataFrame(dict(zip(names, columns, strict=True))).select(pl.concat_str(parts)).to_series()


def _commands(heads: list[bytes], args: pl.Series, lo: np.ndarray) -> list[bytes | memoryview]:
    """``heads[k]`` followed by ``args[lo[k]:lo[k + 1]]`` for each ``k``: the arguments joined once, then sliced."""
    blob = memoryview(args.str.join("").item().encode("ascii"))
    offsets = np.append(0, np.cumsum(args.str.len_bytes().to_numpy(), dtype=np.int64))[lo].tolist()
    out: list[bytes | memoryview] = []
    for k, head in enumerate(heads):
        out += [head, blob[offsets[k] : offsets[k + 1]]]
    return out


def _send(client: redis.Redis, chunks: list[bytes | memoryview], replies: int) -> None:
    """Send ``chunks`` (protocol bytes of ``replies`` commands) in one write on one connection and read every
    reply: a non-transactional pipeline with no per-command work left in this (the writer) thread."""
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command([b"".join(chunks)])
        failed = None
        for _ in range(replies):
            try:
                conn.read_response()
            except redis.ResponseError as exc:
                failed = failed or exc
    except BaseException:
        conn.disconnect()  # replies may be left unread: never reuse this connection
        raise
    finally:
        pool.release(conn)
    if failed is not None:
        raise failed


def _write_items(
    settings: Settings, client: redis.Redis, f: pl.DataFrame, counts: dict[str, int], prior_half_life_s: float | None
) -> None:
    """Item aggregates, popularity, trending, the prior and its clock over every applied row (final values)."""
    agg = (
        f.lazy().group_by("m").agg(
            n=pl.len(), total=pl.col("r").sum(), tmax=pl.col("t").max(),
            lt=_logsumexp(pl.col("t"), np.log(2.0) / settings.trending_half_life_s),
            lp=_logsumexp(pl.col("t"), np.log(2.0) / prior_half_life_s if prior_half_life_s else 0.0),
        ).sort("m").collect()
    )  # fmt: skip
    mids, n, total = agg["m"].to_list(), agg["n"].to_list(), agg["total"].to_list()
    trending, prior = agg["lt"].to_list(), agg["lp"].to_list()
    sha = client.script_load(_ITEM_LUA)
    for lo in range(0, len(mids), _ITEM_CHUNK):  # packed as a redis-py pipeline would, without its per-call cost
        hi = min(lo + _ITEM_CHUNK, len(mids))
        commands = [("EVALSHA", sha, 1, keys.item(mids[j]), n[j], total[j]) for j in range(lo, hi)]
        commands.append(("ZADD", keys.ITEMS_POPULAR, *_zargs(n[lo:hi], mids[lo:hi])))
        commands.append(("ZADD", keys.ITEMS_TRENDING, *_zargs(trending[lo:hi], mids[lo:hi])))
        if prior_half_life_s is not None:
            commands.append(("ZADD", keys.ITEMS_PRIOR, *_zargs(prior[lo:hi], mids[lo:hi])))
        _send(client, [_pack(c) for c in commands], len(commands))
    if prior_half_life_s is not None and f.height:
        client.hset(keys.ITEMS_PRIOR_CLOCK, mapping={
            "event_ms": int(agg.select(pl.col("tmax").max()).item()), "events": counts["learned"],
            "half_life_s": prior_half_life_s,
        })  # fmt: skip


def _logsumexp(t_ms: pl.Expr, decay: float) -> pl.Expr:
    """``log(sum_e exp(decay * t_e))`` (t in event seconds) of a group, shifted by its max to stay finite."""
    x = decay * t_ms / 1000.0  # the worker's x = decay * ts / 1000.0, same operations
    return x.max() + ((x - x.max()).exp().sum()).log()


def _zargs(scores: list, members: list) -> list:
    out: list = []
    for s, mbr in zip(scores, members, strict=True):
        out += [float(s), mbr]
    return out


def bulk_fold(
    settings: Settings,
    client: redis.Redis,
    runtime: ModelRuntime,
    history: pl.DataFrame,
    *,
    marker: dict[str, str],
    batch_rows: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    after_batch: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> BulkResult:
    """Write the state the per-event seed leaves after ``history`` (module docstring); ``marker``: ``rs:seed``.

    ``after_batch(batches_done)`` runs after each user batch is written (tests interrupt there).
    """
    total = history.height
    result = BulkResult()
    if total == 0:
        return result
    done_rows = marker.get(BULK_ROWS)
    if done_rows is not None and int(done_rows) != total:
        raise DataError(
            f"an interrupted bulk seed of {int(done_rows):,} HISTORY rows is in Redis, this run seeds {total:,}: "
            "rerun it with the same --limit, or `reelstream seed --reset`"
        )
    cursor = int(marker[BULK_USER]) if BULK_USER in marker else None
    client.hset(keys.SEED, BULK_ROWS, total)

    uid = history["user_id"].to_numpy().astype(np.int64)
    mid = history["movie_id"].to_numpy().astype(np.int64)
    rating = history["rating"].to_numpy().astype(np.float32).astype(np.float64)  # an Avro float, as decoded
    ts_ms = history["ts"].to_numpy().astype(np.int64) * 1000
    now_ms = int(clock() * 1000)
    ok, idx, refused = _valid_mask(settings, client, runtime, uid, mid, rating, ts_ms, now_ms)
    f, dups = _applied_frame(uid, idx, mid, rating, ts_ms, ok)
    mine = Counter(why for row, why in refused.items() if cursor is None or uid[row] > cursor)
    result.dead, result.dead_reasons = sum(mine.values()), dict(mine)

    users_sorted = f["u"].to_numpy()
    bounds = np.flatnonzero(np.diff(users_sorted)) + 1
    starts = np.concatenate([[0], bounds]).astype(np.int64)
    ends = np.concatenate([bounds, [f.height]]).astype(np.int64)
    users = users_sorted[starts] if f.height else np.zeros(0, dtype=np.int64)
    first_user = 0 if cursor is None else int(np.searchsorted(users, cursor, side="right"))
    mine_rows = int(ends[-1] - starts[first_user]) if first_user < len(users) else 0
    result.skipped = total - result.dead - mine_rows
    progress = result.skipped + result.dead
    if on_progress is not None:
        on_progress(progress, total)

    w64 = runtime.weights.w_in.astype(np.float64)
    per_batch = batch_rows or settings.seed_bulk_rows
    spans: list[tuple[int, int]] = []  # [users k, hi) per batch: whole users, about per_batch rows
    k = first_user
    while k < len(users):
        hi = max(int(np.searchsorted(starts, starts[k] + per_batch, side="left")), k + 1)
        spans.append((k, hi))
        k = hi

    def written(done: Future[None], k: int, hi: int) -> None:
        nonlocal progress
        done.result()
        result.applied += int(ends[hi - 1] - starts[k])
        result.users += hi - k
        result.batches += 1
        progress += int(ends[hi - 1] - starts[k])
        if on_progress is not None:
            on_progress(progress, total)
        if after_batch is not None:
            after_batch(result.batches)

    def build(k: int, hi: int) -> tuple[list[bytes | memoryview], int]:
        a, b = int(starts[k]), int(ends[hi - 1])
        chunks, replies = _user_commands(runtime, w64, f.slice(a, b - a), starts[k:hi], ends[k:hi], users[k:hi])
        chunks.append(_pack(("HSET", keys.SEED, BULK_USER, int(users[hi - 1]))))  # after them, one connection
        return chunks, replies + 1

    # One batch in flight: Redis ingests batch j (the writer thread waits on the socket, without the GIL)
    # while two builder threads compute batches j + 1 and j + 2: the sparse product and polars' rendering
    # run without the GIL, so one builder's share of them overlaps the other's Python (the per-user loop).
    # Batches are sent in order, each only once the previous one is written.
    with (
        ThreadPoolExecutor(max_workers=_BUILDERS, thread_name_prefix="bulk-seed-build") as builders,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="bulk-seed-writer") as writer,
    ):
        ahead: deque[Future[tuple[list[bytes | memoryview], int]]] = deque()
        todo = iter(spans)
        for span in itertools.islice(todo, _BUILDERS):
            ahead.append(builders.submit(build, *span))
        pending: tuple[Future[None], int, int] | None = None
        for k, hi in spans:
            chunks, replies = ahead.popleft().result()
            for span in itertools.islice(todo, 1):
                ahead.append(builders.submit(build, *span))
            if pending is not None:
                written(*pending)
            pending = (writer.submit(_send, client, chunks, replies), k, hi)
        if pending is not None:
            written(*pending)

    counts = {"applied": f.height, "dead": int((~ok).sum()), "dups": dups, "learned": f.height}
    prior_hl = runtime.item_prior["half_life_s"] if runtime.has_item_prior else None
    _write_items(settings, client, f, counts, prior_hl)
    fence = seed_fence(history)
    pipe = client.pipeline(transaction=True)
    pipe.hset(keys.offsets(settings.seed_topic), "0", fence.offset)
    pipe.hset(keys.fence(settings.seed_topic), "0", fence.identity())
    stats = {"events_applied": counts["applied"], "dead_letters": counts["dead"], "duplicates_skipped": dups}
    pipe.hset(keys.STATS, mapping={k: v for k, v in stats.items() if v})
    pipe.hdel(keys.SEED, BULK_ROWS, BULK_USER)
    pipe.execute()
    return result
