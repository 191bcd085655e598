"""Chaos benchmark: a replay plus live POSTs while worker, Redis, gateway and broker are killed with SIGKILL.

    .venv/bin/python bench/chaos.py                                  # 4 phases x 75 s, 5 faults each
    .venv/bin/python bench/chaos.py --phase-s 30 --faults 2 --out /tmp/chaos.json   # a quick look

Everything runs on free loopback ports in ``var/bench-chaos`` (bootstrapped and trained there once, then
reused). One phase per fault type, so every lost or doubled event is attributed to the fault that caused it:

1. a fresh Redis (its AOF folder removed) and ``reelstream up --no-replay`` (broker, Redis, seed, worker,
   archive, gateway; ``up`` supervises them and restarts what dies);
2. for ``--phase-s`` seconds: ``reelstream replay --rate R --limit N`` (restarted with ``--resume`` when it
   exits non-zero, as ``up`` does) and live ``POST /ratings`` at ``--post-rate``; at random moments (at least
   ``--min-gap-s`` apart) ``kill -9`` of the phase's target (its pid file in ``var/run``);
3. the replay is let finish (every one of its N events was then acknowledged by a broker), the POSTs stop,
   and the harness waits until the worker has applied everything the log holds;
4. the final Redis state is compared with a reference built in this process by the worker's own processor over
   an in-memory store, from HISTORY plus every acknowledged event: the replay's N events and each POST answered
   202 (plus each POST answered otherwise whose event is in Redis all the same: a send that timed out can
   still reach the broker; counted apart as ``posts_not_202_but_applied``). Per user, ``n`` (events
   applied) against the reference's: fewer is *lost*, more is *doubled*; users whose ``n`` matches are
   also compared on their latent state (``mu``).

For broker kills on the memory-only local broker, events the broker acknowledged but the worker had not
read would be gone with it: the producers send again what was acknowledged in their resend window
(``streams/resend.py``), and the worker applies each event once. The worker's estimate of old-log records
it never read (``rs:stats`` ``events_lost``) is recorded too. ``missing`` locates any event absent from
Redis by its exact ``rated`` entry (replay indices as runs).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bootstrap.store import load_store  # noqa: E402
from models.runtime import ModelRuntime, current_model_dir  # noqa: E402
from reelstream.redis_client import redis_client  # noqa: E402
from reelstream.settings import Settings  # noqa: E402
from reelstream.shell import local_services  # noqa: E402
from schemas import redis_keys as keys  # noqa: E402
from schemas.user_record import encode_rated  # noqa: E402
from schemas.wire import codec_for  # noqa: E402
from streams.admin import high_watermarks  # noqa: E402
from streams.events import rating_event  # noqa: E402
from streams.processor import Message, RatingProcessor  # noqa: E402
from streams.store import MemoryFeatureTables  # noqa: E402

FAULTS = ("worker", "gateway", "redis", "broker")
#: The pid file each fault kills (``var/run/<name>.pid``).
TARGET = {"worker": "worker-0", "gateway": "gateway", "redis": "redis", "broker": "broker"}
#: The processor's ``now`` for the reference: far enough ahead that no POSTed event is "in the future".
REFERENCE_CLOCK_PAD_S = 3600.0


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "reelstream.shell.cli", *args]


def _load_average() -> float:
    return round(os.getloadavg()[0], 2)


@dataclass
class Phase:
    fault: str
    faults: list[float] = field(default_factory=list)  #: seconds into the phase of each kill
    posts_accepted: list[tuple[int, int, float, int]] = field(default_factory=list)
    posts_refused: int = 0  #: 503s while a dependency was down (not acknowledged: not in the reference)
    posts_other: dict[str, int] = field(default_factory=dict)
    #: POSTs answered other than 202 (503, a timeout): not acknowledged, but possibly produced all the same
    posts_unanswered: list[tuple[int, int, float, int]] = field(default_factory=list)
    replay_restarts: int = 0
    result: dict[str, Any] = field(default_factory=dict)


class System:
    """One ``reelstream up`` in ``var`` on its own ports, supervised in the foreground."""

    def __init__(self, var: Path, token: str) -> None:
        self.var = var
        self.env = {
            **os.environ,
            "REELSTREAM_VAR_DIR": str(var),
            "KAFKA_BOOTSTRAP": f"127.0.0.1:{local_services.free_port()}",
            "REDIS_URL": f"redis://127.0.0.1:{local_services.free_port()}/0",
            "REELSTREAM_GATEWAY_PORT": str(local_services.free_port()),
            "REELSTREAM_WORKER_WEB_PORT": str(local_services.free_port()),
            "REELSTREAM_ADMIN_TOKEN": token,
            "REELSTREAM_PROBE_INTERVAL_S": "5",
            # The faults are deliberate and frequent: no crash loop may stop the system under test.
            "REELSTREAM_SUPERVISOR_CRASH_LIMIT": "1000",
        }
        self.settings = Settings(
            var_dir=var, kafka_bootstrap=self.env["KAFKA_BOOTSTRAP"], redis_url=self.env["REDIS_URL"],
            gateway_port=int(self.env["REELSTREAM_GATEWAY_PORT"]),
        )  # fmt: skip
        self.up_proc: subprocess.Popen[bytes] | None = None
        self.base = f"http://127.0.0.1:{self.settings.gateway_port}"

    def prepare(self) -> None:
        """Bootstrap and train once (reused by later runs), with local infrastructure started for it."""
        subprocess.run(_cli("up", "--detach", "--no-replay"), env=self.env, check=True, cwd=ROOT)
        subprocess.run(_cli("down"), env=self.env, check=True, cwd=ROOT)

    def start(self) -> None:
        """A fresh Redis and no replay checkpoint, then ``up`` (foreground, supervising) until it answers."""
        shutil.rmtree(self.settings.run_dir / "redis", ignore_errors=True)
        self.settings.replay_checkpoint.unlink(missing_ok=True)
        shutil.rmtree(self.settings.store_dir / "archive", ignore_errors=True)
        log = (self.var / "chaos-up.log").open("ab")
        self.up_proc = subprocess.Popen(_cli("up", "--no-replay"), env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                        cwd=ROOT, start_new_session=True)  # fmt: skip
        local_services.wait_until(self._ready, 600, "reelstream up", 0.5)

    def _ready(self) -> bool:
        if self.up_proc is not None and self.up_proc.poll() is not None:
            raise RuntimeError(f"reelstream up exited ({self.up_proc.returncode}); see {self.var}/chaos-up.log")
        try:
            return httpx.get(f"{self.base}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.up_proc is not None and self.up_proc.poll() is None:
            os.killpg(self.up_proc.pid, signal.SIGTERM)
            self.up_proc.wait(timeout=120)
        subprocess.run(_cli("down"), env=self.env, check=False, cwd=ROOT, capture_output=True)

    def pid(self, name: str) -> int | None:
        return local_services.running_pid(self.settings.run_dir, name)

    def redis(self) -> redis.Redis:
        return redis_client(self.settings.redis_url, timeout=5.0)


def _post_loop(system: System, phase: Phase, users: list[int], movies: list[int], rate: float,
               stop: threading.Event, rng: random.Random) -> None:  # fmt: skip
    """Live ratings at ``rate``/s; a 202 is an acknowledgement the reference must honour."""
    with httpx.Client(base_url=system.base, timeout=5) as client:
        while not stop.is_set():
            uid, mid, r = rng.choice(users), rng.choice(movies), rng.randint(1, 10) / 2
            ts = int(time.time() * 1000)
            try:
                resp = client.post("/ratings", json={"user_id": uid, "movie_id": mid, "rating": r, "event_ts": ts})
                code = str(resp.status_code)
            except httpx.HTTPError as exc:
                code = type(exc).__name__
            if code == "202":
                phase.posts_accepted.append((uid, mid, r, ts))
            else:
                phase.posts_unanswered.append((uid, mid, r, ts))
                if code == "503":
                    phase.posts_refused += 1
                else:
                    phase.posts_other[code] = phase.posts_other.get(code, 0) + 1
            stop.wait(1.0 / rate)


def _replay(system: System, rate: float, limit: int, phase: Phase, stop_by: float) -> None:
    """``reelstream replay --limit`` until it completes, restarted with ``--resume`` when it fails."""
    argv = _cli("replay", "--rate", f"{rate:g}", "--limit", str(limit))
    log = (system.var / "chaos-replay.log").open("ab")
    while True:
        proc = subprocess.run(argv, env=system.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, check=False)
        if proc.returncode == 0:
            return
        if time.monotonic() > stop_by:
            raise RuntimeError(f"replay kept failing (exit {proc.returncode}); see {system.var}/chaos-replay.log")
        phase.replay_restarts += 1
        argv = _cli("replay", "--rate", f"{rate:g}", "--limit", str(limit), "--resume")
        time.sleep(1.0)  # the broker is being restarted by the supervisor


def _kill(system: System, fault: str) -> bool:
    pid = system.pid(TARGET[fault])
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def _drained(system: System) -> bool:
    """Every record the ratings and movies logs hold is applied (fence + 1 == high watermark)."""
    import asyncio

    client = system.redis()
    try:
        for topic in (system.settings.topic_ratings, system.settings.topic_movies):
            ends = asyncio.run(high_watermarks(system.settings, topic))
            fences = {int(p): int(o) for p, o in client.hgetall(keys.offsets(topic)).items()}
            if any(end > fences.get(p, -1) + 1 for p, end in ends.items() if end > 0):
                return False
        return True
    except Exception:  # a dependency is still restarting: not drained yet
        return False
    finally:
        client.close()


def _reference(settings: Settings, stream_rows: list[tuple[int, int, float, int]],
               posts: list[tuple[int, int, float, int]]) -> MemoryFeatureTables:  # fmt: skip
    """HISTORY then every acknowledged event through the worker's processor, on an in-memory store."""
    store_data = load_store(settings.store_dir)
    runtime = ModelRuntime.load(current_model_dir(settings.models_dir))
    mem = MemoryFeatureTables()
    clock_s = time.time() + REFERENCE_CLOCK_PAD_S
    proc = RatingProcessor(
        runtime, mem, topic="reference", min_ts_ms=settings.event_min_ts_ms, max_future_ms=settings.event_max_future_ms,
        half_life_s=settings.trending_half_life_s, clock=lambda: clock_s,
    )  # fmt: skip
    codec = codec_for("RatingEvent")
    hist = store_data.history.select("user_id", "movie_id", "rating", "ts")
    rows = [(u, m, r, ts * 1000) for u, m, r, ts in hist.iter_rows()]
    rows += [(u, m, r, ts * 1000) for u, m, r, ts in stream_rows]
    rows += posts
    batch: list[Message] = []
    for i, (u, m, r, ts_ms) in enumerate(rows):
        value = codec.encode(rating_event(u, m, r, ts_ms, "replay"))
        batch.append(Message("reference", 0, i, value, key=str(u).encode()))
        if len(batch) == 5000:
            proc.run(batch)
            batch = []
    if batch:
        proc.run(batch)
    return mem


