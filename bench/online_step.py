"""CPU per event of the worker's online-model step: ``OnlineRatingModel.learn_one`` against river's own path.

Why: the step runs once per applied event in the worker's thread (``streams/online.py``); this times it alone.

    .venv/bin/python bench/online_step.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streams.online import OnlineRatingModel


def main(n: int = 30_000, repeats: int = 3) -> None:
    rng = np.random.default_rng(0)
    users, items, ratings = rng.integers(2000, size=n), rng.integers(20_000, size=n), rng.integers(1, 11, size=n)
    events = [(int(u), int(i), float(r) / 2) for u, i, r in zip(users, items, ratings, strict=True)]
    for _ in range(repeats):
        for name in ("river", "written out"):
            m = OnlineRatingModel(seed=0)
            t = time.process_time()
            if name == "river":
                for u, i, r in events:
                    p = m.predict_one(u, i)
                    m.model.learn_one(u, i, r)
                    m.detector.update(abs(r - p))
            else:
                for u, i, r in events:
                    m.learn_one(u, i, r)
            print(f"{name}: {(time.process_time() - t) / n * 1e6:.1f} us/event")


if __name__ == "__main__":
    main()
