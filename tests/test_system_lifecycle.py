"""``reelstream up --detach`` then ``reelstream down``: everything starts, a second ``up`` reuses it, nothing is left.

A temporary var folder and free ports (its own Tansu and redis-server, started by
``up``); the store and a tiny model are pre-built there, so ``up`` reuses them
instead of bootstrapping and training. The replay runs (slowly) so ``down`` has a
producer to stop too. ``--detach`` leaves a supervisor in the background, which
``down`` stops first. The admin token ``up`` generates is printed, private (0600)
and the same on the second ``up``.

``up --data DIR`` switches that var folder to a synthetic dataset: the store is bootstrapped again, the old
dataset's events (in the topic, the archive, the replay checkpoint, a Redis marker) are retired, the worker
applies the new STREAM only, and a second ``up --data`` with the same folder builds nothing. The deciding
functions (:func:`reelstream.shell.live_system.dataset_change`, :func:`bootstrap.pipeline.source_change`) are tested on
their own, without infrastructure.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import polars as pl
import psutil
import pytest
import redis
from aiokafka import AIOKafkaProducer
from rich.progress import Progress

from bootstrap.pipeline import source_change, source_files
from bootstrap.readers import sha256_file
from monitoring.sampler import RunSampler
from reelstream.errors import ReelstreamError
from reelstream.settings import Settings
from reelstream.shell import live_system, local_services
from reelstream.shell.commands.replay import EventRateColumn
from schemas import redis_keys as keys
from schemas.wire import codec_for
from streams.events import user_key
from tests.live_system import install_var
from tests.stream_support import install_model, wait_for

EXPECTED = {"broker", "redis", "worker-0", "gateway", "replay", "supervisor"} | (
    {"archive"} if live_system.archive_available() else set()
)
TOKEN_LINE = re.compile(r"admin   token (\S+)  \(generated once, in (\S+), mode 0600")


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reelstream.shell.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip


def _pids(run_dir: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in run_dir.glob("*.pid")}


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _started_here(run_dir: Path) -> list[psutil.Process]:
    """Live processes whose working folder is ``run_dir`` (``up`` starts every process there)."""
    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and Path(proc.cwd()) == run_dir:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_up_detach_then_down_leaves_no_process_behind(tmp_path: Path, built_var: Path) -> None:
    var = tmp_path / "var"
    gateway_port = local_services.free_port()
    env = {
        **os.environ,
        "REELSTREAM_VAR_DIR": str(var),
        "KAFKA_BOOTSTRAP": f"127.0.0.1:{local_services.free_port()}",
        "REDIS_URL": f"redis://127.0.0.1:{local_services.free_port()}/0",
        "REELSTREAM_GATEWAY_PORT": str(gateway_port),
        "REELSTREAM_WORKER_WEB_PORT": str(local_services.free_port()),
    }
    env.pop("REELSTREAM_ADMIN_TOKEN", None)
    settings = Settings(var_dir=var, kafka_bootstrap=env["KAFKA_BOOTSTRAP"], redis_url=env["REDIS_URL"])
    install_var(settings, built_var)
    run_dir = settings.run_dir
    try:
        first = _cli(env, "up", "--detach", "--rate", "50")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "store   reusing version 1" in first.stdout and "model   reusing" in first.stdout
        assert "seed    HISTORY and the archive applied to Redis (store v1, model random-0)" in first.stdout
        assert f"http://127.0.0.1:{gateway_port}/" in first.stdout
        token, token_path = TOKEN_LINE.search(first.stdout).groups()  # type: ignore[union-attr]
        assert Path(token_path) == settings.admin_token_path and token_path.startswith(str(var))
        assert settings.admin_token_path.read_text().strip() == token
        assert stat.S_IMODE(settings.admin_token_path.stat().st_mode) == 0o600
        pids = _pids(run_dir)
        assert set(pids) == EXPECTED, first.stdout
        assert all(_alive(pid) for pid in pids.values())

        base = f"http://127.0.0.1:{gateway_port}"
        health = httpx.get(f"{base}/health", timeout=5).json()
        assert health["redis"]["ok"] and health["broker"]["ok"] and health["model"]["ok"]
        assert httpx.get(f"{base}/", timeout=5).status_code == 200
        wait_for(lambda: httpx.get(f"{base}/stats", timeout=5).json()["events_applied"], 60, "replayed events applied")

        second = _cli(env, "up", "--detach", "--rate", "50")
        assert second.returncode == 0, second.stdout + second.stderr
        assert "worker-0 already running" in second.stdout and "gateway already answering" in second.stdout
        assert "seed    reusing HISTORY in Redis" in second.stdout
        assert "replay  already running" in second.stdout and "already answering; not starting" in second.stdout
        assert f"Already supervised by pid {pids['supervisor']}" in second.stdout
        assert TOKEN_LINE.search(second.stdout).group(1) == token  # type: ignore[union-attr]
        assert _pids(run_dir) == pids
    finally:
        down = _cli(env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    for name in EXPECTED:
        assert f"{name}" in down.stdout
    assert not [pid for pid in pids.values() if _alive(pid)]
    assert not _started_here(run_dir)
    assert not list(run_dir.glob("*.pid"))


# --------------------------------------------------------------------------- which dataset the store holds


def _dataset(folder: Path, rows: int = 3) -> Path:
    """A tiny MovieLens CSV folder (ratings, movies, tags)."""
    folder.mkdir(parents=True)
    ratings = "".join(f"{u},{m},4.0,{964_900_000 + 60 * u + m}\n" for u in range(1, rows + 1) for m in (1, 2))
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + ratings)
    (folder / "movies.csv").write_text("movieId,title,genres\n1,A (1990),Drama\n2,B (1991),Comedy\n")
    (folder / "tags.csv").write_text("userId,movieId,tag,timestamp\n1,1,fun,964900000\n")
    return folder


def _recorded(folder: Path) -> dict:
    """The dataset identity a bootstrap of ``folder`` records in the store metadata."""
    files = source_files(folder)
    return {"source": str(folder.resolve()), "source_files": files,
            "source_checksums": {f: sha256_file(folder / f) for f in files}}  # fmt: skip


def test_source_change_tells_an_edit_from_a_touch_and_another_folder(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "a")
    meta = _recorded(data)
    assert source_change(meta, data) is None
    os.utime(data / "ratings.csv", ns=(1, 1))  # new mtime, same bytes: hashed, same digest
    assert source_change(meta, data) is None
    assert source_change({k: v for k, v in meta.items() if k != "source_files"}, data) is None  # older stores
    with (data / "ratings.csv").open("a") as fh:
        fh.write("9,1,2.0,964999999\n")
    assert source_change(meta, data) == "ratings.csv changed since"
    copy = shutil.copytree(data, tmp_path / "b")
    assert source_change(_recorded(data), copy) == f"built from {data.resolve()}, not {copy.resolve()}"
    (data / "tags.csv").unlink()
    assert "the folder now holds ['movies.csv', 'ratings.csv']" in str(source_change(meta, data))


def test_dataset_change_bootstraps_a_missing_store_and_keeps_any_store_when_no_dataset_is_named(
    tmp_path: Path,
) -> None:
    settings = Settings(var_dir=tmp_path / "var")
    data = _dataset(tmp_path / "a")
    assert live_system.dataset_change(settings, data) == "no feature store yet"
    version = settings.store_dir / "v0003"
    version.mkdir(parents=True)
    (version / "metadata.json").write_text(json.dumps({"version": 3, **_recorded(tmp_path / "a")}))
    (settings.store_dir / "CURRENT").write_text("v0003")
    assert live_system.dataset_change(settings, data) is None
    other = _dataset(tmp_path / "c", rows=4)
    assert live_system.dataset_change(settings, other) == f"store v3 built from {data.resolve()}, not {other.resolve()}"
    assert live_system.dataset_change(settings, None) is None  # no --data: the CURRENT store, whatever it holds

    events = settings.store_dir / "events.json"  # whose events the topics, archive and Redis hold
    assert live_system.events_owner_change(settings) is None  # not recorded (a var folder from before): kept
    live_system._record_events_owner(settings)
    assert live_system.events_owner_change(settings) is None
    appended = {"version": 4, **_recorded(tmp_path / "a"), "appended": [{"file": "more.csv"}]}
    (settings.store_dir / "v0004").mkdir()
    (settings.store_dir / "v0004" / "metadata.json").write_text(json.dumps(appended))
    (settings.store_dir / "CURRENT").write_text("v0004")
    assert live_system.events_owner_change(settings) is None  # an appended store is still that dataset
    events.write_text(json.dumps({"source": str(other.resolve()), "source_checksums": {}}))
    assert live_system.events_owner_change(settings) == (
        f"the event log holds the events of {other.resolve()}, the store v4 is {data.resolve()}"
    )  # `reelstream bootstrap --data` of another folder, then `up` without --data: prepare retires the log


def test_the_chosen_dataset_reaches_every_child_and_rate_0_is_unthrottled(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "var")
    data = _dataset(tmp_path / "a")
    env = live_system._child_env(settings, live_system.SystemPlan(data=data))
    assert env["REELSTREAM_DATA_PATH"] == str(data.resolve())
    assert "REELSTREAM_DATA_PATH" not in live_system._child_env(settings, live_system.SystemPlan())
    column = EventRateColumn()
    with Progress(column) as bar:
        task = bar.add_task("replay", total=10)
        assert column.render(bar.tasks[task]).plain == "- events/s"
    replay = subprocess.run([sys.executable, "-m", "reelstream.shell.cli", "replay", "--rate", "0", "--max"],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert replay.returncode != 0 and "choose one of --rate, --speed and --max" in replay.stdout + replay.stderr


def test_retiring_the_event_log_is_refused_while_a_process_of_the_system_runs(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "var", redis_url="redis://127.0.0.1:1/0")  # never reached
    settings.run_dir.mkdir(parents=True)
    (settings.run_dir / "worker-0.pid").write_text(str(os.getpid()))
    with pytest.raises(ReelstreamError, match=r"in use by worker-0: run `reelstream down` first"):
        live_system.retire_event_log(settings)


# --------------------------------------------------------------------------- up --data, live

#: A user id no synthetic dataset has: its event in the old log must not reach the new state.
OLD_USER = 987_654


def _produce_old_event(settings: Settings, movie_id: int) -> None:
    """One rating of the 'old dataset' in the ratings topic, as a replay would have left it."""
    event = {"event_id": "old-dataset-1", "user_id": OLD_USER, "movie_id": movie_id, "rating": 5.0,
             "event_ts": 964_900_000_000, "source": "replay"}  # fmt: skip
    value = codec_for("RatingEvent").encode(event)

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(settings.topic_ratings, value, key=user_key(OLD_USER))
        finally:
            await producer.stop()

    asyncio.run(send())


def test_up_data_switches_to_a_synthetic_dataset_and_a_second_up_builds_nothing(
    tmp_path: Path, built_var: Path
) -> None:
    """From the bundled store (v1) to a 20k synthetic set: a new store v2, the old log retired, the new STREAM
    applied; then a second ``up --data`` reuses the store, the model and Redis.

    The model is not trained here (a minute of CPU; ``reelstream train`` has its own tests): a tiny random model
    of the synthetic movies, marked as trained on store v2, stands where ``train`` would publish one, so ``up``
    takes the reuse branch for it. Everything else is the real path, on the real broker and Redis.
    """
    data = tmp_path / "synth"
    synth = subprocess.run([sys.executable, "-m", "reelstream.shell.cli", "synth", "--ratings", "20000", "--out",
                            str(data)], capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert synth.returncode == 0, synth.stdout + synth.stderr
    movies = pl.read_csv(data / "movies.csv")
    var = tmp_path / "var"
    gateway_port = local_services.free_port()
    env = {
        **os.environ,
        "REELSTREAM_VAR_DIR": str(var),
        "KAFKA_BOOTSTRAP": f"127.0.0.1:{local_services.free_port()}",
        "REDIS_URL": f"redis://127.0.0.1:{local_services.free_port()}/0",
        "REELSTREAM_GATEWAY_PORT": str(gateway_port),
        "REELSTREAM_WORKER_WEB_PORT": str(local_services.free_port()),
    }
    settings = Settings(var_dir=var, kafka_bootstrap=env["KAFKA_BOOTSTRAP"], redis_url=env["REDIS_URL"])
    install_var(settings, built_var)  # the bundled dataset's store v1 and a model of it
    install_model(settings, movies["movieId"].to_numpy())  # replaces it: the synthetic movies, "trained on v2"
    meta_path = settings.models_dir / "m0001" / "metadata.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "data_version": 2}))
    try:
        infra_up = _cli(env, "infra", "up")  # the old dataset's leftovers, where the switch must find them
        assert infra_up.returncode == 0, infra_up.stdout + infra_up.stderr
        _produce_old_event(settings, int(movies["movieId"][0]))
        settings.replay_checkpoint.write_text(json.dumps({"ident": {"fingerprint": "store v1"}, "next": 7}))
        old_segment = settings.archive_dir / settings.topic_ratings / "p0" / "e0-0-0.parquet"
        old_segment.parent.mkdir(parents=True)
        old_segment.write_bytes(b"the old dataset's archive")
        client = redis.Redis.from_url(env["REDIS_URL"])
        # A marker naming the versions the switch ends on: only the retirement keeps it from being trusted.
        client.hset(keys.SEED, mapping={"status": "done", "store_version": 2, "model_version": "random-0"})

        first = _cli(env, "up", "--detach", "--data", str(data), "--rate", "0")
        out = first.stdout + first.stderr
        assert first.returncode == 0, out
        assert f"store   building from {data.resolve()}: store v1 built from " in out
        assert "topics  4 deleted and created again, empty" in out
        assert "archive the old dataset's archive moved to" in out and not old_segment.exists()
        assert "replay  the old dataset's checkpoint deleted" in out
        assert "store   built version 2" in out and "model   reusing" in out
        assert "seed    HISTORY and the archive applied to Redis (store v2, model random-0)" in out
        assert "replay  started as fast as the system takes" in out
        store_meta = json.loads((settings.store_dir / "v0002" / "metadata.json").read_text())
        assert store_meta["source"] == str(data.resolve()) and set(store_meta["source_files"]) >= {"ratings.csv"}
        assert json.loads((settings.store_dir / "events.json").read_text())["source"] == str(data.resolve())
        applied = store_meta["counts"]["history_ratings"] + store_meta["counts"]["stream_ratings"]  # seed + replay

        base = f"http://127.0.0.1:{gateway_port}"
        wait_for(lambda: (httpx.get(f"{base}/stats", timeout=5).json()["events_applied"] or 0) >= applied,
                 120, "the synthetic STREAM applied")  # fmt: skip
        assert not client.exists(keys.user(OLD_USER)), "the old dataset's event reached the new state"
        stream = pl.read_parquet(settings.store_dir / "v0002" / "ratings_stream.parquet")
        user = int(stream["user_id"][0])
        rec = httpx.get(f"{base}/recommendations/{user}", timeout=10).json()
        assert rec["source"] == "personalised" and rec["items"], rec
        titles = dict(zip(movies["movieId"].to_list(), movies["title"].to_list(), strict=True))
        assert all(titles[item["movie_id"]] == item["title"] for item in rec["items"])
        with RunSampler(settings) as sampler:
            sample = sampler.sample()
        assert sample.events_applied >= applied and sample.lag >= 0 and sample.freshness_ms

        second = _cli(env, "up", "--detach", "--data", str(data), "--rate", "0")
        out2 = second.stdout + second.stderr
        assert second.returncode == 0, out2
        assert "store   reusing version 2" in out2 and "model   reusing" in out2
        assert "seed    reusing HISTORY in Redis (store v2, model random-0)" in out2
        assert "bootstrapping" not in out2 and "deleted and created again" not in out2
        assert sorted(p.name for p in settings.store_dir.glob("v*")) == ["v0001", "v0002"]
        client.close()
    finally:
        down = _cli(env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not list(settings.run_dir.glob("*.pid"))