def _compare(system: System, ref: MemoryFeatureTables) -> dict[str, Any]:
    client = system.redis()
    probe_base = system.settings.probe_user_base
    lost = doubled = state_diff = users = 0
    try:
        for key, h in ref.hashes.items():
            parts = key.split(":")
            if len(parts) != 3 or parts[1] != "user":
                continue
            uid = int(parts[2])
            if uid >= probe_base:
                continue
            users += 1
            got = client.hmget(key, "n", "mu")
            n_ref, n_got = int(h["n"]), int(got[0] or 0)
            lost += max(n_ref - n_got, 0)
            doubled += max(n_got - n_ref, 0)
            if n_ref == n_got and got[1] is not None:
                mu_ref = np.frombuffer(h["mu"], dtype=np.float32)
                if not np.allclose(np.frombuffer(got[1], dtype=np.float32), mu_ref, atol=1e-4):
                    state_diff += 1
        stats = keys.text_hash(client.hgetall(keys.STATS))
    finally:
        client.close()
    return {
        "users": users, "lost": lost, "doubled": doubled, "users_state_differs": state_diff,
        "counted_lost": int(float(stats.get("events_lost", 0))), "log_resets": int(float(stats.get("log_resets", 0))),
        "stats": stats,
    }  # fmt: skip


