"""Benchmark: Redis bytes per user and per rating, and what the compact encodings cost the gateway.

    .venv/bin/python bench/redis_memory.py --ratings-csv /tmp/s2m/ratings.csv
    .venv/bin/python bench/redis_memory.py --measure redis://127.0.0.1:16391/0 --label seeded   # a live Redis

The synthetic set comes from ``reelstream synth --ratings 2000000 --out /tmp/s2m`` (12,559 users, the
long-tailed activity of MovieLens: 159 ratings a user on average). For each variant a fresh redis-server is
started (``reelstream.shell.local_services.start_redis``, with the variant's listpack limits) and every user
is written as
the worker leaves them: ``rs:user:{uid}`` (random ``pre`` [256] and ``mu``/``logvar`` [64]: their bytes do
not depend on the values), ``:rated`` (the latest rating of each movie) and ``:recent`` (the newest
``RECENT_MAX`` events). Variants: the ``legacy`` encodings (``"4.5:1700000000000"`` rated values,
``"31:4.5:1700000000000"`` recent entries: what main wrote) and the ``compact`` codec of
``schemas/user_record.py`` (packed integers), each at Redis's default limits (512 entries, 64 bytes: main
ran with them) and at the settings' (``redis_hash_max_listpack_*``); ``compact`` at 1024 entries (the next
step up); and ``compact-f32pre``, ``pre`` as float32 (not adopted). ``--measure`` reads the same figures
off a Redis already holding a state (``reelstream seed``: the worker's real path, with the item tables too).

Per variant: ``INFO memory`` used_memory over the empty server's, ``MEMORY USAGE`` (SAMPLES 0: exact)
summed per key kind with ``OBJECT ENCODING`` counts, bytes per user and per rating, and the extrapolation
``bytes(U, R) = U * per_user + R * per_rating`` to ML-32M (200,948 users, 32,000,204 ratings; valid for
the same activity distribution, which synth keeps at every scale). The gateway's cost: one
``RedisState.user(uid, details=False)`` (a pipeline of two HGETALLs, then :func:`decode_user` and
:func:`decode_rated_at`; round trip included) and the decode alone, for users at the median, p90, p99
and largest rated-set size; and the server's time per HGET / HSET of one ``rated`` field (a Lua loop,
no round trip), which is what a listpack's linear scan costs the worker. Timings on the shared 2-core box
are upper bounds. Results: ``bench/results/redis_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.state import RedisState  # noqa: E402
from reelstream.settings import Settings  # noqa: E402
from reelstream.shell import local_services  # noqa: E402
from schemas import redis_keys as keys  # noqa: E402
from schemas.user_record import (  # noqa: E402
    UserRecord,
    decode_rated_at,
    decode_user,
    encode_rated,
    encode_recent,
    encode_user,
)

ML32M_USERS, ML32M_RATINGS = 200_948, 32_000_204
HIDDEN, LATENT = 256, 64
DEFAULT_LIMITS = (512, 64)  # Redis's own hash-max-listpack-entries / -value (6.2 and 7.x alike)


# --- the two encodings --------------------------------------------------------------------------------
def legacy_user(rec: UserRecord) -> list[Any]:
    """``rs:user:{uid}`` as main wrote it (unchanged: ``encode_user``)."""
    return encode_user(rec)


def legacy_rated(ratings: dict[int, tuple[float, int]]) -> list[Any]:
    out: list[Any] = []
    for mid, (r, ts) in ratings.items():
        out += [mid, f"{float(r)!r}:{int(ts)}"]
    return out


def legacy_recent(mid: int, r: float, ts: int) -> str:
    return f"{mid}:{float(r)!r}:{ts}"


def f32_user(rec: UserRecord) -> list[Any]:
    """``encode_user`` with ``pre`` as float32 bytes: measured, not adopted (schemas/user_record.py says why)."""
    flat = encode_user(rec)
    at = flat.index("pre")
    flat[at + 1] = np.asarray(rec.pre, dtype="<f4").tobytes()
    return flat


ENCODINGS = {
    "legacy": (legacy_user, legacy_rated, legacy_recent),
    "compact": (encode_user, encode_rated, encode_recent),
    "compact-f32pre": (f32_user, encode_rated, encode_recent),
}


# --- writing a state ----------------------------------------------------------------------------------
def load_users(csv: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(bounds, users, movies, ratings, ts_ms) sorted by user then time; user u's rows are bounds[u]:bounds[u+1]."""
    df = pl.read_csv(csv).sort(["userId", "timestamp"])
    users = df["userId"].to_numpy()
    bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
    return (bounds, users, df["movieId"].to_numpy(), df["rating"].to_numpy().astype(float),
            df["timestamp"].to_numpy().astype(np.int64) * 1000)  # fmt: skip


