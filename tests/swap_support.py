"""Helpers for the hot-swap tests: two small models on disk, rating messages, a state comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models.runtime import ModelRuntime
from schemas import redis_keys as keys
from schemas.side_features import GENRE, feature_name, side_metadata
from schemas.user_record import FIELDS, decode_user
from schemas.wire import codec_for
from streams.events import rating_event, user_key
from streams.processor import Message, RatingProcessor
from streams.store import FeatureTablesIO, MemoryFeatureTables
from tests.stream_support import PRIOR, diff_states

TOPIC = "ratings"
#: Event times (ms) start here: inside the rating contract's window.
T0_MS = 1_600_000_000_000


def save_model(
    models_dir: Path, name: str, movie_ids: np.ndarray, seed: int, prior: dict | None = None
) -> ModelRuntime:
    """A small random model saved as ``models_dir/name`` (its metadata names it), like a trained one."""
    rt = ModelRuntime.random(movie_ids, hidden=16, latent=8, seed=seed)
    genres = ("Action", "Comedy", "Drama", "Horror")
    rt.metadata.update(side_metadata([feature_name(GENRE, g) for g in genres], None))
    rt.metadata["item_prior"] = dict(prior or PRIOR)
    rt.metadata["model_version"] = name
    rt.save(models_dir / name)
    return ModelRuntime.load(models_dir / name)


def rating_messages(n_users: int, per_user: int, movie_ids: np.ndarray, seed: int = 0) -> list[Message]:
    """Rating events in time order, with re-ratings (a user rates some movie again), one partition."""
    rng = np.random.default_rng(seed)
    codec = codec_for("RatingEvent")
    rows = []
    for u in range(1, n_users + 1):
        picks = rng.choice(movie_ids, size=per_user, replace=True)  # replace: re-ratings of a movie happen
        for m in picks:
            rows.append((u, int(m), float(rng.choice([1.0, 2.5, 3.0, 4.0, 4.5, 5.0]))))
    order = rng.permutation(len(rows))
    return [
        Message(TOPIC, 0, i, codec.encode(rating_event(u, m, r, T0_MS + i * 1000, "replay")), key=user_key(u))
        for i, (u, m, r) in enumerate(rows[j] for j in order)
    ]


def processor(runtime: ModelRuntime, store: FeatureTablesIO, topic: str = TOPIC, **kw: Any) -> RatingProcessor:
    return RatingProcessor(runtime, store, topic=topic, min_ts_ms=0, max_future_ms=10**15, half_life_s=3600.0, **kw)


def clean_run(runtime: ModelRuntime, msgs: list[Message]) -> dict[str, Any]:
    """The state a run on ``runtime`` from scratch gives (the worker's processor over a dict store)."""
    p = processor(runtime, MemoryFeatureTables())
    p.run(msgs)
    return p.store.snapshot()  # type: ignore[attr-defined]


#: Keys a swap adds (its status) or that count deliveries, not state.
IGNORED = (keys.MODEL, keys.STATS, keys.ONLINE, keys.CHALLENGER, "rs:offsets:", "rs:fence:")


def state_differences(expected: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """Differences between two snapshots: user hashes decoded (``pre`` to 1e-9, ``mu``/``logvar`` to 1e-5,
    since a re-encode sums the same terms in another order), every other key as :func:`diff_states` does."""
    problems: list[str] = []
    user_head = keys.user(0)[:-1]
    users = {k for k in set(expected) | set(got) if k.startswith(user_head) and k[len(user_head) :].isdigit()}
    for k in sorted(users):
        if k not in expected or k not in got:
            problems.append(f"{k}: only in {'expected' if k in expected else 'got'}")
            continue
        a, b = decode_user(_raw(expected[k])), decode_user(_raw(got[k]))
        for f in ("version", "n_events", "n", "sum", "sumsq", "first_ms", "last_ms", "model_version"):
            if getattr(a, f) != getattr(b, f):
                problems.append(f"{k}[{f}]: expected {getattr(a, f)!r}, got {getattr(b, f)!r}")
        if not np.isclose(a.norm2, b.norm2, rtol=1e-12):
            problems.append(f"{k}[norm2]: expected {a.norm2}, got {b.norm2}")
        for f, tol in (("pre", 1e-9), ("mu", 1e-5), ("logvar", 1e-5)):
            x, y = getattr(a, f), getattr(b, f)
            if x is None or y is None or x.shape != y.shape or not np.allclose(x, y, rtol=tol, atol=tol):
                problems.append(f"{k}[{f}]: expected {x}, got {y}")
    rest = lambda snap: {k: v for k, v in snap.items() if k not in users and not k.startswith(IGNORED)}  # noqa: E731
    return problems + diff_states(rest(expected), rest(got))


def _raw(h: dict[str, Any]) -> dict[str, Any]:
    """A normalised snapshot hash (numbers as float) back to what the codec decodes."""
    out: dict[str, Any] = {}
    for f, v in h.items():
        kind = FIELDS.get(f)
        if kind == "int":
            out[f] = str(int(v))
        elif kind == "float":
            out[f] = repr(float(v))
        elif kind in ("f4", "f8") and isinstance(v, str):  # binary that happened to be valid UTF-8
            out[f] = v.encode()
        else:
            out[f] = v
    return out
