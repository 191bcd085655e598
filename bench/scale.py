"""MovieLens-32M shape end to end on one machine, phase by phase: ``bench/results/scale.json``.

    .venv/bin/python bench/scale.py                    # the full 32M shape (about an hour on 2 cores)
    .venv/bin/python bench/scale.py --fraction 0.05    # the same pipeline on 1.6 M ratings, for iteration
    .venv/bin/python bench/scale.py --phases seed replay_1_worker replay_2_workers gateway   # reuse the rest

Every phase is the ``reelstream`` command a user runs, in a child process, in ``var/bench/scale-F/`` (the
synthetic dataset, its feature store, model and run folder are kept and reused by ``--phases``). It starts its
own Tansu broker and Redis on free loopback ports. One object per phase, each with ``wall_s`` and the
phase's peak RSS (``peak_rss_gib``: the largest resident set of the command and its children, sampled every
0.2 s), its throughput, the 1-minute load average before and after (the machine may be shared: timings
under load are upper bounds), and the command:

* ``synth``: ``reelstream synth`` (ratings/s);
* ``bootstrap``: ``reelstream bootstrap`` (ratings/s);
* ``train_cpu``: ``reelstream train`` (the large-data plan of ``models/budget.py``): epochs, s per epoch,
  the validation walk's HR@20 against the recency-tuned popularity baseline and their ratio;
* ``train_gpu``: the same with ``--device cuda`` when torch sees a GPU, else the reason it was skipped;
* ``seed``: ``reelstream seed`` of HISTORY into Redis (ratings/s), then Redis ``used_memory``, bytes per user
  and per rating;
* ``replay_1_worker``: one ``reelstream worker`` while ``reelstream replay --max`` produces all of STREAM:
  events/s from the first produce to the last event applied, lag and freshness sampled every 5 s;
* ``replay_2_workers``: ``reelstream seed --reset`` (HISTORY again) and a fresh consumer group, then two
  workers re-read the same topic from its start: drain events/s with lag samples;
* ``gateway``: ``bench/gateway.py --live`` against this state (users drawn from HISTORY): p50/p99, req/s,
  server CPU per request, uncached and cached;
* ``up_total``: ``reelstream up --data DIR --no-replay`` on the built store: seconds to the first list served.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bootstrap.synth import ML32M  # noqa: E402
from reelstream.redis_client import redis_client  # noqa: E402
from reelstream.shell import local_services  # noqa: E402
from schemas import redis_keys as keys  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "scale.json"
PHASES = ("synth", "bootstrap", "train_cpu", "train_gpu", "seed", "replay_1_worker", "replay_2_workers", "gateway",
          "up_total")  # fmt: skip
GIB = float(1 << 30)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "reelstream.shell.cli", *args]


def _tree_cpu_s(proc: psutil.Process) -> float:
    """User + system CPU seconds of ``proc`` and its children so far (0 once it is gone)."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
    return total


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    with contextlib.suppress(psutil.Error):
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
    return total


