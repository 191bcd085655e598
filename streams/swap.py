"""The hot swap: a promoted model goes live while ingestion continues, with no rewind (docs/models.md).

A user's state (``rs:user:{uid}``: ``pre``, ``norm2``, ``n_events``, ``mu``, ``logvar``) is a function of
the model's weights and of the user's *latest rating per movie* (:func:`models.state.refold`), which
``rs:user:{uid}:rated`` holds. So a new model needs no replay: each state is re-encoded from its rated
hash, in batches, while the worker goes on folding events.

1. :func:`start_swap` checks the new model can take over (:func:`models.registry.swap_problem`), then in
   one MULTI sets ``rs:model`` (``serving`` = new, ``previous`` = old, ``swap`` = running) and ``rs:seed``
   ``swap_to`` (so the rebuild check accepts both versions meanwhile), then points ``CURRENT`` at it.
   From the next batch on the worker starts new users on the new model; every commit checks the serving
   model it read, so no batch planned before the switch lands after it.
2. :func:`run_swap` SCANs the users; each one whose ``model_version`` is not the new one is re-encoded
   and written by a compare-and-set script (:data:`_CAS_LUA`): only if ``version`` and
   ``model_version`` are still the ones read. A worker update in between (it bumps ``version``) makes
   the write a miss, retried in the next pass; a worker batch planned before the re-encode is refused
   by its own commit check (``streams/store.py`` Checks) and re-planned on the new model. Nothing is
   lost or applied twice: the swap never touches ``version``, the statistics, ``rated`` or ``recent``,
   only the model-dependent fields. Users on the old model keep being folded with it until then; the
   gateway scores each user with the model its state names.
3. Passes repeat until one finds no user left on another model: then ``swap`` = done, and ``rs:seed``
   names the new model (a later rebuild uses it, as it uses ``CURRENT``).

A swapper killed midway is simply run again (:func:`run_swap` resumes from ``rs:model``); so is a worker
restarted mid-swap (the state is in Redis, and it loads each model a state names from var/models).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from models.artifacts import point_current
from models.registry import ModelSet, swap_problem
from models.runtime import ModelRuntime, current_model_dir
from models.state import encode, refold
from reelstream.errors import ModelError
from schemas import redis_keys as keys
from schemas.movie_record import decode_movie
from schemas.side_features import SideEncoder
from schemas.user_record import RecordError, decode_rated, decode_user, encode_user

__all__ = ["DONE", "RUNNING", "SwapSummary", "model_pointer", "reencode", "run_swap", "serving_model", "start_swap"]

log = logging.getLogger(__name__)

RUNNING, DONE = "running", "done"
#: The fields a re-encode writes: everything in ``rs:user:{uid}`` that depends on the model's weights.
MODEL_FIELDS = ("pre", "norm2", "n_events", "mu", "logvar", "model_version")
#: Passes over the users before giving up (each pass retries only what a concurrent update moved).
MAX_PASSES = 1000

#: KEYS = the users' state keys, then rs:model. ARGV = n fields, then per user: version read, model_version
#: read ('' none), then its fields' values (in the fields' order, after the names: ARGV[2 .. 1 + nf]).
#: Returns one 1 (written) or 0 (moved since it was read: retry) per user; counts them in rs:model.
_CAS_LUA = """
local nf = tonumber(ARGV[1])
local out = {}
local i = 2 + nf
local done, missed = 0, 0
for u = 1, #KEYS - 1 do
  local v = redis.call('HMGET', KEYS[u], 'version', 'model_version')
  if (v[1] or '') == ARGV[i] and (v[2] or '') == ARGV[i + 1] then
    local args = {}
    for f = 1, nf do
      args[#args + 1] = ARGV[1 + f]
      args[#args + 1] = ARGV[i + 1 + f]
    end
    redis.call('HSET', KEYS[u], unpack(args))
    out[u] = 1
    done = done + 1
  else
    out[u] = 0
    missed = missed + 1
  end
  i = i + 2 + nf
end
local model = KEYS[#KEYS]
redis.call('HINCRBY', model, 'users', done)
redis.call('HINCRBY', model, 'retries', missed)
return out
"""


@dataclass
class SwapSummary:
    """What one :func:`run_swap` call did."""

    source: str  #: the model users moved from
    target: str  #: the model they moved to
    users: int = 0  #: states re-encoded by this call
    retries: int = 0  #: writes refused because the worker updated the user meanwhile (retried)
    passes: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        return (f"{self.source} -> {self.target}: {self.users:,} users re-encoded in {self.passes} pass(es), "
                f"{self.retries:,} retried after a concurrent update, {self.seconds:.1f} s")  # fmt: skip


def model_pointer(client: redis.Redis) -> dict[str, str]:
    """``rs:model`` as text (empty: no swap ever ran; ``CURRENT`` serves)."""
    return keys.text_hash(client.hgetall(keys.MODEL))


def serving_model(models_dir: Path, client: redis.Redis) -> str:
    """The model folder users' states belong to now: ``rs:model`` ``serving``, else the seeded model
    (``rs:seed`` ``model_version``; ``reelstream train`` may have moved ``CURRENT`` past it), else ``CURRENT``."""
    serving = model_pointer(client).get("serving")
    if serving:
        return serving
    seeded = client.hget(keys.SEED, "model_version")
    if seeded and (models_dir / keys.text(seeded)).is_dir():
        return keys.text(seeded)
    return current_model_dir(models_dir).name


def start_swap(models_dir: Path, client: redis.Redis, target: str) -> str:
    """Make ``target`` the serving model and start the swap to it; returns the model users move from.

    Idempotent for a swap to ``target`` already started. ModelError (one line) when ``target`` cannot
    take over from the serving model, or another swap is still running.
    """
    models = ModelSet(models_dir)
    pointer = model_pointer(client)
    serving = serving_model(models_dir, client)
    if serving == target:
        if pointer.get("swap") == RUNNING:  # started before (the starter may have died before CURRENT moved)
            _mark_started(models_dir, client, target)
            return pointer.get("swap_from", target)
        raise ModelError(f"model {target} is already serving")
    if pointer.get("swap") == RUNNING:
        raise ModelError(f"the swap to {serving} is still running: finish it first (reelstream swap)")
    old, new = ModelRuntime.load(models_dir / serving), models.load(target)  # the serving folder, whatever it names
    problem = swap_problem(old, new)
    if problem is not None:
        raise ModelError(f"cannot swap to model {target}: {problem}")
    pipe = client.pipeline(transaction=True)
    pipe.hset(keys.MODEL, mapping={"serving": target, "previous": serving, "swap": RUNNING, "swap_from": serving,
                                   "users": 0, "retries": 0, "started_ms": int(time.time() * 1000)})  # fmt: skip
    pipe.hdel(keys.MODEL, "finished_ms")
    pipe.execute()
    _mark_started(models_dir, client, target)
    log.info("swap %s -> %s started", serving, target)
    return serving


def _mark_started(models_dir: Path, client: redis.Redis, target: str) -> None:
    """After ``rs:model`` names the swap: ``rs:seed`` ``swap_to`` (the rebuild check accepts either model's
    states), then ``CURRENT`` (a restarted worker, gateway or rebuild loads the new model). Idempotent."""
    if client.exists(keys.SEED):
        client.hset(keys.SEED, "swap_to", target)
    point_current(models_dir, target)


def reencode(rt: ModelRuntime, raw_state: dict[Any, Any], raw_rated: dict[Any, Any]) -> list[Any]:
    """The model-dependent fields of one user re-encoded with ``rt`` (flat HSET arguments, ``MODEL_FIELDS``).

    KeyError names a rated movie ``rt`` has no row for (the caller gives announced movies theirs first).
    """
    rec = decode_user(raw_state)
    rated = decode_rated(raw_rated)
    latest = [(rt.index_of[mid], r) for mid, r in sorted(rated.items())]
    state = refold(rt.weights, latest)
    rec.pre, rec.norm2, rec.n_events = state.pre, state.norm2, state.n_events
    rec.mu, rec.logvar = encode(rt.weights, state)
    rec.model_version = rt.version
    flat = encode_user(rec)
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    return [fields[f] for f in MODEL_FIELDS]


def _user_ids(names: list[bytes | str]) -> list[int]:
    head = len(keys.user(0)) - 1
    return [int(tail) for tail in (keys.text(n)[head:] for n in names) if tail.isdigit()]


def _add_announced(client: redis.Redis, rt: ModelRuntime, movie_ids: set[int]) -> None:
    """Rows for movies announced by MovieEvents, from their side features (as the worker gives them)."""
    side = SideEncoder.from_metadata(rt.metadata, rt.side_in.shape[0])
    for mid in sorted(movie_ids):
        raw = client.hgetall(keys.movie(mid))
        if not raw:
            continue
        try:
            movie = decode_movie(keys.text_hash(raw))
        except RecordError as exc:
            log.warning("%s: %s", keys.movie(mid), exc)
            continue
        rt.add_item(mid, side.vector(movie.genres, movie.year, movie.tags))


def run_swap(
    models_dir: Path,
    client: redis.Redis,
    *,
    batch: int = 500,
    on_progress: Callable[[int, int], None] | None = None,
    on_batch: Callable[[list[int]], None] | None = None,
) -> SwapSummary | None:
    """Re-encode every user not on the serving model yet (resumable); None when no swap is running.

    ``on_progress(re-encoded so far, users seen in this pass)`` after each batch; ``on_batch(user ids)`` between
    the batch's reads and its write (tests interleave worker updates there).
    """
    pointer = model_pointer(client)
    if pointer.get("swap") != RUNNING:
        return None
    target = pointer["serving"]
    rt = ModelSet(models_dir).load(target)
    _mark_started(models_dir, client, target)  # again: a starter killed before its last steps left them undone
    summary = SwapSummary(pointer.get("swap_from", "?"), target)
    started = time.perf_counter()
    cas = client.register_script(_CAS_LUA)
    while True:
        summary.passes += 1
        stale = seen = 0
        cursor = 0
        while True:
            cursor, names = client.scan(cursor, match=keys.user(0)[:-1] + "*", count=batch)
            uids = _user_ids(names)
            if uids:
                moved, retried, n_stale = _swap_batch(client, cas, rt, uids, on_batch)
                summary.users += moved
                summary.retries += retried
                stale += n_stale
                seen += len(uids)
                if on_progress is not None:
                    on_progress(summary.users, seen)
            if cursor == 0:
                break
        if stale == 0:
            break
        if summary.passes >= MAX_PASSES:
            raise ModelError(f"the swap to {target} did not converge in {MAX_PASSES} passes; run it again")
    pipe = client.pipeline(transaction=True)
    pipe.hset(keys.MODEL, mapping={"swap": DONE, "finished_ms": int(time.time() * 1000)})
    pipe.execute()
    if client.exists(keys.SEED):
        pipe = client.pipeline(transaction=True)
        pipe.hset(keys.SEED, "model_version", target)
        pipe.hdel(keys.SEED, "swap_to")
        pipe.execute()
    summary.seconds = time.perf_counter() - started
    log.info("swap done: %s", summary)
    return summary


def _swap_batch(
    client: redis.Redis, cas: Any, rt: ModelRuntime, uids: list[int], on_batch: Callable[[list[int]], None] | None
) -> tuple[int, int, int]:
    """Re-encode the batch's users not on ``rt``: (written, refused by the CAS, not on ``rt`` when read);
    a user whose record does not decode is left as it is and not counted."""
    pipe = client.pipeline(transaction=False)
    for uid in uids:
        pipe.hgetall(keys.user(uid))
        pipe.hgetall(keys.user_rated(uid))
    replies = pipe.execute()
    todo = []
    for uid, state, rated in zip(uids, replies[::2], replies[1::2], strict=True):
        if not state or state.get(b"model_version", b"").decode() == rt.version:
            continue
        todo.append((uid, state, rated))
    if not todo:
        return 0, 0, 0
    unknown = {int(m) for _, _, rated in todo for m in rated if int(m) not in rt.index_of}
    if unknown:
        _add_announced(client, rt, unknown)
    key_list, args = [], [len(MODEL_FIELDS), *MODEL_FIELDS]
    corrupt = 0
    for uid, state, rated in todo:
        try:
            values = reencode(rt, state, rated)
        except KeyError as exc:
            raise ModelError(f"user {uid} rated movie {exc.args[0]}, which model {rt.version} has no row for") from None
        except RecordError as exc:  # the worker dead-letters its events too (corrupt_user_state)
            log.warning("user %d: %s; left on its model", uid, exc)
            corrupt += 1
            continue
        key_list.append(keys.user(uid))
        args += [state.get(b"version", b""), state.get(b"model_version", b""), *values]
    if not key_list:
        return 0, 0, 0
    if on_batch is not None:
        on_batch([uid for uid, _, _ in todo])
    written = cas(keys=[*key_list, keys.MODEL], args=args)
    done = sum(int(w) for w in written)
    return done, len(written) - done, len(todo) - corrupt