def write_state(client: redis.Redis, data: tuple[np.ndarray, ...], encoding: str) -> dict[str, int]:
    """Every user of ``data`` written as the worker leaves them, in ``encoding``; returns the counts."""
    bounds, users, movies, ratings, ts = data
    user_enc, rated_enc, recent_enc = ENCODINGS[encoding]
    rng = np.random.default_rng(0)
    pipe = client.pipeline(transaction=False)
    n_rated = 0
    for k in range(len(bounds) - 1):
        lo, hi = bounds[k], bounds[k + 1]
        uid = int(users[lo])
        mids, rs, tss = movies[lo:hi].tolist(), ratings[lo:hi].tolist(), ts[lo:hi].tolist()
        latest = {m: (r, t) for m, r, t in zip(mids, rs, tss, strict=True)}
        n_rated += len(latest)
        rec = UserRecord(
            version=hi - lo, pre=rng.standard_normal(HIDDEN), norm2=float(len(latest)), n_events=len(latest),
            mu=rng.standard_normal(LATENT).astype(np.float32), logvar=rng.standard_normal(LATENT).astype(np.float32),
            n=hi - lo, sum=float(sum(rs)), sumsq=float(sum(r * r for r in rs)), first_ms=min(tss), last_ms=max(tss),
            model_version="m0001",
        )  # fmt: skip
        pipe.hset(keys.user(uid), mapping=dict(zip(*[iter(user_enc(rec))] * 2, strict=True)))
        flat = rated_enc(latest)
        for at in range(0, len(flat), 2000):
            pipe.hset(keys.user_rated(uid), mapping=dict(zip(*[iter(flat[at : at + 2000])] * 2, strict=True)))
        newest = [recent_enc(m, r, t) for m, r, t in zip(mids[::-1], rs[::-1], tss[::-1], strict=True)]
        pipe.rpush(keys.user_recent(uid), *newest[: keys.RECENT_MAX])
        if k % 200 == 199:
            pipe.execute()
    pipe.execute()
    return {"users": len(bounds) - 1, "ratings": len(users), "rated_entries": n_rated}


# --- measuring ----------------------------------------------------------------------------------------
def kind_of(key: str) -> str:
    head = keys.user(0)[:-1]
    if key.startswith(head):
        rest = key[len(head) :]
        return "user" if rest.isdigit() else rest.split(":", 1)[1] if ":" in rest else "user?"
    if key.startswith(keys.item(0)[:-1]):
        return "item"
    if key.startswith(keys.movie(0)[:-1]):
        return "movie"
    return "other"


def measure(client: redis.Redis, baseline: int) -> dict[str, Any]:
    """used_memory over ``baseline``, and MEMORY USAGE / OBJECT ENCODING per key kind."""
    names = [k.decode() for k in client.scan_iter(match=f"{keys.PREFIX}:*", count=5000)]
    per_kind: dict[str, dict[str, Any]] = {}
    for at in range(0, len(names), 2000):
        chunk = names[at : at + 2000]
        pipe = client.pipeline(transaction=False)
        for name in chunk:
            pipe.memory_usage(name, samples=0)
            pipe.object("encoding", name)
        replies = pipe.execute()
        for name, used, enc in zip(chunk, replies[::2], replies[1::2], strict=True):
            kind = per_kind.setdefault(kind_of(name), {"keys": 0, "bytes": 0, "encodings": Counter()})
            kind["keys"] += 1
            kind["bytes"] += int(used or 0)
            kind["encodings"][enc.decode() if isinstance(enc, bytes) else str(enc)] += 1
    info = client.info("memory")
    for kind in per_kind.values():
        kind["bytes_per_key"] = round(kind["bytes"] / kind["keys"], 1)
        kind["encodings"] = dict(kind["encodings"])
    return {"used_memory": info["used_memory"] - baseline, "used_memory_rss": info["used_memory_rss"],
            "used_memory_total": info["used_memory"], "keys": len(names), "per_kind": per_kind}  # fmt: skip


