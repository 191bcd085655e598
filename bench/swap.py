"""Hot-swap benchmark: how fast ``streams/swap.py`` re-encodes users' states (no concurrent writer).

    .venv/bin/python bench/swap.py                    # writes bench/results/swap.json
    .venv/bin/python bench/swap.py --users 2000 --ratings 10 --out /tmp/swap.json

It starts its own redis-server on a free port, saves two random models of the real model's shape class
(hidden 256, latent 64) over ml-latest-small's 9,742 movies, folds ``--users`` x ``--ratings`` synthetic
rating events into Redis through the worker's processor on the first model, then times ``run_swap`` to
the second (re-encode from each user's rated hash + the compare-and-set script, ``--batch`` users each).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.runtime import ModelRuntime  # noqa: E402
from reelstream.redis_client import redis_client  # noqa: E402
from reelstream.shell import local_services  # noqa: E402
from schemas.wire import codec_for  # noqa: E402
from streams.events import rating_event, user_key  # noqa: E402
from streams.processor import Message, RatingProcessor  # noqa: E402
from streams.store import RedisFeatureTables  # noqa: E402
from streams.swap import run_swap, start_swap  # noqa: E402

T0_MS = 1_600_000_000_000


def model(folder: Path, name: str, movies: np.ndarray, seed: int) -> ModelRuntime:
    rt = ModelRuntime.random(movies, hidden=256, latent=64, seed=seed)
    rt.metadata.update(model_version=name, item_prior={"beta": 1.0, "half_life_s": 365 * 86400.0})
    rt.save(folder / name)
    return ModelRuntime.load(folder / name)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=5_000)
    ap.add_argument("--ratings", type=int, default=20, help="rating events per user")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/swap.json")
    args = ap.parse_args()
    movies = pl.read_csv(ROOT / "data/ml-latest-small/movies.csv")["movieId"].to_numpy().astype(np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir, models_dir = Path(tmp) / "run", Path(tmp) / "models"
        run_dir.mkdir()
        port = local_services.free_port()
        local_services.start_redis(run_dir, "127.0.0.1", port)
        try:
            client = redis_client(f"redis://127.0.0.1:{port}/0")
            old = model(models_dir, "m0001", movies, 0)
            model(models_dir, "m0002", movies, 1)
            (models_dir / "CURRENT").write_text("m0001")
            proc = RatingProcessor(old, RedisFeatureTables(client), topic="bench", min_ts_ms=0, max_future_ms=10**15,
                                   half_life_s=7 * 86400.0)  # fmt: skip
            codec, rng = codec_for("RatingEvent"), np.random.default_rng(0)
            n = args.users * args.ratings
            users = rng.integers(1, args.users + 1, size=n)
            items = rng.choice(movies, size=n)
            stars = rng.choice([1.0, 2.0, 3.0, 3.5, 4.0, 4.5, 5.0], size=n)
            started = time.perf_counter()
            for lo in range(0, n, 5000):
                proc.run([Message("bench", 0, i, codec.encode(rating_event(int(users[i]), int(items[i]),
                          float(stars[i]), T0_MS + i, "replay")), key=user_key(int(users[i])))
                          for i in range(lo, min(n, lo + 5000))])  # fmt: skip
            seeded_s = time.perf_counter() - started
            load_before = os.getloadavg()[0]
            start_swap(models_dir, client, "m0002")
            summary = run_swap(models_dir, client, batch=args.batch)
            assert summary is not None
            result = {
                "users": summary.users, "events_seeded": n, "seed_seconds": round(seeded_s, 2),
                "swap_seconds": round(summary.seconds, 3), "users_per_s": round(summary.users / summary.seconds),
                "passes": summary.passes, "batch": args.batch, "hidden": 256, "latent": 64,
                "movies": len(movies), "load_avg_before": load_before, "load_avg_after": os.getloadavg()[0],
            }  # fmt: skip
        finally:
            local_services.stop_process(run_dir, "redis")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
