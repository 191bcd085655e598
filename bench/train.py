"""Benchmark the hybrid VAE: training, epoch time at ML-32M width, fold-in and scoring latency.

Writes ``bench/results/train.json``; every figure carries the command that reproduces it::

    .venv/bin/python bench/train.py              # everything (CPU; a GPU too when torch sees one)
    .venv/bin/python bench/train.py --part small # one part: small | synth | latency

* ``small``: ``reelstream train`` on ml-latest-small in a child process (wall time, training
  seconds, peak RSS of the child);
* ``synth``: epoch time on a 1M-rating slice of a synthetic ML-32M-shaped dataset
  (``bootstrap.synth``, 87,585 movies), on the CPU, and on the GPU when there is one;
* ``latency``: fold-in per event and full-catalogue scoring for one user at 87,585 movies.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "train.json"
ML32M_MOVIES = 87_585
SLICE_RATINGS = 1_000_000
SLICE_USERS = 6_280  # 1M ratings at ML-32M's 159 ratings per user


def bench_small() -> dict[str, Any]:
    """``reelstream train`` on ml-latest-small in a child process; peak RSS from the child's rusage."""
    with tempfile.TemporaryDirectory() as var:
        cmd = [str(ROOT / ".venv" / "bin" / "reelstream"), "train", "--data", str(ROOT / "data" / "ml-latest-small"),
               "--no-evaluate"]  # fmt: skip
        env = dict(os.environ, REELSTREAM_VAR_DIR=var, COLUMNS="200")
        started = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        meta = json.loads((Path(var) / "models" / "m0001" / "metadata.json").read_text())
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "command": "reelstream train --data data/ml-latest-small --no-evaluate",
        "wall_seconds_incl_startup": round(wall, 2),
        "training_seconds": round(meta["training_seconds"], 2),
        "epochs": meta["epochs"],
        "best_epoch": meta["best_epoch"],
        "peak_rss_mib": round(peak_kb / 1024, 1),
        "goal": "training <= 60 s on the 2-core CPU",
    }


def _synth_interactions():
    from bootstrap.synth import generate, write_dataset
    from models.data import from_movielens

    data = generate(SLICE_RATINGS, seed=0, users=SLICE_USERS, movies=ML32M_MOVIES)
    with tempfile.TemporaryDirectory() as folder:
        write_dataset(data, Path(folder))
        return from_movielens(Path(folder), split_quantile=1.0)


def bench_synth(interactions: Any = None) -> dict[str, Any]:
    """Seconds per epoch (the second, so start-up costs are out) at 87,585 movies."""
    import torch

    from models.hybrid_vae import HybridVAE

    interactions = interactions or _synth_interactions()
    out: dict[str, Any] = {
        "command": "python bench/train.py --part synth",
        "ratings": len(interactions.history), "users": interactions.n_users, "movies": interactions.n_items,
        "side_features": interactions.n_side,
    }  # fmt: skip
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        model = HybridVAE(max_epochs=2, patience=10, val_fraction=0.0, seed=0, device=device)
        model.fit(interactions)
        times = [r.seconds for r in model.history_]
        out[f"{device}_epoch_seconds"] = round(times[1] - times[0], 2)
        out[f"{device}_first_epoch_seconds"] = round(times[0], 2)
        if device == "cuda":
            out["cuda_device"] = torch.cuda.get_device_name(0)
    return out


def bench_latency() -> dict[str, Any]:
    """Fold-in per event (hidden 256) and scoring one user over 87,585 movies (latent 64) with numpy."""
    from models.runtime import ModelRuntime
    from models.state import cold_state, encode, fold_in

    rng = np.random.default_rng(0)
    runtime = ModelRuntime.random(np.arange(ML32M_MOVIES), hidden=256, latent=64, n_side=300, seed=0)
    w = runtime.weights
    state = cold_state(w)
    items = rng.integers(0, ML32M_MOVIES, size=20_000)
    ratings = rng.choice([1.0, 3.0, 4.0, 5.0], size=20_000)
    started = time.perf_counter()
    for i, r in zip(items.tolist(), ratings.tolist(), strict=True):
        state = fold_in(w, state, i, r)
    fold_us = (time.perf_counter() - started) / len(items) * 1e6
    started = time.perf_counter()
    for _ in range(2_000):
        mu, _ = encode(w, state)
    encode_us = (time.perf_counter() - started) / 2_000 * 1e6
    prior_rt = ModelRuntime.random(np.arange(ML32M_MOVIES), hidden=256, latent=64, n_side=300, seed=0)
    prior_rt.metadata["item_prior"] = {"beta": 1.0, "half_life_s": 30 * 86400.0}
    trending = np.where(rng.random(ML32M_MOVIES) < 0.5, -np.inf, rng.normal(0.0, 2.0, ML32M_MOVIES) + 1800.0)
    prior_ms = []
    for _ in range(300):
        t0 = time.perf_counter()
        prior_rt.scores(mu, trending, 1.55e9)
        prior_ms.append((time.perf_counter() - t0) * 1e3)
    score_ms, topk_ms = [], []
    for _ in range(300):
        t0 = time.perf_counter()
        scores = runtime.scores(mu)
        t1 = time.perf_counter()
        np.argpartition(-scores, 200)[:200]
        t2 = time.perf_counter()
        score_ms.append((t1 - t0) * 1e3)
        topk_ms.append((t2 - t1) * 1e3)
    return {
        "command": "python bench/train.py --part latency",
        "fold_in_us_per_event": round(fold_us, 2),
        "encode_us": round(encode_us, 2),
        "score_ms_median_87585_movies_latent64": round(float(np.median(score_ms)), 3),
        "score_ms_p95": round(float(np.percentile(score_ms, 95)), 3),
        "top200_argpartition_ms_median": round(float(np.median(topk_ms)), 3),
        "score_with_item_prior_ms_median": round(float(np.median(prior_ms)), 3),
        "goals": "fold-in <= 1 ms per event; scoring <= 5 ms",
    }


def bench_latency_single_thread_blas() -> dict[str, Any]:
    """:func:`bench_latency` in a child with ``OPENBLAS_NUM_THREADS=1`` (how a busy server should run numpy)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, __file__, "--part", "latency", "--print-only"], env=env, check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    result = json.loads(out)
    result["command"] = "OPENBLAS_NUM_THREADS=1 python bench/train.py --part latency"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["all", "small", "synth", "latency"], default="all")
    parser.add_argument("--print-only", action="store_true", help="print one part's JSON, write nothing")
    args = parser.parse_args()
    if args.print_only:
        print(json.dumps({"small": bench_small, "synth": bench_synth, "latency": bench_latency}[args.part]()))
        return
    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    parts = ["small", "synth", "latency"] if args.part == "all" else [args.part]
    if "latency" in parts:
        parts.append("latency_single_thread_blas")
    benches = {"small": bench_small, "synth": bench_synth, "latency": bench_latency,
               "latency_single_thread_blas": bench_latency_single_thread_blas}  # fmt: skip
    for part in parts:
        print(f"[bench/train] {part}…", flush=True)
        results[part] = benches[part]()
        results[part]["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        print(json.dumps(results[part], indent=2), flush=True)
    results["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                          "load_average_at_end": os.getloadavg()}  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
