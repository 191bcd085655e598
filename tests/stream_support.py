"""Helpers for the stream tests: a store and a model in a temp var folder, worker processes, the reference state."""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import polars as pl
import pytest
import redis
from aiokafka import AIOKafkaConsumer

from bootstrap.store import load_store
from models.runtime import ModelRuntime, current_model_dir
from reelstream.settings import Settings, get_settings
from reelstream.shell import local_services
from schemas import redis_keys as keys
from schemas.side_features import GENRE, feature_name, side_metadata
from schemas.wire import codec_for
from streams.admin import ensure_topics_sync
from streams.events import rating_event, user_key
from streams.processor import Message, RatingProcessor
from streams.store import MemoryFeatureTables

#: Keys whose content legitimately depends on the run (who, when, how often redelivered).
#: rs:fence: and rs:resets: hold log identities, high watermarks and reset times (timing, not events);
#: rs:archive is the archiver's progress and rs:rebuild:lock a rebuild in flight (streams/archive.py, rebuild.py).
#: rs:online and rs:challenger follow the river model, whose learning restarts from its checkpoint after a crash.
RUN_DEPENDENT = ("rs:offsets:", "rs:fence:", "rs:resets:", "rs:worker:", keys.ONLINE, keys.CHALLENGER, keys.STATS,
                 keys.ARCHIVE, keys.REBUILD_LOCK)  # fmt: skip


def unique_stream_env(tag: str) -> dict[str, str]:
    """Topic names and group id of one test, so tests sharing the session's broker do not see each other."""
    suffix = f"{tag}-{uuid.uuid4().hex[:8]}"
    return {
        "REELSTREAM_TOPIC_RATINGS": f"ratings-{suffix}",
        "REELSTREAM_TOPIC_MOVIES": f"movies-{suffix}",
        "REELSTREAM_TOPIC_DEAD_LETTERS": f"dead-{suffix}",
        "REELSTREAM_TOPIC_IMPRESSIONS": f"impressions-{suffix}",
        "REELSTREAM_APP_ID": f"rs-{suffix}",
        "REELSTREAM_WORKER_REBUILD": "false",  # the references are the stream's events alone (no HISTORY)
    }


#: The installed model's item prior: a half-life other than trending's, so the two zsets differ.
PRIOR = {"beta": 1.0, "half_life_s": 30 * 86400.0}


def install_model(settings: Settings, movie_ids: np.ndarray, seed: int = 0) -> ModelRuntime:
    """A small random model, with an item prior (:data:`PRIOR`), saved as the CURRENT model of ``settings``."""
    runtime = ModelRuntime.random(movie_ids, hidden=32, latent=8, seed=seed)
    genres = ("Action", "Comedy", "Drama", "Horror")  # the metadata a trained model writes (schemas.side_features)
    runtime.metadata.update(side_metadata([feature_name(GENRE, g) for g in genres], None))
    runtime.metadata["item_prior"] = dict(PRIOR)
    runtime.save(settings.models_dir / "m0001")
    (settings.models_dir / "CURRENT").write_text("m0001")
    return ModelRuntime.load(current_model_dir(settings.models_dir))


def install_store(settings: Settings, built: Path) -> None:
    shutil.copytree(built, settings.store_dir)


def apply_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    """Set ``env`` for this test and return the settings rebuilt from it."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    return get_settings()


def store_and_model(
    monkeypatch: pytest.MonkeyPatch, built_store: Path, tag: str
) -> tuple[Settings, dict[str, str], ModelRuntime]:
    """One test's own topics and group (``tag``), a copy of the built store and a tiny model over its movies."""
    names = unique_stream_env(tag)
    settings = apply_env(monkeypatch, names)
    install_store(settings, built_store)
    movies = pl.read_parquet(next(built_store.glob("v*/items.parquet")))["movie_id"].to_numpy()
    return settings, names, install_model(settings, movies)


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``check`` until true; fail the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class WorkerProcess:
    """A real ``reelstream worker`` child process with its own web port and log file."""

    def __init__(self, env: dict[str, str], log_dir: Path, name: str, workers: int = 1) -> None:
        self.log = log_dir / f"worker-{name}.log"
        self.name = name
        argv = [sys.executable, "-m", "reelstream.shell.cli", "worker", "--name", name, "--workers", str(workers),
                "--web-port", str(local_services.free_port())]  # fmt: skip
        if workers > 1:  # children take consecutive ports from this one
            argv[-1] = str(_free_port_range(workers))
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def _free_port_range(n: int) -> int:
    for _ in range(50):
        base = local_services.free_port()
        if base + n < 65535 and all(port_free(base + i) for i in range(n)):
            return base
    raise RuntimeError("no free port range")


def port_free(port: int) -> bool:
    """Nothing listens on ``port`` on loopback right now."""
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def stats(client: redis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in client.hgetall(keys.STATS).items()}


