"""Gateway benchmark: /recommendations (k=20, default rules, warm users) next to /health, over loopback.

For each catalogue (ml-latest-small, and a synthetic 87,585-movie one) and each
cache mode, it starts a dedicated redis-server on a free port, seeds warm users
as the stream worker would leave their records (``tests.user_state.write_user``), starts the
gateway with uvicorn in a subprocess on a free port, and drives it from another
subprocess with a small keep-alive HTTP/1.1 client (asyncio streams, far cheaper
per request than httpx, so the client does not hide the server's cost):

* latency: 1 connection, closed loop -> p50 / p99;
* throughput: ``--concurrency`` connections -> requests/s, and the server
  process's CPU time per request in that phase (``server_cpu_ms_per_req``,
  from /proc: far less sensitive than wall time to other load on the machine).

``--live REDIS_URL --live-var VAR`` benchmarks a real run's state instead (``bench/scale.py``: ML-32M shape,
200,948 users seeded from HISTORY), with that run's model and store, users drawn from Redis.

Writes ``bench/results/gateway.json``. Usage::

    .venv/bin/python bench/gateway.py            # full run (a few minutes on 2 cores)
    .venv/bin/python bench/gateway.py --quick    # fewer requests
    .venv/bin/python bench/gateway.py --only-synthetic --only-uncached --batch-max 1 --out /tmp/gw.json
    .venv/bin/python bench/gateway.py --only-uncached --floor --out bench/results/gateway_floor.json

``--floor`` serves empty lists (the pool stage and MMR stubbed out): what HTTP, the Redis read and
the full-catalogue scoring alone cost, the limit any ranking work is added to. Each phase also
records ``mean_batch``, users per scoring pass (from ``GET /stats``).

Throughput is measured at ``--concurrency`` (4, the goal's figure) and again at
``--high-concurrency`` (16) connections; the load average is recorded before and
after each server's phases (the machine is shared: compare runs only with it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "gateway.json"
SYNTHETIC_N = 87_585


# --- load generator (runs in its own process) ------------------------------------------------
async def _load(port: int, paths: list[str], n: int, concurrency: int) -> dict:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(n))

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in counter:
            path = paths[i % len(paths)]
            t0 = time.perf_counter()
            writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    lat = sorted(latencies)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000

    return {"n": len(lat), "errors": errors, "p50_ms": pct(50), "p99_ms": pct(99), "req_per_s": len(lat) / wall}


def load_main(args: argparse.Namespace) -> None:
    paths = json.loads(Path(args.paths).read_text())
    print(json.dumps(asyncio.run(_load(args.port, paths, args.n, args.concurrency))))


# --- server (runs in its own process) ---------------------------------------------------------
def serve_many(args: argparse.Namespace) -> None:
    """``serve --processes N``: bind the port once and run N ``serve`` processes accepting on it (as uvicorn's
    ``--workers`` does), until SIGTERM, which goes on to them. The CPU figures add this parent's children."""
    import signal
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(2048)
    argv = sys.argv[1:]
    i = argv.index("--processes")  # serve_phases passes it as two arguments; the children get --fd instead
    argv = [*argv[:i], *argv[i + 2 :], "--fd", str(sock.fileno())]
    children = [subprocess.Popen([sys.executable, __file__, *argv], pass_fds=(sock.fileno(),), stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True) for _ in range(args.processes)]  # fmt: skip
    for child in children:  # each has its model and index loaded: all start serving at once
        assert child.stdout is not None and child.stdout.readline().strip() == "ready", "a serve process failed"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()

    def stop(*_: object) -> None:
        for child in children:
            child.terminate()

    signal.signal(signal.SIGTERM, stop)
    for child in children:
        child.wait()