def per_unit(m: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
    """Bytes per user and per rating, and the ML-32M extrapolation (see the module docstring)."""
    kinds = m["per_kind"]
    users, ratings = counts["users"], counts["ratings"]
    user_bytes = sum(kinds.get(k, {}).get("bytes", 0) for k in ("user", "recent"))
    rated_bytes = kinds.get("rated", {}).get("bytes", 0)
    # what MEMORY USAGE does not see (the keyspace's own table, allocator slack) spread per key, i.e. per user
    residual = m["used_memory"] - sum(k["bytes"] for k in kinds.values())
    per_user = (user_bytes + residual) / users
    per_rating = rated_bytes / ratings
    return {
        "bytes_per_user_total": round(m["used_memory"] / users, 1),
        "bytes_per_rating_total": round(m["used_memory"] / ratings, 1),
        "per_user": round(per_user, 1),
        "per_rating": round(per_rating, 2),
        "formula": f"bytes = {per_user:.0f} * users + {per_rating:.1f} * ratings",
        "ml32m_gib": round((per_user * ML32M_USERS + per_rating * ML32M_RATINGS) / 2**30, 3),
    }


def sizes(client: redis.Redis) -> dict[str, int]:
    """A user at the median, p90, p99 and largest ``rated`` size: {label: uid}."""
    head = keys.user(0)[:-1]
    names = [k.decode() for k in client.scan_iter(match=f"{head}*:rated", count=5000)]
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hlen(name)
    lens = pipe.execute()
    order = np.argsort(lens)
    pick = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "max": 1.0}
    out = {}
    for label, q in pick.items():
        i = order[min(int(q * len(order)), len(order) - 1)]
        out[label] = int(names[i][len(head) :].split(":")[0])
    return out


_LOOP = """
local key, field, n, write = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
local v = redis.call('HGET', key, field)
for _ = 1, n do
  if write then redis.call('HSET', key, field, v) else redis.call('HGET', key, field) end
end
return 1
"""


def read_costs(url: str, client: redis.Redis, reps: int) -> dict[str, Any]:
    """Per user size: the gateway's read+decode (round trip included), the decode alone, server HGET/HSET."""
    state = RedisState(url)
    loop = client.register_script(_LOOP)
    out: dict[str, Any] = {}
    for label, uid in sizes(client).items():
        n = client.hlen(keys.user_rated(uid))
        field = client.hkeys(keys.user_rated(uid))[-1]  # the last field: a listpack scans past all others
        state.user(uid, details=False)
        took = []
        for _ in range(reps):
            t = time.perf_counter()
            state.user(uid, details=False)
            took.append(time.perf_counter() - t)
        raw_user, raw_rated = client.hgetall(keys.user(uid)), client.hgetall(keys.user_rated(uid))
        dec = []
        for _ in range(reps):
            t = time.perf_counter()
            decode_user(raw_user)
            decode_rated_at(raw_rated)
            dec.append(time.perf_counter() - t)
        server = {}
        for op, write in (("hget", "0"), ("hset", "1")):
            loops = 2000
            t = time.perf_counter()
            loop(keys=[keys.user_rated(uid)], args=[field, loops, write])
            server[f"server_{op}_us"] = round((time.perf_counter() - t) / loops * 1e6, 3)
        out[label] = {"user": uid, "rated": n, "encoding": client.object("encoding", keys.user_rated(uid)).decode(),
                      "read_decode_us_median": round(statistics.median(took) * 1e6, 1),
                      "read_decode_us_p90": round(float(np.quantile(took, 0.9)) * 1e6, 1),
                      "decode_only_us_median": round(statistics.median(dec) * 1e6, 1), **server}  # fmt: skip
    state.close()
    return out


_BUILD = """
local key, n = KEYS[1], tonumber(ARGV[1])
redis.call('DEL', key)
local args = {}
for j = 1, n do
  args[#args + 1] = tostring(j * 7)
  args[#args + 1] = tostring(17000000000000 + j * 10 + j % 10)
  if #args == 1000 or j == n then
    redis.call('HSET', key, unpack(args))
    args = {}
  end
end
return 1
"""