class Watched:
    """A child process whose tree's peak RSS is sampled while it runs."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log.open("ab")
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT,
                                     start_new_session=True)  # fmt: skip
        self.peak = 0
        self.cpu_s = 0.0  #: the tree's CPU seconds at the last sample (a child that exits keeps its last figure)
        self._ps = psutil.Process(self.proc.pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, _tree_rss(self._ps))
            self.cpu_s = max(self.cpu_s, _tree_cpu_s(self._ps))

    def wait(self) -> int:
        code = self.proc.wait()
        self._stop.set()
        self._thread.join()
        self.log.close()
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.wait()


class Scale:
    def __init__(self, args: argparse.Namespace) -> None:
        self.fraction = args.fraction
        self.replay_limit: int | None = args.replay_limit
        self.ratings = round(ML32M[0] * args.fraction)
        self.work = (args.work or ROOT / "var" / "bench" / f"scale-{args.fraction:g}").resolve()
        self.data = (args.data or self.work / "synth").resolve()
        self.logs = self.work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        run = self.work / "infra"
        if "seed" in args.phases:  # the seed resets Redis anyway: do not wait for a GiB-sized AOF to load first
            shutil.rmtree(run / "redis", ignore_errors=True)
        kp, rp = local_services.free_port(), local_services.free_port()
        local_services.start_broker(run, "127.0.0.1", kp)
        local_services.start_redis(run, "127.0.0.1", rp)
        self.run_dir = run
        self.infra = {name: psutil.Process(local_services.running_pid(run, name) or 0) for name in ("broker", "redis")}
        self.redis_url = f"redis://127.0.0.1:{rp}/0"
        self.env = {**os.environ, "KAFKA_BOOTSTRAP": f"127.0.0.1:{kp}", "REDIS_URL": self.redis_url,
                    "REELSTREAM_VAR_DIR": str(self.work / "var"), "REELSTREAM_DATA_PATH": str(self.data),
                    "COLUMNS": "160"}  # fmt: skip
        self.redis = redis_client(self.redis_url)
        self.results: dict[str, Any] = {}

    def close(self) -> None:
        self.redis.close()
        local_services.stop_process(self.run_dir, "broker")
        local_services.stop_process(self.run_dir, "redis")

    # --- helpers ------------------------------------------------------------------------------
    def run(self, name: str, argv: list[str], **extra: Any) -> dict[str, Any]:
        """Run one command to completion; its wall time, peak RSS and load averages."""
        before = os.getloadavg()
        started = time.perf_counter()
        child = Watched(argv, self.env, self.logs / f"{name}.log")
        code = child.wait()
        wall = time.perf_counter() - started
        if code != 0:
            raise RuntimeError(f"{name}: {' '.join(argv)} exited {code}; see {self.logs / (name + '.log')}")
        return {"command": " ".join(argv[2:]) if argv[:2] == [sys.executable, "-m"] else " ".join(argv),
                "wall_s": round(wall, 2), "peak_rss_gib": round(child.peak / GIB, 3),
                "load_average_before": [round(x, 2) for x in before],
                "load_average_after": [round(x, 2) for x in os.getloadavg()], **extra}  # fmt: skip

    def _stats(self) -> dict[str, int]:
        raw = self.redis.hgetall(keys.STATS)
        return {k.decode(): int(float(v)) for k, v in raw.items()}

    def _store_counts(self) -> dict[str, int]:
        from bootstrap.store import load_store

        store = load_store(self.work / "var" / "store")
        counts = store.metadata["counts"]
        return {"history": int(counts["history_ratings"]), "stream": int(counts["stream_ratings"]),
                "users": int(counts["users"])}  # fmt: skip

    def _memory(self, users: int, ratings: int) -> dict[str, Any]:
        used = int(self.redis.info("memory")["used_memory"])
        return {"redis_used_gib": round(used / GIB, 3), "redis_bytes_per_user": round(used / max(users, 1)),
                "redis_bytes_per_rating": round(used / max(ratings, 1), 1)}  # fmt: skip

    def _sample_lag(self, samples: list[dict[str, Any]], t0: float) -> None:
        """One lag/freshness sample: applied events, the workers' freshness, the consumer lag."""
        stats = self._stats()
        fresh = {}
        for key in self.redis.scan_iter(match=keys.worker("*") + ":freshness"):
            raw = self.redis.hgetall(key)
            fresh[key.decode().split(":")[2]] = {k.decode(): float(v) for k, v in raw.items()}
        lag = subprocess.run(_cli("lag", "--json"), env=self.env, capture_output=True, text=True, cwd=ROOT)
        try:
            lag_doc = json.loads(lag.stdout) if lag.returncode == 0 else {"error": lag.stderr.strip()[-200:]}
        except json.JSONDecodeError:
            lag_doc = {"error": "unreadable"}
        samples.append({"t_s": round(time.perf_counter() - t0, 1), "events_applied": stats.get("events_applied", 0),
                        "freshness_ms": fresh, "lag": lag_doc.get("total_lag", lag_doc)})  # fmt: skip

    def _until_applied(self, target: int, samples: list[dict[str, Any]], t0: float, procs: list[Watched],
                       timeout: float) -> float:  # fmt: skip
        """Poll until ``rs:stats`` counts ``target`` events applied or dead; the seconds since ``t0``."""
        next_sample = time.perf_counter()
        deadline = time.perf_counter() + timeout
        while True:
            stats = self._stats()
            if stats.get("events_applied", 0) + stats.get("dead_letters", 0) >= target:
                return time.perf_counter() - t0
            if time.perf_counter() >= next_sample:
                self._sample_lag(samples, t0)
                next_sample += 5.0
            if any(p.proc.poll() is not None for p in procs):
                raise RuntimeError("a worker exited during the replay; see its log")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"timed out: {stats} of {target}")
            time.sleep(0.5)  # polling interval of a measurement, not synchronisation

    def _infra_cpu_s(self) -> dict[str, float]:
        return {name: _tree_cpu_s(p) for name, p in self.infra.items()}

    def _cpu_split(self, before: dict[str, float], events: int, **procs: float) -> dict[str, Any]:
        """CPU microseconds per event of the broker and Redis since ``before``, of ``procs`` (CPU seconds), and
        in all: with the cores, which process limits the phase."""
        used = {name: after - before[name] for name, after in self._infra_cpu_s().items()}
        used.update(procs)
        per = {name: round(s * 1e6 / max(events, 1), 1) for name, s in used.items()}
        return {"cpu_us_per_event": {**per, "total": round(sum(per.values()), 1)},
                "cpu_s": {name: round(s, 1) for name, s in used.items()}}  # fmt: skip

    # --- phases -------------------------------------------------------------------------------
    def synth(self) -> dict[str, Any]:
        if self.data.exists():
            shutil.rmtree(self.data)
        out = self.run("synth", _cli("synth", "--ratings", str(self.ratings), "--seed", "0", "--out", str(self.data)))
        return {**out, "ratings": self.ratings, "ratings_per_s": round(self.ratings / out["wall_s"])}

    def bootstrap(self) -> dict[str, Any]:
        out = self.run("bootstrap", _cli("bootstrap", "--data", str(self.data)))
        return {**out, "ratings_per_s": round(self.ratings / out["wall_s"]), **self._store_counts()}

    def _train(self, name: str, *extra: str) -> dict[str, Any]:
        out = self.run(name, _cli("train", *extra))
        models = self.work / "var" / "models"
        meta = json.loads((models / (models / "CURRENT").read_text().strip() / "metadata.json").read_text())
        cfg = meta.get("self_configuration", {})
        pop = cfg.get("baselines", {}).get("popularity (decayed counts, tuned half-life)", {}).get("overall", {})
        hr = cfg.get("groups", {}).get("overall", {}).get("hr")
        return {**out, "epochs": meta["epochs"], "training_s": round(meta["training_seconds"], 1),
                "epoch_s": round(meta["training_seconds"] / max(meta["epochs"], 1), 1),
                "validation_hr_at_20": hr, "validation_popularity_hr_at_20": pop.get("hr"),
                "lift_over_popularity": round(hr / pop["hr"], 3) if hr and pop.get("hr") else None,
                "search_s": round(cfg.get("seconds", {}).get("search", 0.0), 1),
                "chosen": cfg.get("chosen"), "metrics": meta.get("metrics")}  # fmt: skip

    def train_cpu(self) -> dict[str, Any]:
        return self._train("train_cpu")

    def train_gpu(self) -> dict[str, Any]:
        try:
            import torch

            available = torch.cuda.is_available()
        except ImportError:
            available = False
        if not available:
            return {"skipped": "no CUDA device on this machine (torch.cuda.is_available() is False)"}
        return self._train("train_gpu", "--device", "cuda")

    def seed(self) -> dict[str, Any]:
        counts = self._store_counts()
        out = self.run("seed", _cli("seed", "--reset"))
        return {**out, "ratings": counts["history"], "ratings_per_s": round(counts["history"] / out["wall_s"]),
                **self._memory(counts["users"], counts["history"])}  # fmt: skip

    def _workers(self, n: int, tag: str) -> list[Watched]:
        env = {**self.env, "REELSTREAM_WORKER_REBUILD": "false"}
        procs = []
        for i in range(n):
            argv = _cli("worker", "--name", f"{tag}-{i}", "--web-port", str(local_services.free_port()))
            procs.append(Watched(argv, env, self.logs / f"{tag}-{i}.log"))
        names = [f"{tag}-{i}" for i in range(n)]
        deadline = time.monotonic() + 300
        while not all(self.redis.exists(keys.worker(x)) for x in names):
            if time.monotonic() > deadline or any(p.proc.poll() is not None for p in procs):
                raise RuntimeError(f"workers {names} did not start; see {self.logs}")
            time.sleep(0.2)
        return procs

    def _stop_workers(self, workers: list[Watched], tag: str) -> int:
        """Stop the workers; their heartbeats go too (they exited: waited for), so a reseed may follow."""
        peak = max(w.peak for w in workers)
        for i, w in enumerate(workers):
            w.stop()
            self.redis.delete(keys.worker(f"{tag}-{i}"))
        return peak

    def replay_1_worker(self) -> dict[str, Any]:
        counts = self._store_counts()
        events = min(counts["stream"], self.replay_limit or counts["stream"])
        base = self._stats().get("events_applied", 0) + self._stats().get("dead_letters", 0)
        workers = self._workers(1, "w1")
        samples: list[dict[str, Any]] = []
        before = os.getloadavg()
        infra = self._infra_cpu_s()
        idle = sum(_tree_cpu_s(w._ps) for w in workers)
        limit = ["--limit", str(events)] if events < counts["stream"] else []
        t0 = time.perf_counter()
        replay = Watched(_cli("replay", "--max", *limit), self.env, self.logs / "replay.log")
        try:
            seconds = self._until_applied(base + events, samples, t0, workers, timeout=6 * 3600)
            worker_s = sum(_tree_cpu_s(w._ps) for w in workers) - idle  # the start-up (model load) is not the replay's
            replay.wait()
            cpu = self._cpu_split(infra, events, worker=worker_s, replay=replay.cpu_s)
        finally:
            peak = self._stop_workers(workers, "w1")
        return {"command": "reelstream worker & reelstream replay --max" + " ".join(["", *limit]), "events": events,
                "wall_s": round(seconds, 2), "events_per_s": round(events / seconds), **cpu,
                "peak_rss_gib": round(peak / GIB, 3), "replay_peak_rss_gib": round(replay.peak / GIB, 3),
                "load_average_before": [round(x, 2) for x in before],
                "load_average_after": [round(x, 2) for x in os.getloadavg()], "samples": samples,
                **self._memory(counts["users"], counts["history"] + events)}  # fmt: skip

    def replay_2_workers(self) -> dict[str, Any]:
        counts = self._store_counts()
        # A fresh consumer group: Tansu keeps the stopped worker's membership, so rewinding the old group is
        # refused; a new group reads the topic from the start (auto_offset_reset earliest) on top of the reseed.
        self.env["REELSTREAM_APP_ID"] = f"reelstream-drain-{int(time.time())}"
        reseed = self.run("reseed", _cli("seed", "--reset"))
        base = self._stats().get("events_applied", 0) + self._stats().get("dead_letters", 0)
        before = os.getloadavg()
        infra = self._infra_cpu_s()
        t0 = time.perf_counter()
        workers = self._workers(2, "w2")
        samples: list[dict[str, Any]] = []
        try:
            seconds = self._until_applied(base + counts["stream"], samples, t0, workers, timeout=6 * 3600)
            cpu = self._cpu_split(infra, counts["stream"], workers=sum(_tree_cpu_s(w._ps) for w in workers))
        finally:
            peak = self._stop_workers(workers, "w2")
        return {"command": "reelstream seed --reset; 2 x reelstream worker (drain the replayed topic)",
                "events": counts["stream"], "wall_s": round(seconds, 2),
                "events_per_s": round(counts["stream"] / seconds), **cpu,
                "peak_rss_gib": round(peak / GIB, 3), "reseed_wall_s": reseed["wall_s"],
                "load_average_before": [round(x, 2) for x in before],
                "load_average_after": [round(x, 2) for x in os.getloadavg()], "samples": samples}  # fmt: skip

    def gateway(self) -> dict[str, Any]:
        """``bench/gateway.py --live`` on this state: one process (the figure), then ``--workers 2``, then one
        process scoring exactly (``gateway_retrieval=exact``), each uncached and cached."""
        runs: dict[str, Any] = {}
        for label, extra in (("one_process", []), ("two_processes", ["--processes", "2"]),
                             ("one_process_exact", ["--retrieval", "exact"])):  # fmt: skip
            out_file = self.work / f"gateway-{label}.json"
            res = self.run(f"gateway-{label}", [sys.executable, str(ROOT / "bench" / "gateway.py"), "--live",
                                                self.redis_url, "--live-var", str(self.work / "var"),
                                                "--out", str(out_file), *extra])  # fmt: skip
            runs[label] = {**res, **json.loads(out_file.read_text())["live"]}
        unc = runs["one_process"]["uncached"]["recommendations"]
        two = runs["two_processes"]["uncached"]["recommendations"]
        return {"wall_s": sum(r["wall_s"] for r in runs.values()), "req_per_s": unc["req_per_s"],
                "p50_ms": unc["p50_ms"], "p99_ms": unc["p99_ms"], "server_cpu_ms_per_req": unc["server_cpu_ms_per_req"],
                "two_processes_req_per_s": two["req_per_s"],
                "two_over_one": round(two["req_per_s"] / unc["req_per_s"], 3) if unc["req_per_s"] else None,
                "exact_req_per_s": runs["one_process_exact"]["uncached"]["recommendations"]["req_per_s"],
                "mix_94pct_hits_req_per_s": runs["one_process"]["cached"]["mix_94pct_hits"]["req_per_s"],
                "peak_rss_gib": max(r["peak_rss_gib"] for r in runs.values()), "detail": runs}  # fmt: skip

    def up_total(self) -> dict[str, Any]:
        import httpx

        port = local_services.free_port()
        self.env["REELSTREAM_GATEWAY_PORT"] = str(port)
        before = os.getloadavg()
        t0 = time.perf_counter()
        out = self.run("up", _cli("up", "--data", str(self.data), "--no-replay", "--detach"))
        try:
            users = self.redis.scan(0, match=keys.user("*"), count=1000)[1]
            uid = next(k.decode().split(":")[2] for k in users if k.decode().count(":") == 2)
            r = httpx.get(f"http://127.0.0.1:{port}/recommendations/{uid}?k=20", timeout=60)
            served = time.perf_counter() - t0
            ok = r.status_code == 200
        finally:
            subprocess.run(_cli("down"), env=self.env, cwd=ROOT, capture_output=True)
        return {
            **out,
            "wall_s": round(served, 2),
            "first_list_ok": ok,
            "load_average_before": [round(x, 2) for x in before],
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fraction", type=float, default=1.0, help="Share of ML-32M's 32 M ratings (users, movies scale).")
    ap.add_argument("--phases", nargs="*", default=list(PHASES), choices=PHASES)
    ap.add_argument("--work", type=Path, default=None, help="Work folder (default: var/bench/scale-F).")
    ap.add_argument("--data", type=Path, default=None, help="Dataset folder to reuse (default: WORK/synth).")
    ap.add_argument("--replay-limit", type=int, default=None, help="replay_1_worker: the first N STREAM events.")
    ap.add_argument("--out", type=Path, default=None, help="Default: bench/results/scale.json (scale-F.json if F < 1).")
    args = ap.parse_args()
    out = args.out or (RESULTS if args.fraction >= 1 else RESULTS.with_name(f"scale-{args.fraction:g}.json"))
    doc: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    doc.update({"reproduce": "python bench/scale.py" + (f" --fraction {args.fraction:g}" if args.fraction < 1 else ""),
                "machine": {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / GIB, 1),
                            "platform": platform.platform(), "python": platform.python_version()},
                "fraction": args.fraction})  # fmt: skip
    bench = Scale(args)
    try:
        for phase in args.phases:
            print(f"[scale] {phase} ...", flush=True)
            started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            doc[phase] = {"measured_at": started, **getattr(bench, phase)()}
            brief = {k: v for k, v in doc[phase].items() if k not in ("samples", "detail", "metrics")}
            print(f"[scale] {phase}: {json.dumps(brief)}", flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(doc, indent=2) + "\n")
    finally:
        bench.close()


if __name__ == "__main__":
    main()
