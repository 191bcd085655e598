"""Stream benchmark: end-to-end throughput, worker CPU/RSS, and freshness at a steady rate.

    .venv/bin/python bench/stream.py                      # everything, writes bench/results/stream.json
    .venv/bin/python bench/stream.py --synthetic-events 1000000 --profile bench/results/stream_profile.txt

It starts its own Tansu broker and Redis on free ports (never the defaults), bootstraps the
bundled ml-latest-small into a temporary var folder, and uses a random model of the real
model's shape class (hidden 256, latent 64) over the store's catalogue.

* throughput: events / (first produce -> the last event's commit seen in Redis), for the
  ml-latest-small STREAM split with 1 and 2 worker processes, and for a synthetic stream;
* drain: worker capacity without the producer in the window (workers warm, stopped with SIGSTOP while
  the stream is produced, resumed, timed to the last event applied), 1 and 2 workers, for the
  ml-latest-small stream and the synthetic stream;
* worker CPU (cores busy over the run, and CPU microseconds per event), peak RSS, broker and Redis CPU,
  and the 1-minute load average before and after each scenario (the machine is shared: compare runs
  with similar load);
* ``--profile FILE``: py-spy samples the worker during the synthetic run; FILE gets where its main
  thread's time goes (by category, then the top functions);
* freshness: produce at a steady rate; the worker reports produce-to-commit latency
  (``rs:worker:{name}:freshness``) and a bare aiokafka consumer in this process reports
  produce-to-receive latency in the same run, with the same fetch wait.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import polars as pl
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bootstrap.store import load_store  # noqa: E402
from models.runtime import ModelRuntime  # noqa: E402
from reelstream.redis_client import redis_client  # noqa: E402
from reelstream.settings import Settings  # noqa: E402
from reelstream.shell import local_services  # noqa: E402
from schemas import redis_keys as keys  # noqa: E402
from schemas.wire import codec_for  # noqa: E402
from streams.admin import ensure_topics  # noqa: E402
from streams.events import rating_event, user_key  # noqa: E402
from streams.replay import replay  # noqa: E402
from streams.serve_traffic import is_served  # noqa: E402


def _procs(root: psutil.Process) -> list[psutil.Process]:
    return [root, *root.children(recursive=True)]


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _rss(procs: list[psutil.Process]) -> int:
    total = 0
    for p in procs:
        try:
            if "python" in p.name().lower() or "reelstream" in p.name().lower():
                total = max(total, p.memory_info().rss)
        except psutil.Error:
            pass
    return total


class Bench:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        run = tmp / "infra"
        kp, rp = local_services.free_port(), local_services.free_port()
        self.broker_pid = local_services.start_broker(run, "127.0.0.1", kp)
        self.redis_pid = local_services.start_redis(run, "127.0.0.1", rp)
        self.run_dir = run
        self.base_env = {**os.environ, "KAFKA_BOOTSTRAP": f"127.0.0.1:{kp}", "REDIS_URL": f"redis://127.0.0.1:{rp}/0",
                         "REELSTREAM_VAR_DIR": str(tmp / "var"),
                         "REELSTREAM_WORKER_REBUILD": "false"}  # the stream alone: no HISTORY rebuild  # fmt: skip
        subprocess.run([sys.executable, "-m", "reelstream.shell.cli", "bootstrap"], env=self.base_env, check=True,
                       capture_output=True)  # fmt: skip
        self.store = load_store(tmp / "var" / "store")
        movies = self.store.items["movie_id"].to_numpy()
        rt = ModelRuntime.random(movies, hidden=256, latent=64, seed=0)
        rt.save(tmp / "var" / "models" / "m0001")
        (tmp / "var" / "models" / "CURRENT").write_text("m0001")
        self.movies = movies
        self.redis = redis_client(f"redis://127.0.0.1:{rp}/0")

    def close(self) -> None:
        local_services.stop_process(self.run_dir, "broker")
        local_services.stop_process(self.run_dir, "redis")

    def scenario_env(self, tag: str) -> tuple[dict[str, str], Settings]:
        sfx = f"{tag}-{uuid.uuid4().hex[:6]}"
        names = {"REELSTREAM_TOPIC_RATINGS": f"ratings-{sfx}", "REELSTREAM_TOPIC_MOVIES": f"movies-{sfx}",
                 "REELSTREAM_TOPIC_DEAD_LETTERS": f"dead-{sfx}", "REELSTREAM_APP_ID": f"bench-{sfx}",
                 "REELSTREAM_TOPIC_IMPRESSIONS": f"impressions-{sfx}"}  # fmt: skip
        env = {**self.base_env, **names}
        settings = Settings(
            kafka_bootstrap=env["KAFKA_BOOTSTRAP"], redis_url=env["REDIS_URL"], var_dir=Path(env["REELSTREAM_VAR_DIR"]),
            topic_ratings=names["REELSTREAM_TOPIC_RATINGS"], topic_movies=names["REELSTREAM_TOPIC_MOVIES"],
            topic_dead_letters=names["REELSTREAM_TOPIC_DEAD_LETTERS"], app_id=names["REELSTREAM_APP_ID"],
            topic_impressions=names["REELSTREAM_TOPIC_IMPRESSIONS"],
        )  # fmt: skip
        asyncio.run(ensure_topics(settings))
        self.redis.flushdb()
        return env, settings

    def start_workers(self, env: dict[str, str], n: int, name: str) -> subprocess.Popen:
        port = local_services.free_port()
        log = (self.tmp / f"{name}.log").open("ab")
        proc = subprocess.Popen([sys.executable, "-m", "reelstream.shell.cli", "worker", "--workers", str(n),
                                 "--name", name, "--web-port", str(port if n == 1 else 47000 + (port % 1000) * 8)],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        names = [name] if n == 1 else [f"{name}-{i}" for i in range(n)]
        self._wait(lambda: all(self.redis.exists(keys.worker(x)) for x in names), 60, "worker heartbeats")
        return proc

    def _wait(self, check, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.02)

    def applied(self) -> int:
        return int(self.redis.hget(keys.STATS, "events_applied") or 0)

    def warm_up(self, settings: Settings) -> None:
        """One event through the whole path: the group has joined and the model is loaded."""
        codec = codec_for("RatingEvent")

        async def send() -> None:
            p = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
            await p.start()
            for u in range(1, 17):  # one per partition, roughly
                ev = rating_event(u, int(self.movies[0]), 4.0, 1_600_000_000_000, "live")
                await p.send_and_wait(settings.topic_ratings, codec.encode(ev), key=user_key(u))
            await p.stop()

        asyncio.run(send())
        self._wait(lambda: self.applied() >= 16, 90, "warm-up events")

    def impressions_applied(self) -> int:
        return int(self.redis.hget(keys.STATS, "impressions_applied") or 0)

    def produce_impressions(self, settings: Settings, frame: pl.DataFrame, serve_rate: float) -> int:
        """One ImpressionEvent of 20 movies before each event of the served users (``is_served``, as
        ``replay --serve-rate`` picks them), at the event's time; the event's movie is listed for a fifth
        of them (about the bundled model's HR@20), so attribution finds hits. Returns how many."""
        codec, rng = codec_for("ImpressionEvent"), np.random.default_rng(2)
        rows = [
            (u, m, ts) for u, m, ts in frame.select("user_id", "movie_id", "ts").iter_rows() if is_served(u, serve_rate)
        ]

        async def send() -> None:
            p = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
            await p.start()
            try:
                futs = []
                for i, (u, m, ts) in enumerate(rows):
                    mids = [int(x) for x in rng.choice(self.movies, 20, replace=False) if int(x) != m][:19]
                    mids.insert(int(rng.integers(0, 20)), m if rng.random() < 0.2 else int(self.movies[i % 50]))
                    mids = list(dict.fromkeys(mids))
                    ev = {"impression_id": f"b{i}", "user_id": u, "movie_ids": mids, "variant": "control",
                          "segment": "new", "model_version": "m0001", "rules_version": "r", "source": "personalised",
                          "cached": False, "degraded": False, "exploration": "none", "served_ms": ts * 1000,
                          "clock": "event", "novelty": 5.0}  # fmt: skip
                    futs.append(await p.send(settings.topic_impressions, codec.encode(ev), key=user_key(u)))
                await asyncio.gather(*futs)
            finally:
                await p.stop()

        asyncio.run(send())
        return len(rows)

    def drain(self, label: str, frame: pl.DataFrame, workers: int, serve_rate: float = 0.0) -> dict:
        """Worker capacity without the producer: workers joined and warm, then stopped (SIGSTOP) while
        the whole stream is produced, then resumed; events / (resume -> the last event applied).
        ``serve_rate``: an impression before each event of that share of users is produced too (attribution's
        cost: the rating events per second with the impressions to apply alongside).

        The group's members stay in it while stopped (the stream is produced well within the session
        timeout, and Tansu does not expire members anyway), so no rebalance happens.
        """
        env, settings = self.scenario_env(label)
        proc = self.start_workers(env, workers, f"dr-{label}")
        try:
            self.warm_up(settings)
            time.sleep(2.0)  # heartbeat timers and background commits settle
            base, ibase = self.applied(), self.impressions_applied()
            wprocs = _procs(psutil.Process(proc.pid))
            rds = psutil.Process(self.redis_pid)
            os.killpg(proc.pid, signal.SIGSTOP)
            try:
                n_imps = self.produce_impressions(settings, frame, serve_rate) if serve_rate else 0
                asyncio.run(replay(settings, frame, fingerprint=f"bench {label}"))
            finally:
                os.killpg(proc.pid, signal.SIGCONT)
            c0, r0 = _cpu(wprocs), _cpu([rds])
            la0 = round(os.getloadavg()[0], 2)
            t0 = time.time()
            deadline = time.monotonic() + 900
            while self.applied() < base + frame.height or self.impressions_applied() < ibase + n_imps:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{label}: worker stalled at {self.applied() - base}/{frame.height}")
                time.sleep(0.005)
            wall = time.time() - t0
            return {
                "events": frame.height, "impressions": n_imps, "serve_rate": serve_rate, "workers": workers,
                "drain_seconds": round(wall, 2),
                "events_per_s": round(frame.height / wall),
                "worker_cpu_cores": round((_cpu(wprocs) - c0) / wall, 2),
                "redis_cpu_cores": round((_cpu([rds]) - r0) / wall, 2),
                "loadavg_1m_before_after": [la0, round(os.getloadavg()[0], 2)],
            }  # fmt: skip
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)

    def throughput(self, label: str, frame: pl.DataFrame, workers: int, profile: Path | None = None) -> dict:
        env, settings = self.scenario_env(label)
        proc = self.start_workers(env, workers, f"tp-{label}")
        spy = None
        try:
            self.warm_up(settings)
            base = self.applied()
            wprocs = _procs(psutil.Process(proc.pid))
            broker, rds = psutil.Process(self.broker_pid), psutil.Process(self.redis_pid)
            if profile is not None:  # one worker: proc.pid is the worker process itself
                spy = start_profile(proc.pid, self.tmp / f"{label}.collapsed")
            c0, b0, r0 = _cpu(wprocs), _cpu([broker]), _cpu([rds])
            la0 = round(os.getloadavg()[0], 2)
            t0 = time.time()
            summary = asyncio.run(replay(settings, frame, fingerprint=f"bench {label}"))
            t_produced = time.time()
            peak = 0
            deadline = time.monotonic() + 900
            while self.applied() < base + frame.height:
                peak = max(peak, _rss(wprocs))
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{label}: worker stalled at {self.applied() - base}/{frame.height}")
                time.sleep(0.01)
            t1 = time.time()
            wall = t1 - t0
            if spy is not None:
                stop_profile(spy, self.tmp / f"{label}.collapsed", profile, f"{label}, {frame.height} events")
                spy = None
            return {
                "events": frame.height, "workers": workers, "seconds": round(wall, 2),
                "events_per_s": round(frame.height / wall), "produce_events_per_s": round(summary.events_per_s),
                "produce_seconds": round(t_produced - t0, 2),
                "worker_cpu_cores": round((_cpu(wprocs) - c0) / wall, 2), "worker_peak_rss_mb": round(peak / 2**20),
                "broker_cpu_cores": round((_cpu([broker]) - b0) / wall, 2),
                "redis_cpu_cores": round((_cpu([rds]) - r0) / wall, 2),
                "worker_cpu_us_per_event": round((_cpu(wprocs) - c0) / frame.height * 1e6),
                "redis_cpu_us_per_event": round((_cpu([rds]) - r0) / frame.height * 1e6),
                "loadavg_1m_before_after": [la0, round(os.getloadavg()[0], 2)],
            }  # fmt: skip
        finally:
            if spy is not None:
                spy.kill()
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)

    def freshness(self, rate: float, seconds: float) -> dict:
        env, settings = self.scenario_env("fresh")
        proc = self.start_workers(env, 1, "fresh")
        try:
            self.warm_up(settings)
            broker = psutil.Process(self.broker_pid)
            wprocs = _procs(psutil.Process(proc.pid))
            la0 = round(os.getloadavg()[0], 2)
            result = asyncio.run(self._steady(settings, rate, seconds, broker, wprocs))
            result["loadavg_1m_before_after"] = [la0, round(os.getloadavg()[0], 2)]
            self._wait(lambda: self.applied() >= 16 + result["events"], 60, "the steady events")
            time.sleep(1.5)  # let the worker's heartbeat timer publish its latest window
            fresh = {k.decode(): int(v) for k, v in self.redis.hgetall(keys.worker_freshness("fresh")).items()}
            result["worker_produce_to_commit_ms"] = fresh
            return result
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)

    async def _steady(self, settings: Settings, rate: float, seconds: float, broker, wprocs) -> dict:
        codec = codec_for("RatingEvent")
        consumer = AIOKafkaConsumer(settings.topic_ratings, bootstrap_servers=settings.kafka_bootstrap,
                                    group_id=f"bare-{uuid.uuid4().hex[:6]}", auto_offset_reset="latest",
                                    fetch_max_wait_ms=settings.stream_fetch_max_wait_ms)  # fmt: skip
        await consumer.start()
        while not consumer.assignment():
            await asyncio.sleep(0.05)
        await consumer.getmany(timeout_ms=500)
        lat: list[int] = []
        stop = asyncio.Event()

        async def consume() -> None:
            while not stop.is_set():
                for recs in (await consumer.getmany(timeout_ms=100)).values():
                    now = int(time.time() * 1000)
                    lat.extend(now - r.timestamp for r in recs)

        task = asyncio.create_task(consume())
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=0)
        await producer.start()
        rng = np.random.default_rng(1)
        n = int(rate * seconds)
        b0, w0 = _cpu([broker]), _cpu(wprocs)
        t0 = time.perf_counter()
        for i in range(n):
            ahead = t0 + i / rate - time.perf_counter()
            if ahead > 0:
                await asyncio.sleep(ahead)
            u = int(rng.integers(1, 611))
            ev = rating_event(u, int(rng.choice(self.movies[:2000])), 4.0, int(time.time() * 1000), "live")
            await producer.send(settings.topic_ratings, codec.encode(ev), key=user_key(u))
        await producer.flush()
        wall = time.perf_counter() - t0
        b1, w1 = _cpu([broker]), _cpu(wprocs)
        deadline = time.monotonic() + 10
        while len(lat) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await task
        await producer.stop()
        await consumer.stop()
        arr = np.sort(np.array(lat))
        return {
            "rate": rate, "seconds": round(wall, 1), "events": n,
            "fetch_max_wait_ms": settings.stream_fetch_max_wait_ms,
            "bare_aiokafka_produce_to_receive_ms": {"n": int(arr.size), "p50": int(np.percentile(arr, 50)),
                                                    "p99": int(np.percentile(arr, 99)), "max": int(arr[-1])},
            "broker_cpu_cores": round((b1 - b0) / wall, 2), "worker_cpu_cores": round((w1 - w0) / wall, 2),
        }  # fmt: skip


