"""Index retrieval against exact scoring, through the served path: pool recall, HR@20, cost per request.

    .venv/bin/python bench/retrieval.py --var var                       # the current model and store
    .venv/bin/python bench/retrieval.py --var var/bench/scale-1/var --users 400 --events 4000

It starts its own Redis on a free loopback port and writes, for ``--users`` users drawn (seeded) among
those with STREAM events, their HISTORY ratings into it as the worker would (``tests.user_state``). Then it
walks their STREAM events in time order, as a prequential walk through the gateway: before each event,
one gateway with ``gateway_retrieval=exact`` and one with ``index`` (same Redis, same rules: the bundled
default, MMR and A/B arms included) serve the user a list of 20; the event's movie in it is a hit; then the
event is applied to Redis. Per request it also records the recall of the index's candidate pool against
the exact top ``gateway_candidate_pool`` (the pool both paths then rank from), and the CPU time of each
``recommend`` (in process, no HTTP, one BLAS thread). Writes ``bench/results/retrieval.json``.
"""

from __future__ import annotations

import argparse
import asyncio
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

from bootstrap.store import load_store  # noqa: E402
from gateway._blas import limit_blas_threads  # noqa: E402
from gateway.catalog import Catalog  # noqa: E402
from gateway.corating import CoRatingTerm  # noqa: E402
from gateway.engine import candidate_pool, personal_scores  # noqa: E402
from gateway.prior import ItemPrior  # noqa: E402
from gateway.rules import RulesStore  # noqa: E402
from gateway.service import Gateway  # noqa: E402
from gateway.state import RedisState  # noqa: E402
from models.runtime import ModelRuntime, current_model_dir  # noqa: E402
from reelstream.redis_client import redis_client  # noqa: E402
from reelstream.settings import Settings  # noqa: E402
from reelstream.shell import local_services  # noqa: E402
from tests.user_state import apply_rating  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "retrieval.json"


def exact_pool(gw: Gateway, cat: Catalog, snap, latent: np.ndarray, avoid: list[int]) -> set[int]:
    """The exact path's candidate pool for this state (gateway.service's steps, every row scored)."""
    _gen, prior = gw.prior.current(cat.n)
    seq = gw.coratings[cat.model_version].logits(cat.index_of, cat.n, snap.rated_at)
    total = personal_scores(cat, snap.mu, cat.decoder @ latent, prior, seq)
    rules = gw.rules.current()
    segment = rules.segment_for(snap.n)
    variant = rules.variant_for(str(snap.user_id))
    total += gw.adjustment(cat, rules, segment, variant)
    if avoid:
        total[avoid] = -np.inf
    return set(candidate_pool(total, gw.settings.gateway_candidate_pool).tolist())


def index_pool(gw: Gateway, cat: Catalog, snap, latent: np.ndarray, avoid: list[int]) -> set[int]:
    gen, prior = gw.prior.current(cat.n)
    seq = gw.coratings[cat.model_version].touched(cat.index_of, snap.rated_at)
    rules = gw.rules.current()
    segment, variant = rules.segment_for(snap.n), rules.variant_for(str(snap.user_id))
    adj = gw.adjustment(cat, rules, segment, variant)
    index = gw.build_index(cat)
    pool, _ = gw._indexed_pool(index, cat, latent, (gen, prior), seq, ((cat.version, rules.version, segment,
                               variant), adj), avoid)  # fmt: skip
    return set(pool.tolist())