def serve_main(args: argparse.Namespace) -> None:
    if args.processes > 1:
        serve_many(args)
        return
    import polars as pl
    import uvicorn

    from gateway._blas import limit_blas_threads
    from gateway.app import create_app
    from gateway.catalog import Catalog
    from gateway.corating import CoRatingTerm
    from gateway.prior import ItemPrior
    from gateway.rules import RulesStore
    from gateway.service import Gateway
    from gateway.state import RedisState
    from models.runtime import ModelRuntime
    from reelstream.settings import Settings

    settings = Settings(
        redis_url=args.redis_url, var_dir=Path(args.var_dir), gateway_cache_size=args.cache_size,
        gateway_batch_max=args.batch_max, gateway_retrieval=args.retrieval,
        kafka_bootstrap=f"127.0.0.1:{args.dead_port}", gateway_impressions=args.impressions,
    )  # fmt: skip
    limit_blas_threads(1)  # as `reelstream gateway` does
    runtime = ModelRuntime.load(Path(args.model_dir))
    catalog = Catalog.build(runtime, pl.read_parquet(args.items))
    # the model's item prior and co-rating term, as `reelstream gateway` serves them (no-ops for a random model)
    gw = Gateway(settings, catalog, RulesStore(settings.rules_path), RedisState(settings.redis_url),
                 prior=ItemPrior(runtime), corating=CoRatingTerm(runtime))  # fmt: skip
    if gw.uses_index(catalog):  # the retrieval index before the first request (the app builds it in a thread)
        gw.build_index(catalog)
    if args.floor:  # everything but ranking: the pool stage and MMR return nothing, the list is empty
        import numpy as np

        gw._personal_pool = lambda *a: (np.empty(0, np.int64), np.empty(0, np.float32))  # type: ignore[method-assign]
        gw._select = lambda *a: []  # type: ignore[method-assign]
    app = create_app(settings, gateway=gw, impressions=args.impressions)
    if args.fd is None:
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
        return
    import socket

    # one of serve_many's: the inherited socket as it is (uvicorn's own fd= would take it for AF_UNIX and
    # leave Nagle on), started when the parent says every process is loaded
    sock = socket.socket(fileno=args.fd)
    print("ready", flush=True)
    sys.stdin.readline()
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])


# --- orchestration --------------------------------------------------------------------------------
def _wait_http(port: int, timeout: float = 120.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(12).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"gateway on {port} did not start")