def start_profile(pid: int, raw: Path) -> subprocess.Popen:
    """``py-spy record`` on the worker (collapsed stacks, 100 Hz, idle frames included)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    argv = [spy, "record", "--pid", str(pid), "--rate", "100", "--format", "raw", "--idle", "--nonblocking"]
    argv += ["-o", str(raw)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached
    return proc


def _frame(raw: str) -> str:
    """``func (/long/path/pkg/mod.py:123)`` -> ``func (pkg/mod.py)``: one name per function, not per line."""
    name, sep, where = raw.partition(" (")
    if not sep:
        return raw
    return f"{name} ({'/'.join(where.split(':')[0].split('/')[-2:])})"


def stop_profile(proc: subprocess.Popen, raw: Path, out: Path, title: str) -> None:
    """Stop py-spy and write :func:`summarize_profile` of its stacks to ``out``."""
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(summarize_profile(raw, title))


#: (category, frame substrings): a sample goes to the first category, scanning from the leaf frame up.
CATEGORIES = (
    ("idle: event loop in select (waiting for Kafka)", ("EpollSelector.select (", "poll (")),
    ("waiting for Redis replies (blocking socket read)", ("read_from_socket (", "_HiredisParser.read_response")),
    ("redis-py: packing and sending commands", ("redis/",)),
    ("river online model (BiasedMF + ADWIN)", ("river/", "streams/online.py")),
    ("encode: tanh + mu/logvar heads", ("encode (models/state.py)", "encode_many (models/state.py)")),
    ("fold-in + per-user/item bookkeeping", ("streams/processor.py", "models/state.py", "streams/store.py")),
    ("Avro decode", ("schemas/wire.py", "fastavro")),
    ("Faust/mode per-message dispatch and streams", ("faust/", "mode/")),
    ("aiokafka client (fetch, records)", ("aiokafka/",)),
    ("asyncio machinery", ("asyncio/",)),
)


def summarize_profile(raw: Path, title: str, top: int = 25) -> str:
    """Where the worker's main thread spends its time, from py-spy's collapsed stacks (``--format raw``)."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    cats: dict[str, int] = {}
    total = busy = helper = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";")]
        if not any(f.startswith("_run_module_as_main") for f in frames):
            helper += n  # Faust/aiokafka helper threads (mostly idle), not the worker's event loop
            continue
        total += n
        cat = next((c for f in reversed(frames) for c, subs in CATEGORIES if any(x in f for x in subs)), "other")
        cats[cat] = cats.get(cat, 0) + n
        if cat.startswith("idle"):
            continue
        busy += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
    lines = [f"py-spy record --rate 100 --idle, worker process: {title}",
             f"main thread samples {total} (helper-thread samples left out: {helper})", "",
             "main thread by category (% of its samples):"]  # fmt: skip
    for name, n in sorted(cats.items(), key=lambda kv: -kv[1]):
        lines.append(f"{100 * n / max(total, 1):6.1f}%  {name}")
    lines += ["", f"top {top} functions by self samples (% of main-thread samples):"]
    for name, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * n / max(total, 1):6.1f}%  {name}")
    lines += ["", f"top {top} functions by inclusive samples (% of main-thread samples):"]
    for name, n in sorted(incl.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * n / max(total, 1):6.1f}%  {name}")
    return "\n".join(lines) + "\n"