def scan_costs(client: redis.Redis, sizes_: list[int], rounds: int) -> dict[str, Any]:
    """Server time (Lua loops, no round trip) of one ``rated``-like hash of N compact entries: building it
    with HSETs of 500 fields (a bulk write; Lua's unpack limit), HGET of its last field (a listpack's worst
    case, linear) and HGETALL, as a listpack (limit above N) and as a hash table (limit below N)."""
    build, loop = client.register_script(_BUILD), client.register_script(_LOOP)
    saved = client.config_get("hash-max-ziplist-entries")["hash-max-ziplist-entries"]
    out: dict[str, Any] = {}
    try:
        for n in sizes_:
            for layout, limit in (("listpack", n + 1), ("hashtable", max(n // 2, 1))):
                client.config_set("hash-max-ziplist-entries", limit)
                key = f"bench:scan:{n}"
                t = time.perf_counter()
                for _ in range(rounds):
                    build(keys=[key], args=[n])
                build_us = (time.perf_counter() - t) / rounds * 1e6
                enc = client.object("encoding", key).decode()
                loops = 2000
                t = time.perf_counter()
                loop(keys=[key], args=[str(n * 7), loops, "0"])
                hget_us = (time.perf_counter() - t) / loops * 1e6
                t = time.perf_counter()
                for _ in range(rounds):
                    client.hgetall(key)
                hgetall_us = (time.perf_counter() - t) / rounds * 1e6
                out[f"{n}/{layout}"] = {"encoding": enc, "bytes": client.memory_usage(key, samples=0),
                                        "build_one_hset_us": round(build_us, 1), "hget_last_us": round(hget_us, 2),
                                        "hgetall_round_trip_us": round(hgetall_us, 1)}  # fmt: skip
                client.delete(key)
    finally:
        client.config_set("hash-max-ziplist-entries", saved)
    return out


def run_variant(
    data: tuple[np.ndarray, ...], encoding: str, limits: tuple[int, int], reps: int, scan: list[int] | None = None
) -> dict[str, Any]:
    settings = Settings(redis_hash_max_listpack_entries=limits[0], redis_hash_max_listpack_value=limits[1])
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        port = local_services.free_port()
        local_services.start_redis(run_dir, "127.0.0.1", port, settings)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            client = redis.Redis.from_url(url)
            baseline = client.info("memory")["used_memory"]
            t = time.perf_counter()
            counts = write_state(client, data, encoding)
            write_s = time.perf_counter() - t
            m = measure(client, baseline)
            out = {"encoding": encoding, "hash_max_listpack_entries": limits[0],
                   "hash_max_listpack_value": limits[1], **counts, "write_s": round(write_s, 1),
                   **per_unit(m, counts), "memory": m, "gateway_read": read_costs(url, client, reps)}  # fmt: skip
            if scan:
                out["scan_costs"] = scan_costs(client, scan, max(reps // 10, 5))
            return out
        finally:
            local_services.stop_process(run_dir, "redis")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ratings-csv", type=Path, help="a MovieLens-style ratings.csv (reelstream synth --out)")
    ap.add_argument("--measure", help="measure this Redis (redis://...) as it is, instead of writing states")
    ap.add_argument("--label", default="live")
    ap.add_argument("--ratings", type=int, help="with --measure: the ratings it holds (else HLEN sum of rated)")
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--scan-sizes", default="128,256,512,1024,2048,4096")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/redis_memory.json")
    args = ap.parse_args()
    doc: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    doc.update(machine=platform.machine(), cpus=os.cpu_count(), python=platform.python_version())
    command = " ".join([".venv/bin/python bench/redis_memory.py", *sys.argv[1:]])
    if args.measure:
        client = redis.Redis.from_url(args.measure)
        m = measure(client, 0)
        users = m["per_kind"].get("user", {}).get("keys", 0)
        ratings = args.ratings or sum(
            client.hlen(k) for k in client.scan_iter(match=f"{keys.user(0)[:-1]}*:rated", count=5000)
        )
        cfg = client.config_get("hash-max-*")
        doc.setdefault("measured", {})[args.label] = {
            "command": command, "users": users, "ratings": ratings, "config": dict(cfg),
            "redis_version": client.info("server")["redis_version"],
            **per_unit(m, {"users": users, "ratings": ratings}),
            "memory": m, "gateway_read": read_costs(args.measure, client, args.reps),
        }  # fmt: skip
    else:
        data = load_users(args.ratings_csv)
        s = Settings()
        ours = (s.redis_hash_max_listpack_entries, s.redis_hash_max_listpack_value)
        variants = {}
        plan = [(e, lim) for e in ("legacy", "compact") for lim in (DEFAULT_LIMITS, ours)]
        for encoding, limits in [*plan, ("compact", (1024, ours[1])), ("compact-f32pre", ours)]:
            name = f"{encoding}@{limits[0]}/{limits[1]}"
            scan = [int(x) for x in args.scan_sizes.split(",")] if (encoding, limits) == ("compact", ours) else None
            v = variants[name] = run_variant(data, encoding, limits, args.reps, scan)
            print(f"{name}: {v['memory']['used_memory']:,} B, {v['formula']}, ML-32M {v['ml32m_gib']} GiB", flush=True)
        doc["command"] = f"reelstream synth --ratings 2000000 --out /tmp/s2m; {command}"
        doc["load_avg"] = os.getloadavg()[0]
        doc["variants"] = variants
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({k: v for k, v in doc.items() if k not in ("variants", "measured")}, indent=2))


if __name__ == "__main__":
    main()