async def walk(args: argparse.Namespace, work: Path) -> dict:
    var = Path(args.var)
    model_dir = current_model_dir(var / "models")
    runtime = ModelRuntime.load(model_dir)
    store = load_store(var / "store")
    port = local_services.free_port()
    local_services.start_redis(work / "run", "127.0.0.1", port)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis_client(url)
    try:
        stream_users = store.stream.select("user_id").unique().sort("user_id")["user_id"].to_numpy()
        rng = np.random.default_rng(args.seed)
        users = set(rng.choice(stream_users, size=min(args.users, len(stream_users)), replace=False).tolist())
        history = store.history.filter(pl.col("user_id").is_in(list(users))).sort("ts")
        t0 = time.perf_counter()
        for uid, mid, r, ts in history.select("user_id", "movie_id", "rating", "ts").iter_rows():
            if runtime.item_index(mid) is not None:
                apply_rating(client, runtime, uid, mid, float(r), int(ts))
        seeded_s = time.perf_counter() - t0
        events = store.stream.filter(pl.col("user_id").is_in(list(users))).sort("ts").head(args.events)
        base = dict(redis_url=url, var_dir=work / "var", gateway_cache_size=0, kafka_bootstrap="127.0.0.1:1")
        gws = {}
        for mode in ("exact", "index"):
            settings = Settings(**base, gateway_retrieval=mode)
            cat = Catalog.build(runtime, store.items, side_names=store.side_names, store_side=store.item_side)
            gws[mode] = Gateway(settings, cat, RulesStore(settings.rules_path), RedisState(url),
                                prior=ItemPrior(runtime), corating=CoRatingTerm(runtime))  # fmt: skip
        index = gws["index"].build_index(gws["index"].catalog)
        hits = {"exact": 0, "index": 0}
        cpu = {"exact": 0.0, "index": 0.0}
        same = scored = 0
        recalls: list[float] = []
        for uid, mid, r, ts in events.select("user_id", "movie_id", "rating", "ts").iter_rows():
            if runtime.item_index(mid) is None:
                continue
            if r >= 4.0:  # a positive: score the list served just before it (the walk's protocol)
                lists = {}
                for mode, gw in gws.items():
                    c0 = time.process_time()
                    lists[mode] = [m.movie_id for m in (await gw.recommend(uid, 20)).items]
                    cpu[mode] += time.process_time() - c0
                    hits[mode] += mid in lists[mode]
                scored += 1
                same += lists["exact"] == lists["index"]
                gw = gws["index"]
                snap = await gw.state.auser(uid)
                if snap.mu is not None:
                    cat = gw.catalog
                    rated = [i for i in (cat.index(m) for m in snap.rated) if i is not None]
                    latent = snap.mu.astype(np.float32)
                    ex = exact_pool(gw, cat, snap, latent, rated)
                    got = index_pool(gw, cat, snap, latent, rated)
                    recalls.append(len(ex & got) / max(len(ex), 1))
            apply_rating(client, runtime, uid, mid, float(r), int(ts))
        for gw in gws.values():
            await gw.state.aclose()
        rec = np.array(recalls)
        hr_exact = hits["exact"] / max(scored, 1)
        return {
            "model": runtime.version,
            "n_items": int(runtime.n_items),
            "latent": int(runtime.weights.latent),
            "users": len(users),
            "history_ratings_seeded": history.height,
            "seed_s": round(seeded_s, 1),
            "events_walked": events.height,
            "scored_events": scored,
            "lists": int(index.centroids.shape[0]),
            "probe": index.probe,
            "pool": gws["index"].settings.gateway_candidate_pool,
            "pool_recall_mean": round(float(rec.mean()), 5) if rec.size else None,
            "pool_recall_min": round(float(rec.min()), 4) if rec.size else None,
            "pool_recall_p1": round(float(np.percentile(rec, 1)), 4) if rec.size else None,
            "hr_at_20_exact": round(hits["exact"] / max(scored, 1), 4),
            "hr_at_20_index": round(hits["index"] / max(scored, 1), 4),
            "hr_standard_error": round(float(np.sqrt(hr_exact * (1 - hr_exact) / max(scored, 1))), 4),
            "identical_lists": round(same / max(scored, 1), 4),
            "recommend_cpu_ms_exact": round(1000 * cpu["exact"] / max(scored, 1), 3),
            "recommend_cpu_ms_index": round(1000 * cpu["index"] / max(scored, 1), 3),
        }
    finally:
        client.close()
        local_services.stop_process(work / "run", "redis")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--var", default="var", help="The var folder of the model and store.")
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--events", type=int, default=3000, help="STREAM events walked (their positives are scored).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    limit_blas_threads(1)
    with tempfile.TemporaryDirectory(prefix="rs-bench-ret-") as tmp:
        before = os.getloadavg()
        result = asyncio.run(walk(args, Path(tmp)))
    result |= {"command": "python bench/retrieval.py " + " ".join(sys.argv[1:]),
               "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "load_average_before": [round(x, 2) for x in before],
               "load_average_after": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip
    doc = json.loads(args.out.read_text()) if args.out.exists() else {}
    doc[result["model"]] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