def _lost_events(system: System, stream_rows: list[tuple[int, int, float, int]],
                 posts: list[tuple[int, int, float, int]],
                 refused: list[tuple[int, int, float, int]]) -> dict[str, Any]:  # fmt: skip
    """Which events are missing from their user's rated set, by their exact rated entry (rating and event time):
    replay indices as runs ``[first, last]`` (the replay sends index ``i`` about ``i / rate`` seconds after
    it starts), POSTs answered 202, and POSTs answered otherwise (503, timeouts) that were applied anyway."""

    def present(rows: list[tuple[int, int, float, int]], ts_scale: int) -> list[bool]:
        pipe = client.pipeline(transaction=False)
        for u, m, _r, _ts in rows:
            pipe.hget(keys.user_rated(u), m)
        got = pipe.execute()
        return [v is not None and v.decode() == encode_rated({m: (r, ts * ts_scale)})[1]
                for (u, m, r, ts), v in zip(rows, got, strict=True)]  # fmt: skip

    client = system.redis()
    try:
        replayed, posted, others = present(stream_rows, 1000), present(posts, 1), present(refused, 1)
    finally:
        client.close()
    runs: list[list[int]] = []
    for i, ok in enumerate(replayed):
        if ok:
            continue
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    delivered = [row for row, ok in zip(refused, others, strict=True) if ok]
    return {"replay_missing": sum(not ok for ok in replayed), "replay_missing_runs": runs[:200],
            "posts_missing": sum(not ok for ok in posted), "posts_not_202_but_applied": len(delivered),
            "delivered": delivered}  # fmt: skip


