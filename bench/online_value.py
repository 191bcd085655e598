"""Do the online model's predictions add anything? ``bench/results/online_value.json``.

Why: the worker's river BiasedMF (``streams/online.py``) is kept for its prequential error and the ADWIN
alarm on it; if a running mean foresaw ratings as well, its predictions (and their CPU) would be dropped.
This walks a bootstrapped store's HISTORY then STREAM in event-time order, every predictor predicting each
rating before it learns it, and reports each one's MAE over STREAM:

* ``biased_mf``: ``streams.online.OnlineRatingModel`` as the worker runs it;
* ``user_item_mean``: the shrunk user mean ``(sum_u + K g) / (n_u + K)`` plus the item's shrunk offset
  ``(sum_i - n_i g) / (n_i + K)``, ``g`` the running global mean, ``K`` = 5;
* ``user_mean``: the shrunk user mean alone; ``global_mean``: ``g``.

Predictions are clipped to 0.5..5.0 for every predictor alike.

    .venv/bin/python bench/online_value.py                 # the bundled set (bootstraps a private copy)
    .venv/bin/python bench/online_value.py --var DIR       # a var/ folder with store/
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bootstrap.store import load_store  # noqa: E402
from streams.online import OnlineRatingModel  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "online_value.json"
K = 5.0


def walk(var: Path) -> dict[str, object]:
    store = load_store(var / "store")
    cols = ("user_id", "movie_id", "rating", "ts")
    events = pl.concat([store.history.select(cols), store.stream.select(cols)]).sort("ts", maintain_order=True)
    cut = store.history.height
    model = OnlineRatingModel(seed=0)
    err = dict.fromkeys(("biased_mf", "user_item_mean", "user_mean", "global_mean"), 0.0)
    u_sum: dict[int, float] = {}
    u_n: dict[int, int] = {}
    i_sum: dict[int, float] = {}
    i_n: dict[int, int] = {}
    g_sum, scored = 0.0, 0
    started = time.perf_counter()
    for j, (u, i, r, _ts) in enumerate(events.iter_rows()):
        g_n = j  # events learned before this one
        g = g_sum / g_n if g_n else 3.5
        pu = (u_sum.get(u, 0.0) + K * g) / (u_n.get(u, 0) + K)
        bi = (i_sum.get(i, 0.0) - i_n.get(i, 0) * g) / (i_n.get(i, 0) + K)
        step = model.learn_one(u, i, r)
        if j >= cut:
            scored += 1
            for name, p in (("biased_mf", step.prediction), ("user_item_mean", pu + bi), ("user_mean", pu),
                            ("global_mean", g)):  # fmt: skip
                err[name] += abs(r - min(5.0, max(0.5, p)))
        u_sum[u] = u_sum.get(u, 0.0) + r
        u_n[u] = u_n.get(u, 0) + 1
        i_sum[i] = i_sum.get(i, 0.0) + r
        i_n[i] = i_n.get(i, 0) + 1
        g_sum += r
    return {
        "events": events.height, "scored_stream_events": scored,
        "stream_mae": {k: round(v / max(scored, 1), 4) for k, v in err.items()},
        "walk_s": round(time.perf_counter() - started, 2),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--var", type=Path, default=None, help="A var/ folder with store/ (default: bootstrap the bundled set)."
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="online-value-") as tmp:
        var = args.var
        if var is None:
            var = Path(tmp) / "var"
            env = {**os.environ, "REELSTREAM_VAR_DIR": str(var)}
            subprocess.run([sys.executable, "-m", "reelstream.shell.cli", "bootstrap"], env=env, check=True,
                           stdout=subprocess.DEVNULL)  # fmt: skip
        result = {"command": "python " + " ".join(sys.argv), "data": "bundled" if args.var is None else str(var),
                  **walk(var)}  # fmt: skip
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
