"""Memory and time of one online-model checkpoint at ML-32M shape (``OnlineRatingModel.save``).

Why: the worker checkpoints its online model every ``online_checkpoint_s``; at 200k users and 87k movies the
model's tables are ~200 MB, and how they are pickled sets the worker's peak RSS (``docs/scale.md``).
Learns 400,000 random events over ML-32M's users and movies, then saves once, in this fresh process.

    .venv/bin/python bench/online_checkpoint.py   # -> bench/results/online_checkpoint.json
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.online import OnlineRatingModel  # noqa: E402 - after the path insert

USERS, MOVIES, EVENTS = 200_948, 87_585, 400_000


def _status(field: str) -> float:
    """A ``/proc/self/status`` memory field in MiB (Linux)."""
    line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def main() -> None:
    rng = np.random.default_rng(0)
    model = OnlineRatingModel(seed=0)
    users, movies = rng.integers(1, USERS + 1, EVENTS).tolist(), rng.integers(1, MOVIES + 1, EVENTS).tolist()
    for u, m in zip(users, movies, strict=True):
        model.learn_one(u, m, 4.0)
    rss, peak = _status("VmRSS"), _status("VmHWM")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "online.pkl"
        started = time.perf_counter()
        model.save(path)
        save_s = time.perf_counter() - started
        size = path.stat().st_size
    out = {
        "command": "python bench/online_checkpoint.py",
        "users": len(model.model.u_latents), "movies": len(model.model.i_latents),
        "rss_before_mib": round(rss, 1), "peak_before_mib": round(peak, 1),
        "peak_after_save_mib": round(_status("VmHWM"), 1), "rss_after_save_mib": round(_status("VmRSS"), 1),
        "save_s": round(save_s, 3), "file_mib": round(size / 2**20, 1),
    }  # fmt: skip
    out["peak_added_by_save_mib"] = round(out["peak_after_save_mib"] - peak, 1)
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "online_checkpoint.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
