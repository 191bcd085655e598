"""Benchmark: ``reelstream up --data DIR`` on a synthetic dataset, wall time per phase, then the replay at full speed.

    .venv/bin/python bench/up_data.py [--ratings 1000000] [--seed 0] [--sample-every 5] [--replay-timeout 900]

Writes the synthetic set once (``var/bench/synth-{N}``), then runs ``up --detach --data`` (``--rate 0``) into a
scratch var folder (``var/bench/up-var``, wiped first) on free ports, with its own Tansu and redis-server. Phases
are read from the time each line of ``up``'s output arrives: topics, bootstrap, train (``reelstream train`` with
its defaults), seed (``reelstream rebuild``, HISTORY into Redis, then starting worker, archive, gateway and replay;
the rebuild alone is ``rebuild_s``, from ``rs:seed``), then the first list served (``GET /recommendations/{user}``
answering ``personalised`` for a STREAM user). While the replay runs, :class:`monitoring.sampler.RunSampler`
samples lag, freshness and throughput every ``--sample-every`` seconds until
every STREAM event is applied. Results: ``bench/results/up_data.json``, with the load average (the cores are
shared: every timing is an upper bound).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitoring.sampler import RunSampler  # noqa: E402
from reelstream.settings import Settings  # noqa: E402
from reelstream.shell import local_services  # noqa: E402
from schemas import redis_keys as keys  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "up_data.json"
#: ``up`` output line prefix -> the phase it starts (``system._run_step`` prints "<what> ...").
PHASES = (
    ("creating topics", "topics"),
    ("bootstrapping", "bootstrap"),
    ("training the hybrid VAE", "train"),
    ("building Redis from HISTORY", "seed"),
)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "reelstream.shell.cli", *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ratings", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-every", type=float, default=5.0)
    parser.add_argument("--replay-timeout", type=float, default=900.0)
    args = parser.parse_args()

    data = ROOT / "var" / "bench" / f"synth-{args.ratings}"
    if not (data / "ratings.csv").exists():
        subprocess.run(_cli("synth", "--ratings", str(args.ratings), "--seed", str(args.seed), "--out", str(data)),
                       check=True)  # fmt: skip
    var = ROOT / "var" / "bench" / "up-var"
    shutil.rmtree(var, ignore_errors=True)
    ports = {k: local_services.free_port() for k in ("kafka", "redis", "gateway", "worker")}
    env = {**os.environ, "REELSTREAM_VAR_DIR": str(var), "KAFKA_BOOTSTRAP": f"127.0.0.1:{ports['kafka']}",
           "REDIS_URL": f"redis://127.0.0.1:{ports['redis']}/0", "REELSTREAM_GATEWAY_PORT": str(ports["gateway"]),
           "REELSTREAM_WORKER_WEB_PORT": str(ports["worker"])}  # fmt: skip
    settings = Settings(var_dir=var, kafka_bootstrap=env["KAFKA_BOOTSTRAP"], redis_url=env["REDIS_URL"])
    load0 = os.getloadavg()[0]
    marks: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    command = _cli("up", "--detach", "--data", str(data), "--rate", "0")
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.perf_counter() - t0
            log.append(line.rstrip())
            for prefix, phase in PHASES:
                if line.startswith(prefix):
                    marks.append((phase, now))
        if proc.wait() != 0:
            raise SystemExit("up failed:\n" + "\n".join(log[-40:]))
        t_up = time.perf_counter() - t0
        store = var / "store" / (var / "store" / "CURRENT").read_text().strip()
        meta = json.loads((store / "metadata.json").read_text())
        user = int(pl.read_parquet(store / "ratings_stream.parquet", n_rows=1)["user_id"][0])
        base = f"http://127.0.0.1:{ports['gateway']}"
        while True:
            rec = httpx.get(f"{base}/recommendations/{user}", timeout=10).json()
            if rec.get("source") == "personalised" and rec.get("items"):
                break
            time.sleep(0.2)  # polling a live system for its first answer
        t_list = time.perf_counter() - t0
        target = meta["counts"]["history_ratings"] + meta["counts"]["stream_ratings"]
        samples: list[dict[str, Any]] = []
        replay_t0 = time.perf_counter()
        with RunSampler(settings) as sampler:
            while True:
                sample = sampler.sample().as_dict()
                sample["t_s"] = round(time.perf_counter() - replay_t0, 1)
                samples.append(sample)
                print(json.dumps({k: sample[k] for k in ("t_s", "events_applied", "applied_per_s", "lag")}))
                if sample["events_applied"] >= target or time.perf_counter() - replay_t0 > args.replay_timeout:
                    break
                time.sleep(args.sample_every)  # the sampling period
        replay_s = time.perf_counter() - replay_t0
        client = redis.Redis.from_url(env["REDIS_URL"])
        seed = keys.text_hash(client.hgetall(keys.SEED))
        client.close()
    finally:
        subprocess.run(_cli("down"), env=env, capture_output=True, check=False)
    bounds = [*marks, ("up_done", t_up)]
    phases = {name: round(bounds[i + 1][1] - at, 1) for i, (name, at) in enumerate(bounds[:-1])}
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["reelstream", *command[3:]]),
        "dataset": {
            "ratings": args.ratings,
            **{k: meta["counts"][k] for k in ("history_ratings", "stream_ratings", "users", "movies")},
        },
        "phases_s": phases,
        #: inside the "seed" phase: the rebuild itself (rs:seed), the rest is starting worker, archive, gateway
        "rebuild_s": round((int(seed["rebuilt_ms"]) - int(seed["rebuild_started_ms"])) / 1000, 1),
        "up_s": round(t_up, 1),
        "first_list_s": round(t_list, 1),
        "replay_s_until_all_applied": round(replay_s, 1),
        "replay_applied_per_s": round(meta["counts"]["stream_ratings"] / replay_s) if replay_s else None,
        "samples": samples,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "loadavg_1m_before_after": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "up_output_tail": log[-25:],
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("phases_s", "up_s", "first_list_s", "replay_s_until_all_applied")}))


if __name__ == "__main__":
    main()
