"""The worker's apply path alone, at a real store's shape: plan + commit of STREAM batches against a private Redis.

Why: the end-to-end replay (``bench/scale.py``) mixes the producer, the broker, the worker and Redis on the
same cores and takes 20+ minutes; this isolates the worker's own cost per event (its CPU and Redis's) in a
minute, so changes to ``streams/processor.py`` and ``streams/store.py`` can be compared.

What it does: the first ``--events`` STREAM rows (the order ``reelstream replay`` sends them in), their users'
HISTORY bulk-seeded first (:func:`streams.bulk_seed.bulk_fold`, so each user has a real state, rated hash and
recent list), then batches of ``--batch`` messages through :class:`streams.processor.RatingProcessor` (plan,
then the fenced commit) with the trained model; the first ``--warm`` events are not timed.

    .venv/bin/python bench/worker_core.py --var /work/main/var/bench/scale-1/var --out /tmp/core.json
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bootstrap.store import load_store  # noqa: E402
from models.runtime import ModelRuntime, current_model_dir  # noqa: E402
from reelstream.redis_client import redis_client  # noqa: E402
from reelstream.settings import Settings  # noqa: E402
from reelstream.shell import local_services  # noqa: E402
from schemas.wire import codec_for  # noqa: E402
from streams.bulk_seed import bulk_fold  # noqa: E402
from streams.events import replay_event_id, user_key  # noqa: E402
from streams.online import OnlineRatingModel  # noqa: E402
from streams.processor import Message, RatingProcessor  # noqa: E402
from streams.store import RedisFeatureTables  # noqa: E402

PARTITIONS = 8


def messages(stream: pl.DataFrame, topic: str) -> list[Message]:
    """The rows as the worker receives them (Avro values keyed by user, offsets per partition)."""
    encode = codec_for("RatingEvent").encode
    nxt = [0] * PARTITIONS
    out = []
    for uid, mid, rating, ts in stream.select("user_id", "movie_id", "rating", "ts").iter_rows():
        value = encode({"event_id": replay_event_id(uid, mid, ts * 1000), "user_id": uid, "movie_id": mid,
                        "rating": rating, "event_ts": ts * 1000, "source": "replay"})  # fmt: skip
        p = uid % PARTITIONS
        out.append(Message(topic, p, nxt[p], value, ts * 1000, user_key(uid)))
        nxt[p] += 1
    return out


def timed_call(fn, spent: dict[str, float], name: str):
    """``fn``, adding its wall time (Python + round trip + Redis) to ``spent[name]``."""

    def call(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent[name] += time.perf_counter() - t

    return call


def calls(client) -> dict[str, tuple[int, float]]:
    """{command: (calls, usec)} Redis has run, scripts' redis.call included (INFO commandstats)."""
    stats = client.info("commandstats").items()
    return {k.removeprefix("cmdstat_"): (int(v["calls"]), float(v["usec"])) for k, v in stats if k != "cmdstat_info"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--var", type=Path, required=True, help="A var/ folder with store/ and models/ (read only).")
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--warm", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--profile", type=Path, default=None, help="cProfile the timed part, top functions to FILE.")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    store = load_store(args.var / "store")
    runtime = ModelRuntime.load(current_model_dir(args.var / "models"))
    stream = store.stream.head(args.events)
    users = stream["user_id"].unique()
    history = store.history.filter(pl.col("user_id").is_in(users.to_list()))
    history = history.select("user_id", "movie_id", "rating", "ts")
    settings = Settings()
    with tempfile.TemporaryDirectory(prefix="worker-core-") as tmp:
        port = local_services.free_port()
        pid = local_services.start_redis(Path(tmp), "127.0.0.1", port, settings)
        rproc = psutil.Process(pid)
        try:
            client = redis_client(f"redis://127.0.0.1:{port}/0")
            bulk_fold(settings, client, runtime, history, marker={})
            topic = settings.topic_ratings
            proc = RatingProcessor(
                runtime, RedisFeatureTables(client), topic=topic, min_ts_ms=settings.event_min_ts_ms,
                max_future_ms=settings.event_max_future_ms, half_life_s=settings.trending_half_life_s,
                probe_user_base=settings.probe_user_base, online=OnlineRatingModel(seed=0),
            )  # fmt: skip
            spent = {"read": 0.0, "commit": 0.0}
            for name in spent:
                setattr(proc.store, name, timed_call(getattr(proc.store, name), spent, name))
            msgs = messages(stream, topic)
            batches = [msgs[i : i + args.batch] for i in range(0, len(msgs), args.batch)]
            warm = args.warm // args.batch
            for b in batches[:warm]:
                proc.run(b)
            timed = batches[warm:]
            n = sum(len(b) for b in timed)
            load0 = os.getloadavg()[0]
            c0, r0, k0 = time.process_time(), sum(rproc.cpu_times()[:2]), calls(client)
            prof = cProfile.Profile() if args.profile else None
            t0 = time.perf_counter()
            if prof:
                prof.enable()
            applied = 0
            spent.update(read=0.0, commit=0.0)
            for b in timed:
                applied += proc.run(b).applied
            if prof:
                prof.disable()
            wall = time.perf_counter() - t0
            cpu, rcpu, ncalls = time.process_time() - c0, sum(rproc.cpu_times()[:2]) - r0, calls(client)
            per_cmd = {c: (v[0] - k0.get(c, (0, 0))[0], v[1] - k0.get(c, (0, 0))[1]) for c, v in ncalls.items()}
            ncalls = sum(v[0] for v in per_cmd.values())
            mem = client.info("memory")["used_memory"]
        finally:
            rproc.terminate()
            rproc.wait(10)
    if prof:
        with args.profile.open("w") as f:
            pstats.Stats(prof, stream=f).sort_stats("tottime").print_stats(30)
            pstats.Stats(prof, stream=f).sort_stats("cumulative").print_stats(40)
    result = {
        "command": "python " + " ".join(sys.argv),
        "model": runtime.version,
        "hidden": int(runtime.weights.hidden),
        "events_timed": n,
        "applied": applied,
        "users": int(users.len()),
        "history_rows_seeded": history.height,
        "batch": args.batch,
        "wall_s": round(wall, 2),
        "events_per_s": round(n / wall),
        "worker_cpu_us_per_event": round(cpu / n * 1e6, 1),
        "redis_cpu_us_per_event": round(rcpu / n * 1e6, 1),
        "redis_calls_per_event": round(ncalls / n, 2),
        "store_wall_us_per_event": {k: round(v / n * 1e6, 1) for k, v in spent.items()},
        "redis_per_event": {c: [round(k / n, 2), round(u / n, 1)] for c, (k, u) in sorted(per_cmd.items()) if k},
        "loadavg_1m_before_after": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "redis_used_mib": round(mem / 2**20, 1),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