def reference_state(settings: Settings, runtime: ModelRuntime, rows: list[tuple[int, int, float, int]]) -> dict:
    """The Redis contents computed directly in Python from the same events: same processor, a dict store."""
    codec = codec_for("RatingEvent")
    msgs = [
        Message(settings.topic_ratings, 0, i, codec.encode(rating_event(u, m, r, ts * 1000, "replay")), key=user_key(u))
        for i, (u, m, r, ts) in enumerate(rows)
    ]
    processor = RatingProcessor(
        runtime, MemoryFeatureTables(), topic=settings.topic_ratings, min_ts_ms=settings.event_min_ts_ms,
        max_future_ms=settings.event_max_future_ms, half_life_s=settings.trending_half_life_s,
        probe_user_base=settings.probe_user_base,
    )  # fmt: skip
    processor.run(msgs)
    return processor.store.snapshot()


def stream_rows(settings: Settings, limit: int | None = None) -> list[tuple[int, int, float, int]]:
    frame = load_store(settings.store_dir).stream.select("user_id", "movie_id", "rating", "ts")
    if limit is not None:
        frame = frame.head(limit)
    return list(frame.iter_rows())


def diff_states(expected: dict[str, Any], got: dict[str, Any], rel: float = 1e-9) -> list[str]:
    """Differences between two normalised snapshots, ignoring run-dependent keys (floats compared to ``rel``)."""
    problems: list[str] = []
    exp = {k: v for k, v in expected.items() if not k.startswith(RUN_DEPENDENT)}
    act = {k: v for k, v in got.items() if not k.startswith(RUN_DEPENDENT)}
    for k in sorted(set(exp) ^ set(act)):
        problems.append(f"{k}: only in {'expected' if k in exp else 'redis'}")
    for k in sorted(set(exp) & set(act)):
        a, b = exp[k], act[k]
        if isinstance(a, dict) and isinstance(b, dict):
            for f in sorted(set(a) | set(b)):
                if not _same(a.get(f), b.get(f), rel):
                    problems.append(f"{k}[{f}]: expected {a.get(f)!r}, redis {b.get(f)!r}")
        elif a != b:
            problems.append(f"{k}: expected {a!r:.80}, redis {b!r:.80}")
    return problems


def _same(x: Any, y: Any, rel: float) -> bool:
    if isinstance(x, float) and isinstance(y, float):
        return math.isclose(x, y, rel_tol=rel, abs_tol=1e-12)
    return x == y


def bootstrap_var(var: Path) -> Path:
    """Bootstrap the bundled dataset into ``var`` (store and quality report; ~2 s); returns ``var``."""
    env = {**os.environ, "REELSTREAM_VAR_DIR": str(var)}
    subprocess.run([sys.executable, "-m", "reelstream.shell.cli", "bootstrap"], env=env, check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    return var


@dataclass
class StreamCase:
    """One test's stream setup: its settings, child environment, model, Redis client and worker processes."""

    settings: Settings
    env: dict[str, str]
    runtime: ModelRuntime
    redis: redis.Redis
    log_dir: Path
    workers: list[WorkerProcess]

    def worker(self, name: str, workers: int = 1) -> WorkerProcess:
        w = WorkerProcess(self.env, self.log_dir, name, workers)
        self.workers.append(w)
        return w


C = TypeVar("C", bound=StreamCase)


@contextmanager
def open_case(
    cls: type[C], settings: Settings, env: dict[str, str], runtime: ModelRuntime, log_dir: Path
) -> Iterator[C]:
    """Create the case's topics, open its Redis client; stop its workers and close the client at the end."""
    ensure_topics_sync(settings)
    client = redis.Redis.from_url(settings.redis_url)
    case = cls(settings, env, runtime, client, log_dir, [])
    try:
        yield case
    finally:
        for w in case.workers:
            w.stop()
        client.close()


class ArchiverProcess:
    """A real ``reelstream archive`` child process (streams/archive.py) with its own log file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("ab") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "reelstream.shell.cli", "archive"], env=env, stdout=fh,
                                         stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        """SIGTERM (it writes what it buffered first) and wait; returns the exit code."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@dataclass(frozen=True)
class TopicRecord:
    key: bytes | None
    partition: int
    value: dict[str, Any]


async def read_topic(settings: Settings, topic: str, event: str, n: int, timeout_s: float = 60) -> list[TopicRecord]:
    """The first ``n`` records of ``topic`` from the start, decoded as ``event`` (fewer if they do not come in
    ``timeout_s``: the caller's assertion on the count says so)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)  # fmt: skip
    codec = codec_for(event)
    out: list[TopicRecord] = []
    await consumer.start()
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(out) < n and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out += [TopicRecord(r.key, r.partition, codec.decode(r.value)) for r in records]
    finally:
        await consumer.stop()
    return out