def synthetic_stream(n: int, movies: np.ndarray, seed: int = 0) -> pl.DataFrame:
    """``n`` ratings, 10k users, Zipf-like movie popularity, one second apart in event time."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, movies.size + 1) ** 0.9
    return pl.DataFrame({
        "user_id": rng.integers(1, 10_001, n), "movie_id": rng.choice(movies, n, p=weights / weights.sum()),
        "rating": (rng.integers(1, 11, n) / 2).astype(np.float32), "ts": 1_600_000_000 + np.arange(n),
    })  # fmt: skip


def attribution(bench: Bench, stream: pl.DataFrame, rounds: int) -> dict:
    """The 1-worker drain of the bundled STREAM without impressions, with 10% and with all users served,
    alternated ``rounds`` times in one run: medians, and each one's change against no impressions."""
    runs: dict[str, list[dict]] = {"none": [], "serve_0.1": [], "serve_1.0": []}
    for r in range(rounds):
        for name, rate in (("none", 0.0), ("serve_0.1", 0.1), ("serve_1.0", 1.0)):
            runs[name].append(got := bench.drain(f"attr{r}-{name.replace('.', '')}", stream, 1, serve_rate=rate))
            print(name, got, flush=True)
    med = {name: float(np.median([x["events_per_s"] for x in rs])) for name, rs in runs.items()}
    return {
        "rating_events_per_s_median": med,
        "change_vs_none": {k: round(v / med["none"] - 1.0, 4) for k, v in med.items() if k != "none"},
        "runs": runs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--synthetic-events", type=int, default=200_000)
    ap.add_argument("--freshness-rate", type=float, default=1000.0)
    ap.add_argument("--freshness-seconds", type=float, default=20.0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "stream.json")
    scenarios = ["small1", "small2", "drain1", "drain2", "sdrain1", "sdrain2", "synthetic", "freshness", "attribution"]
    ap.add_argument("--skip", nargs="*", default=[], choices=scenarios)
    ap.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy the 1-worker synthetic run; write its top functions to this text file",
    )
    ap.add_argument(
        "--attribution-rounds",
        type=int,
        default=3,
        help="rounds of the attribution scenario (no impressions, 10% and all users served)",
    )
    args = ap.parse_args()
    cmd = "python bench/stream.py " + " ".join(sys.argv[1:])
    tmp = Path(tempfile.mkdtemp(prefix="rs-bench-stream-"))
    bench = Bench(tmp)
    machine = f"{psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB"
    results: dict = {"command": cmd.strip(), "machine": machine, "model": "random, hidden 256, latent 64",
                     "batch_max": Settings().stream_batch_max, "started": time.strftime("%Y-%m-%dT%H:%M")}  # fmt: skip
    try:
        stream = bench.store.stream.select("user_id", "movie_id", "rating", "ts")
        if "small1" not in args.skip:
            results["ml_latest_small_1_worker"] = bench.throughput("small1", stream, 1)
            print(results["ml_latest_small_1_worker"], flush=True)
        if "small2" not in args.skip:
            results["ml_latest_small_2_workers"] = bench.throughput("small2", stream, 2)
            print(results["ml_latest_small_2_workers"], flush=True)
        for n in (1, 2):
            if f"drain{n}" not in args.skip:
                results[f"ml_latest_small_drain_{n}_worker{'s' if n > 1 else ''}"] = r = bench.drain(
                    f"drain{n}", stream, n
                )
                print(r, flush=True)
        synth = synthetic_stream(args.synthetic_events, bench.movies)
        for n in (1, 2):
            if f"sdrain{n}" not in args.skip:
                results[f"synthetic_drain_{n}_worker{'s' if n > 1 else ''}"] = r = bench.drain(f"sdrain{n}", synth, n)
                print(r, flush=True)
        if "synthetic" not in args.skip:
            results["synthetic_1_worker"] = bench.throughput("synth", synth, 1, profile=args.profile)
            print(results["synthetic_1_worker"], flush=True)
        if "freshness" not in args.skip:
            results["freshness"] = bench.freshness(args.freshness_rate, args.freshness_seconds)
            print(results["freshness"], flush=True)
        if "attribution" not in args.skip:
            results["attribution_drain_1_worker"] = r = attribution(bench, stream, args.attribution_rounds)
            print(r, flush=True)
    finally:
        bench.close()
        shutil.rmtree(tmp, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