def run_phase(system: System, fault: str, args: argparse.Namespace, rng: random.Random) -> Phase:
    phase = Phase(fault)
    system.start()
    try:
        store = load_store(system.settings.store_dir)
        stream = store.stream.select("user_id", "movie_id", "rating", "ts")
        limit = min(int(args.rate * args.phase_s), stream.height)
        users = store.history["user_id"].unique().to_list()
        movies = store.history["movie_id"].unique().to_list()
        stop = threading.Event()
        poster = threading.Thread(target=_post_loop, args=(system, phase, users, movies, args.post_rate, stop, rng))
        t0 = time.monotonic()
        replayer = threading.Thread(target=_replay, args=(system, args.rate, limit, phase, t0 + args.phase_s + 600))
        poster.start()
        replayer.start()
        # Fault times: uniform over the phase, at least min_gap_s apart (the system needs time to come back).
        slots = sorted(rng.uniform(5.0, args.phase_s - 5.0) for _ in range(args.faults))
        for i in range(1, len(slots)):
            slots[i] = max(slots[i], slots[i - 1] + args.min_gap_s)
        for at in slots:
            time.sleep(max(at - (time.monotonic() - t0), 0.0))  # the schedule, not synchronisation
            if _kill(system, fault):
                phase.faults.append(round(time.monotonic() - t0, 1))
        replayer.join()
        stop.set()
        poster.join()
        # Let the last restarts finish and the worker apply everything the logs hold.
        local_services.wait_until(lambda: system._ready() and _drained(system), 300, "worker drained", 1.0)
        rows = stream.slice(0, limit).rows()
        missing = _lost_events(system, rows, phase.posts_accepted, phase.posts_unanswered)
        # A POST answered 503 or timed out was not acknowledged, but its send may still have reached the
        # broker: such an event is at-least-once delivery, not a double, so the reference has it too.
        ref = _reference(system.settings, rows, phase.posts_accepted + missing.pop("delivered"))
        phase.result = _compare(system, ref)
        phase.result["missing"] = missing
        try:
            phase.result["health"] = httpx.get(f"{system.base}/health", timeout=5).json()
        except httpx.HTTPError as exc:
            phase.result["health"] = str(exc)
        phase.result["replayed"] = limit
    finally:
        system.stop()
    return phase


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phase-s", type=float, default=75.0, help="seconds of chaos per fault type")
    p.add_argument("--faults", type=int, default=5, help="kills per fault type")
    p.add_argument("--min-gap-s", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=100.0, help="replay events per second")
    p.add_argument("--post-rate", type=float, default=5.0, help="live POSTs per second")
    p.add_argument("--only", nargs="*", choices=FAULTS, default=list(FAULTS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--var", type=Path, default=ROOT / "var" / "bench-chaos")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "chaos.json")
    args = p.parse_args()
    rng = random.Random(args.seed)
    args.var.mkdir(parents=True, exist_ok=True)
    system = System(args.var, token=os.environ.get("REELSTREAM_ADMIN_TOKEN") or f"chaos-{rng.getrandbits(64):x}")
    load_before = _load_average()
    t0 = time.monotonic()
    system.prepare()
    phases = []
    for fault in args.only:
        print(f"phase {fault}: {args.faults} kills over {args.phase_s:.0f} s", flush=True)
        phase = run_phase(system, fault, args, rng)
        r = phase.result
        print(f"  kills at {phase.faults}; lost {r['lost']}, doubled {r['doubled']}, counted lost {r['counted_lost']}, "
              f"state differs {r['users_state_differs']}", flush=True)  # fmt: skip
        phases.append(phase)
    out = {
        "command": "python bench/chaos.py " + " ".join(sys.argv[1:]),
        "load_average_before": load_before,
        "load_average_after": _load_average(),
        "wall_s": round(time.monotonic() - t0, 1),
        "faults_total": sum(len(ph.faults) for ph in phases),
        "phases": [
            {"fault": ph.fault, "kills": len(ph.faults), "kill_times_s": ph.faults, "replayed": ph.result["replayed"],
             "posts_accepted": len(ph.posts_accepted), "posts_503": ph.posts_refused, "posts_other": ph.posts_other,
             "replay_restarts": ph.replay_restarts,
             **{k: v for k, v in ph.result.items() if k not in {"replayed"}}}
            for ph in phases
        ],
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
