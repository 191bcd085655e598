"""What attribution costs the worker: the rating path's plan + commit with and without the attribution ops.

One real redis-server on a free port; a random model of the real shape class (hidden 256, latent 64) over
10,000 movies; ``--events`` synthetic ratings of ``--users`` users in batches of ``stream_batch_max`` through
:class:`streams.processor.RatingProcessor` and :class:`streams.store.RedisFeatureTables`, as the worker runs
them, three ways in one run, alternated over ``--rounds`` rounds (medians reported):

* ``off``: the attribution ops (``R``) taken out of every plan before its commit (the path before
  attribution);
* ``on_no_lists``: the ops in, no user has a served list (each op finds an empty hash);
* ``on_lists``: the ops in, every user holding ``IMPRESSIONS_KEPT`` (20) served lists of 20 movies, written
  by :class:`streams.processor.ImpressionProcessor` first, so every rating looks through 20 lists.

Worker CPU (this process) and Redis CPU (``INFO cpu``) per event are reported next to events/s. Writes
``bench/results/attribution.json``::

    .venv/bin/python bench/attribution.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import redis  # noqa: E402

from models.runtime import ModelRuntime  # noqa: E402
from reelstream.settings import Settings  # noqa: E402
from reelstream.shell import local_services  # noqa: E402
from schemas import redis_keys as keys  # noqa: E402
from schemas.wire import codec_for  # noqa: E402
from streams.events import rating_event, user_key  # noqa: E402
from streams.online import OnlineRatingModel  # noqa: E402
from streams.processor import ImpressionProcessor, Message, RatingProcessor  # noqa: E402
from streams.store import RedisFeatureTables  # noqa: E402

T0 = 1_500_000_000_000


def _ratings(n: int, users: int, movies: np.ndarray, seed: int) -> list[Message]:
    rng = np.random.default_rng(seed)
    codec = codec_for("RatingEvent")
    out = []
    for i in range(n):
        u = int(rng.integers(1, users + 1))
        ev = rating_event(u, int(rng.choice(movies)), float(rng.integers(1, 11)) / 2, T0 + i * 1000, "replay")
        out.append(Message("ratings", u % 8, i, codec.encode(ev), key=user_key(u)))
    return out


def _impressions(users: int, movies: np.ndarray) -> list[Message]:
    rng = np.random.default_rng(1)
    codec = codec_for("ImpressionEvent")
    out = []
    for u in range(1, users + 1):
        for j in range(keys.IMPRESSIONS_KEPT):
            ev = {"impression_id": uuid.uuid4().hex, "user_id": u, "variant": "control", "segment": "heavy",
                  "movie_ids": [int(m) for m in rng.choice(movies, 20, replace=False)], "model_version": "m",
                  "rules_version": "r", "source": "personalised", "cached": False, "degraded": False,
                  "exploration": "none", "served_ms": T0 - j * 1000, "clock": "event"}  # fmt: skip
            out.append(Message("impressions", 0, len(out), codec.encode(ev), key=user_key(u)))
    return out


def _redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _run(client: redis.Redis, runtime: ModelRuntime, msgs: list[Message], batch: int, attribution: bool) -> dict:
    proc = RatingProcessor(runtime, RedisFeatureTables(client), topic="ratings", min_ts_ms=0, max_future_ms=10**15,
                           half_life_s=3600.0, online=OnlineRatingModel(seed=1))  # fmt: skip
    cpu0, r0, t0 = time.process_time(), _redis_cpu(client), time.perf_counter()
    for i in range(0, len(msgs), batch):
        while True:
            plan = proc.plan(msgs[i : i + batch])
            if not attribution:
                plan.ops = [op for op in plan.ops if op[0] != "R"]
            if proc.commit(plan):
                break
    wall, cpu, rcpu = time.perf_counter() - t0, time.process_time() - cpu0, _redis_cpu(client) - r0
    n = len(msgs)
    return {"events_per_s": round(n / wall, 1), "worker_cpu_us_per_event": round(cpu / n * 1e6, 2),
            "redis_cpu_us_per_event": round(rcpu / n * 1e6, 2)}  # fmt: skip


def main(args: argparse.Namespace) -> None:
    movies = np.arange(1, 10_001, dtype=np.int64)
    runtime = ModelRuntime.random(movies, hidden=256, latent=64, seed=3)
    msgs = _ratings(args.events, args.users, movies, seed=2)
    imps = _impressions(args.users, movies)
    batch = Settings().stream_batch_max
    runs: dict[str, list[dict]] = {"off": [], "on_no_lists": [], "on_lists": []}
    with tempfile.TemporaryDirectory(prefix="rs-bench-attr-") as tmp:
        port = local_services.free_port()
        local_services.start_redis(Path(tmp), "127.0.0.1", port)
        try:
            client = redis.Redis(port=port)
            for r in range(args.rounds):
                order = ["off", "on_no_lists", "on_lists"] if r % 2 == 0 else ["on_lists", "on_no_lists", "off"]
                for mode in order:
                    client.flushdb()
                    if mode == "on_lists":
                        imp = ImpressionProcessor(RedisFeatureTables(client), topic="impressions")
                        for i in range(0, len(imps), batch):
                            assert imp.commit(imp.plan(imps[i : i + batch]))
                    runs[mode].append(_run(client, runtime, msgs, batch, attribution=mode != "off"))
                    print(mode, json.dumps(runs[mode][-1]), flush=True)
            hits = {k.decode(): v.decode() for k, v in client.hgetall(keys.experiment("control:heavy")).items()}
        finally:
            local_services.stop_process(Path(tmp), "redis")
    med = {m: {k: sorted(x[k] for x in v)[len(v) // 2] for k in v[0]} for m, v in runs.items()}
    base = med["off"]["events_per_s"]
    out = {
        "benchmark": "attribution", "command": f"python bench/attribution.py --events {args.events} --users "
        f"{args.users} --rounds {args.rounds}", "machine": f"{os.cpu_count()} CPUs",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "batch": batch, "runs": runs, "median": med,
        "cost_pct": {m: round(100 * (1 - med[m]["events_per_s"] / base), 2) for m in ("on_no_lists", "on_lists")},
        "last_on_lists_counters": hits,
    }  # fmt: skip
    out["goals"] = {"attribution<=10%_of_events_per_s": out["cost_pct"]["on_lists"] <= 10.0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({"median": med, "cost_pct": out["cost_pct"]}))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--users", type=int, default=2_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "attribution.json")
    main(ap.parse_args())