def _run_load(port: int, paths_file: Path, n: int, concurrency: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "load", "--port", str(port), "--paths", str(paths_file), "--n", str(n),
         "--concurrency", str(concurrency)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds so far of a process and its children (``--processes``: every worker)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _mix_paths(work: Path, users: list[int], n: int, start: int, hit_share: float = 0.94) -> Path:
    """``n`` requests: ``hit_share`` of them the warm (cached) ``k=20`` lists, the rest (user, k) pairs never
    asked before, so each is a real miss (``start`` keeps the phases' misses apart)."""
    paths, cold = [], start
    every = round(1 / (1 - hit_share))  # one miss in ~17 requests: 94.1% hits
    for i in range(n):
        if i % every == every - 1:
            u, k = users[cold % len(users)], 21 + (cold // len(users)) % 80
            paths.append(f"/recommendations/{u}?k={k}")
            cold += 1
        else:
            paths.append(f"/recommendations/{users[i % len(users)]}?k=20")
    out = work / f"mix_{start}.json"
    out.write_text(json.dumps(paths))
    return out


def _scoring(port: int) -> dict:
    """The gateway's scoring-pass counters (``/stats``)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as resp:
        return json.loads(resp.read())["scoring"]


def _phase(pid: int, port: int, paths: Path, n: int, concurrency: int) -> dict:
    cpu0, s0 = _cpu_s(pid), _scoring(port)
    out = _run_load(port, paths, n, concurrency)
    cpu1, s1 = _cpu_s(pid), _scoring(port)
    out["server_cpu_ms_per_req"] = (cpu1 - cpu0) * 1000 / max(out["n"], 1)
    passes = s1["batches"] - s0["batches"]
    out["mean_batch"] = round((s1["scored"] - s0["scored"]) / passes, 2) if passes else None
    return out


def bench_catalogue(name: str, items, runtime, args: argparse.Namespace, work: Path) -> dict:
    """A dedicated Redis seeded with ``args.users`` synthetic warm users, then :func:`serve_phases`."""
    from reelstream.shell import local_services
    from tests.user_state import write_user

    work.mkdir(parents=True, exist_ok=True)
    model_dir = work / "model"
    runtime.save(model_dir)
    items_path = work / "items.parquet"
    items.write_parquet(items_path)
    redis_port = local_services.free_port()
    local_services.start_redis(work / "run", "127.0.0.1", redis_port)
    url = f"redis://127.0.0.1:{redis_port}/0"
    try:
        from reelstream.redis_client import redis_client

        client = redis_client(url)
        import numpy as np

        rng = np.random.default_rng(0)
        popular = items.sort("n_ratings", descending=True)["movie_id"].to_numpy()[:2000]
        users = list(range(1, args.users + 1))
        for uid in users:
            n = int(rng.integers(10, 120))
            chosen = rng.choice(popular, size=n, replace=False)
            ratings = [(int(m), float(rng.choice([1.0, 2.5, 3.5, 4.0, 4.5, 5.0]))) for m in chosen]
            write_user(client, runtime, uid, ratings)
        client.close()
        if args.impressions_cost:
            return {"catalogue": name, "n_items": int(runtime.n_items), "warm_users": len(users),
                    "impressions": impressions_cost(url, model_dir, items_path, users, args, work)}  # fmt: skip
        return serve_phases(name, url, model_dir, items_path, users, int(runtime.n_items),
                            int(runtime.weights.latent), args, work)  # fmt: skip
    finally:
        local_services.stop_process(work / "run", "redis")


def impressions_cost(url: str, model_dir: Path, items_path: Path, users: list[int], args: argparse.Namespace,
                     work: Path) -> dict:  # fmt: skip
    """Uncached /recommendations throughput with impressions off and on, alternated in one run (off, on, off, on,
    ...), the impressions going to a real local broker (Tansu): the recording's cost on the request path."""
    from reelstream.settings import Settings
    from reelstream.shell import local_services
    from streams.admin import ensure_topics_sync

    broker_port = local_services.free_port()
    local_services.start_broker(work / "broker", "127.0.0.1", broker_port)
    try:
        ensure_topics_sync(Settings(kafka_bootstrap=f"127.0.0.1:{broker_port}", redis_url=url))
        rec_paths = work / "rec_paths.json"
        rec_paths.write_text(json.dumps([f"/recommendations/{u}?k=20" for u in users]))
        runs: dict[str, list[dict]] = {"off": [], "on": []}
        for r in range(args.rounds):
            for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                port = local_services.free_port()
                argv = [sys.executable, __file__, "serve", "--port", str(port), "--redis-url", url,
                        "--model-dir", str(model_dir), "--items", str(items_path),
                        "--var-dir", str(work / f"var-{mode}-{r}"), "--cache-size", "0",
                        "--dead-port", str(broker_port), "--batch-max", str(args.batch_max),
                        "--retrieval", args.retrieval, *(["--impressions"] if mode == "on" else [])]  # fmt: skip
                server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    _wait_http(port)
                    _run_load(port, rec_paths, len(users) * 2, 4)  # warm-up (the producer starts here too)
                    thr = _phase(server.pid, port, rec_paths, args.n, args.concurrency)
                    import urllib.request

                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as resp:
                        imp = json.loads(resp.read())["impressions"]
                    runs[mode].append({"req_per_s": round(thr["req_per_s"], 1),
                                       "server_cpu_ms_per_req": round(thr["server_cpu_ms_per_req"], 3),
                                       "errors": thr["errors"], "impressions": imp})  # fmt: skip
                    print("impressions", mode, json.dumps(runs[mode][-1]), flush=True)
                finally:
                    server.terminate()
                    server.wait(timeout=30)
        med = {m: {k: float(sorted(x[k] for x in v)[len(v) // 2]) for k in ("req_per_s", "server_cpu_ms_per_req")}
               for m, v in runs.items()}  # fmt: skip
        produced = sum(_impression_ends(f"127.0.0.1:{broker_port}").values())
        return {
            "rounds": args.rounds, "runs": runs, "median": med, "records_on_topic": produced,
            "throughput_cost_pct": round(100 * (1 - med["on"]["req_per_s"] / med["off"]["req_per_s"]), 2),
            "cpu_cost_pct": round(100 * (med["on"]["server_cpu_ms_per_req"] / med["off"]["server_cpu_ms_per_req"] - 1),
                                  2),
        }  # fmt: skip
    finally:
        local_services.stop_process(work / "broker", "broker")


def _impression_ends(bootstrap: str) -> dict[int, int]:
    """High watermarks of the impressions topic: what the broker holds."""
    from reelstream.settings import Settings
    from streams.admin import high_watermarks

    s = Settings(kafka_bootstrap=bootstrap)
    return asyncio.run(high_watermarks(s, s.topic_impressions))


def bench_live(args: argparse.Namespace, work: Path) -> dict:
    """``--live``: the state a real run left in Redis (``bench/scale.py``), its current model and store; the
    users are ``args.users`` drawn (seeded) from those Redis holds, so their rated sets are real ones."""
    import random

    from bootstrap.store import load_store
    from models.runtime import current_model_dir
    from reelstream.redis_client import redis_client

    var = Path(args.live_var)
    model_dir = current_model_dir(var / "models")
    store = load_store(var / "store")
    work.mkdir(parents=True, exist_ok=True)
    items_path = work / "items.parquet"
    store.items.write_parquet(items_path)
    client = redis_client(args.live)
    uids = [int(k.decode().split(":")[2]) for k in client.scan_iter(match="rs:user:*", count=10_000)
            if k.decode().count(":") == 2]  # fmt: skip
    client.close()
    users = random.Random(0).sample(sorted(uids), min(args.users, len(uids)))
    from models.runtime import ModelRuntime

    rt = ModelRuntime.load(model_dir)
    out = serve_phases("live", args.live, model_dir, items_path, users, int(rt.n_items), int(rt.weights.latent),
                       args, work)  # fmt: skip
    out["users_in_redis"] = len(uids)
    return out


def serve_phases(name: str, url: str, model_dir: Path, items_path: Path, users: list[int], n_items: int, latent: int,
                 args: argparse.Namespace, work: Path) -> dict:  # fmt: skip
    """Latency (1 connection) and throughput (c=4, c=16) of /recommendations and /health, uncached and cached."""
    from reelstream.shell import local_services

    rec_paths = work / "rec_paths.json"
    rec_paths.write_text(json.dumps([f"/recommendations/{u}?k=20" for u in users]))
    health_paths = work / "health_paths.json"
    health_paths.write_text(json.dumps(["/health"]))
    out: dict = {"catalogue": name, "n_items": n_items, "latent": latent, "warm_users": len(users)}
    for mode, cache_size in (("uncached", 0), ("cached", 100_000))[: 1 if args.only_uncached else 2]:
        port = local_services.free_port()
        if args.processes > 1 and args.live:  # `reelstream gateway --workers N` on the live run's var folder
            env = {**os.environ, "REELSTREAM_VAR_DIR": str(args.live_var), "REDIS_URL": url,
                   "KAFKA_BOOTSTRAP": f"127.0.0.1:{local_services.free_port()}",
                   "REELSTREAM_GATEWAY_CACHE_SIZE": str(cache_size), "REELSTREAM_GATEWAY_RETRIEVAL": args.retrieval,
                   "REELSTREAM_GATEWAY_LAG_INTERVAL_S": "0", "REELSTREAM_PROBE_INTERVAL_S": "0"}  # fmt: skip
            argv = [sys.executable, "-m", "reelstream.shell.cli", "gateway", "--port", str(port),
                    "--workers", str(args.processes)]  # fmt: skip
        else:
            env = None
            argv = [sys.executable, __file__, "serve", "--port", str(port), "--redis-url", url,
                    "--model-dir", str(model_dir), "--items", str(items_path), "--var-dir", str(work / f"var-{mode}"),
                    "--cache-size", str(cache_size), "--dead-port", str(local_services.free_port()),
                    "--batch-max", str(args.batch_max), "--retrieval", args.retrieval,
                    "--processes", str(args.processes), *(["--floor"] if args.floor else [])]  # fmt: skip
        server = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_http(port)
            _run_load(port, rec_paths, len(users) * 2, 4)  # warm-up (and fills the cache)
            _run_load(port, health_paths, 500, 4)
            res: dict = {"loadavg_before": [round(x, 2) for x in os.getloadavg()], "processes": args.processes}
            phases: list[tuple[str, list[Path]]] = [("recommendations", [rec_paths] * 3),
                                                    ("health", [health_paths] * 3)]  # fmt: skip
            if cache_size:  # the write-up's mix: 94% of requests hit the cache
                phases.insert(1, ("mix_94pct_hits", [_mix_paths(work, users, args.n, j * args.n) for j in range(3)]))
            for label, (p1, p4, p16) in phases:
                lat = _phase(server.pid, port, p1, args.n, 1)
                thr = _phase(server.pid, port, p4, args.n, args.concurrency)
                high = _phase(server.pid, port, p16, args.n, args.high_concurrency)
                res[label] = {"p50_ms": round(lat["p50_ms"], 3), "p99_ms": round(lat["p99_ms"], 3),
                              "req_per_s": round(thr["req_per_s"], 1),
                              "server_cpu_ms_per_req": round(thr["server_cpu_ms_per_req"], 3),
                              f"p99_ms_c{args.concurrency}": round(thr["p99_ms"], 3),
                              f"req_per_s_c{args.high_concurrency}": round(high["req_per_s"], 1),
                              f"p99_ms_c{args.high_concurrency}": round(high["p99_ms"], 3),
                              "errors": lat["errors"] + thr["errors"] + high["errors"],
                              "mean_batch": thr["mean_batch"],
                              f"mean_batch_c{args.high_concurrency}": high["mean_batch"]}  # fmt: skip
            rec, hea = res["recommendations"], res["health"]
            res["throughput_vs_health"] = round(rec["req_per_s"] / hea["req_per_s"], 3)
            hk = f"req_per_s_c{args.high_concurrency}"
            res[f"throughput_vs_health_c{args.high_concurrency}"] = round(rec[hk] / hea[hk], 3)
            res["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
            out[mode] = res
            print(name, mode, json.dumps(res), flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return out


def main(args: argparse.Namespace) -> None:
    import numpy as np
    import polars as pl

    from models.runtime import ModelRuntime
    from tests.user_state import movielens_items, synthetic_items

    results = {
        "benchmark": "gateway", "machine": f"{os.cpu_count()} CPUs", "client": "asyncio keep-alive HTTP/1.1",
        "requests_per_phase": args.n, "throughput_concurrency": args.concurrency,
        "high_concurrency": args.high_concurrency, "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "latency": "1 connection, closed loop", "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": "python bench/gateway.py" + (" --quick" if args.quick else ""), "catalogues": [],
        "batch_max": args.batch_max,
        "retrieval": args.retrieval,
        "floor": args.floor,
        "processes": args.processes,
    }  # fmt: skip
    if args.live:
        results["command"] = f"python bench/gateway.py --live {args.live} --live-var {args.live_var}"
        with tempfile.TemporaryDirectory(prefix="rs-bench-gw-") as tmp:
            results["live"] = bench_live(args, Path(tmp))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        return
    with tempfile.TemporaryDirectory(prefix="rs-bench-gw-") as tmp:
        if not args.only_synthetic:
            ml = movielens_items(ROOT / "data" / "ml-latest-small")
            rt = ModelRuntime.random(ml["movie_id"].to_numpy(), hidden=128, latent=64, seed=1)
            rt.metadata["model_version"] = "bench-ml-small"
            results["catalogues"].append(bench_catalogue("ml-latest-small", ml, rt, args, Path(tmp) / "ml"))
        ids = np.arange(1, SYNTHETIC_N + 1, dtype=np.int64)
        syn = synthetic_items(ids.tolist(), seed=2).with_columns(pl.col("n_ratings"))
        rt = ModelRuntime.random(ids, hidden=128, latent=64, seed=2)
        rt.metadata["model_version"] = "bench-synthetic-87585"
        results["catalogues"].append(bench_catalogue("synthetic-87585", syn, rt, args, Path(tmp) / "syn"))
    if args.impressions_cost:
        results["command"] = f"python bench/gateway.py --impressions-cost --rounds {args.rounds}"
        imp = results["catalogues"][-1]["impressions"]
        results["goals"] = {"impressions_cost<=5%_of_uncached_throughput": imp["throughput_cost_pct"] <= 5.0}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results["goals"]))
        return
    big = results["catalogues"][-1]["uncached"]
    results["goals"] = {
        "p99_uncached_87k_ms<=15": big["recommendations"]["p99_ms"] <= 15.0,
        "uncached_throughput>=50%_of_health": big["throughput_vs_health"] >= 0.5,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["goals"]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    p_load = sub.add_parser("load")
    p_load.add_argument("--port", type=int, required=True)
    p_load.add_argument("--paths", required=True)
    p_load.add_argument("--n", type=int, required=True)
    p_load.add_argument("--concurrency", type=int, default=1)
    p_serve = sub.add_parser("serve")
    for flag in ("--redis-url", "--model-dir", "--items", "--var-dir"):
        p_serve.add_argument(flag, required=True)
    p_serve.add_argument("--port", type=int, required=True)
    p_serve.add_argument("--cache-size", type=int, default=0)
    p_serve.add_argument("--dead-port", type=int, required=True)
    p_serve.add_argument("--batch-max", type=int, default=32)
    p_serve.add_argument("--floor", action="store_true")
    p_serve.add_argument("--retrieval", choices=("index", "exact"), default="index")
    p_serve.add_argument("--impressions", action="store_true", help="record served lists (to --dead-port's broker)")
    p_serve.add_argument("--processes", type=int, default=1, help="processes accepting on the one port")
    p_serve.add_argument("--fd", type=int, default=None, help="serve on this inherited listening socket")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--high-concurrency", type=int, default=16)
    parser.add_argument("--batch-max", type=int, default=32, help="gateway_batch_max (1: no micro-batching)")
    parser.add_argument(
        "--retrieval",
        choices=("index", "exact"),
        default="index",
        help="gateway_retrieval (index: large catalogues through gateway/retrieval.py)",
    )
    parser.add_argument(
        "--floor", action="store_true",
        help="stub out ranking (empty lists): HTTP + Redis + full-catalogue scoring alone, the path's floor",
    )  # fmt: skip
    parser.add_argument("--only-synthetic", action="store_true", help="skip ml-latest-small (quick iterations)")
    parser.add_argument("--only-uncached", action="store_true", help="skip the cached runs (quick iterations)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--live", metavar="REDIS_URL", help="benchmark a real run's state in this Redis instead")
    parser.add_argument("--live-var", metavar="VAR_DIR", help="with --live: the var folder of its model and store")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument(
        "--processes", type=int, default=1,
        help="gateway processes on one port (with --live: `reelstream gateway --workers N` on its var folder)",
    )  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--impressions-cost", action="store_true",
        help="only: uncached throughput with impressions off and on, alternated, to a local broker",
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=4, help="with --impressions-cost: off/on pairs")
    parser.add_argument("--n", type=int, default=2000)
    a = parser.parse_args()
    if a.cmd == "load":
        load_main(a)
    elif a.cmd == "serve":
        serve_main(a)
    else:
        if a.quick:
            a.n, a.users = 500, 60
        if a.impressions_cost:
            a.only_synthetic = True
            a.out = a.out if a.out != RESULTS else RESULTS.with_name("gateway_impressions.json")
        main(a)
