"""``reelstream walk``: the live prequential walk through Kafka, the worker, Redis and the gateway, against the
offline walk of the same model (docs/experiments.md, "The live walk against the offline walk").

It runs a private system beside anything else: its own broker and Redis on free loopback ports under
``var/walk/`` (the store and models are the CURRENT ones, linked), HISTORY seeded, one worker, one gateway with
no response cache and a rule set that changes nothing (``gateway/rules/neutral.yaml``, or ``--rules``). Then
it replays STREAM with every user served, each list waiting for the events before it to be applied
(:class:`streams.live_walk.LiveWalk`), stops the system, walks the same events offline and prints both.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bootstrap.store import load_store
from models.runtime import ModelRuntime, current_model_dir
from monitoring.experiments import report as arms_report
from reelstream.addresses import gateway_url
from reelstream.console import console
from reelstream.errors import InfraError
from reelstream.redis_client import redis_client
from reelstream.settings import Settings, get_settings
from reelstream.shell import live_system, local_services
from schemas import redis_keys as keys
from streams.admin import ensure_topics_sync, high_watermarks
from streams.live_walk import LiveWalk, compare, offline_walk
from streams.replay import replay

__all__ = ["NEUTRAL_RULES", "walk"]

NEUTRAL_RULES = Path(__file__).resolve().parents[3] / "gateway" / "rules" / "neutral.yaml"
HOST = "127.0.0.1"
#: The gateway re-reads the worker's item prior this often during the walk (default 2 s): the lists then see
#: the prior of the events before them, as the offline walk does.
PRIOR_REFRESH_S = 0.02
READY_TIMEOUT_S = 120.0


def walk(
    limit: Annotated[int | None, typer.Option(min=1, help="Walk only the first N STREAM events.")] = None,
    rules: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="Serve with this rule set (default: neutral).")
    ] = None,
    cache: Annotated[bool, typer.Option(help="Keep the gateway's response cache on (by design it differs).")] = False,
) -> None:
    """Replay STREAM as a live prequential walk on a private system and compare it with the offline walk."""
    settings = get_settings()
    store = load_store(settings.store_dir)
    model_dir = current_model_dir(settings.models_dir)
    runtime = ModelRuntime.load(model_dir)
    total = store.stream.height if limit is None else min(limit, store.stream.height)
    ws, env = _private_system(settings, rules or NEUTRAL_RULES, cache)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a TERM stops the private system as Ctrl-C does
    run_dir = ws.run_dir
    console.print(f"[bold]walk[/] model {runtime.version}, store v{store.version}: {total:,} events, private "
                  f"system in {ws.var_dir} (broker {ws.kafka_bootstrap}, {ws.redis_url})")  # fmt: skip
    try:
        local_services.start_broker(run_dir, HOST, int(ws.kafka_bootstrap.rsplit(":", 1)[1]))
        local_services.start_redis(run_dir, HOST, int(ws.redis_url.rsplit(":", 1)[1].split("/")[0]), ws)
        ensure_topics_sync(ws)
        _step(["seed"], env, "seed HISTORY")
        cli = [sys.executable, "-m", "reelstream.shell.cli"]
        local_services.spawn(run_dir, "worker-0", [*cli, "worker", "--name", "walk"], env=env)
        local_services.wait_until(lambda: live_system.worker_heartbeat(ws), READY_TIMEOUT_S, "the worker", 0.2)
        url = gateway_url(HOST, ws.gateway_port)
        local_services.spawn(run_dir, "gateway", [*cli, "gateway"], env=env)
        local_services.wait_until(lambda: live_system.gateway_answers(url), READY_TIMEOUT_S, "the gateway", 0.2)
        live, summary = _walk_live(ws, url, store, limit, total)
        _impressions_applied(ws, url, live.summary.served)
        arms = _arms(ws, runtime)
    finally:
        for name in ("gateway", "worker-0", "broker", "redis"):
            local_services.stop_process(run_dir, name)
    offline = offline_walk(runtime, store, limit)
    got = compare(live.steps, offline)
    doc = {
        "model": runtime.version, "store_version": store.version, "events": total, "rules": str(rules or "neutral"),
        "cache": cache, **got, "late_lists": live.late, "failed_requests": live.summary.failed,
        "replay_s": round(summary.seconds, 1), "wait_for_worker_s": round(live.wait_s, 1),
        "of_which_broker_acks_s": round(live.ack_wait_s, 1), "of_which_gateway_prior_s": round(live.prior_wait_s, 1),
        "offline_s": round(offline.seconds, 1), "worker_attribution": arms,
        "evaluate_streaming_hr": _evaluate_hr(settings, runtime.version) if limit is None else None,
        "command": "reelstream walk" + (f" --limit {limit}" if limit else ""),
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }  # fmt: skip
    out = settings.reports_dir / "live_walk.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    console.print(_table(doc))
    console.print(f"written to {out}")


def _private_system(settings: Settings, rules: Path, cache: bool) -> tuple[Settings, dict[str, str]]:
    """``var/walk/`` (fresh; store and models linked) and the settings and child environment pointing there."""
    var = settings.var_dir / "walk"
    shutil.rmtree(var, ignore_errors=True)
    var.mkdir(parents=True)
    for name in ("store", "models"):
        (var / name).symlink_to(getattr(settings, f"{name}_dir").resolve(), target_is_directory=True)
    (var / "gateway").mkdir()
    shutil.copyfile(rules, var / "gateway" / "rules.yaml")
    ports = {name: local_services.free_port(HOST) for name in ("kafka", "redis", "gateway", "web")}
    env = {
        **os.environ, "REELSTREAM_VAR_DIR": str(var), "KAFKA_BOOTSTRAP": f"{HOST}:{ports['kafka']}",
        "REDIS_URL": f"redis://{HOST}:{ports['redis']}/0", "REELSTREAM_GATEWAY_HOST": HOST,
        "REELSTREAM_GATEWAY_PORT": str(ports["gateway"]), "REELSTREAM_WORKER_WEB_PORT": str(ports["web"]),
        "REELSTREAM_GATEWAY_PRIOR_REFRESH_S": str(PRIOR_REFRESH_S),
    }  # fmt: skip
    if not cache:
        env["REELSTREAM_GATEWAY_CACHE_SIZE"] = "0"
    env.pop("REELSTREAM_GATEWAY_RULES_PATH", None)  # the private rules file, whatever the environment says
    ws = settings.model_copy(update={
        "var_dir": var, "kafka_bootstrap": env["KAFKA_BOOTSTRAP"], "redis_url": env["REDIS_URL"],
        "gateway_host": HOST, "gateway_port": ports["gateway"], "worker_web_port": ports["web"],
        "gateway_rules_path": None,
    })  # fmt: skip
    return ws, env


def _step(args: list[str], env: dict[str, str], what: str) -> None:
    console.print(f"[bold]{what}[/] ...")
    done = subprocess.run([sys.executable, "-m", "reelstream.shell.cli", *args], env=env, check=False)
    if done.returncode:
        raise InfraError(f"walk: {what} failed (exit {done.returncode})")


def _walk_live(ws: Settings, url: str, store: Any, limit: int | None, total: int) -> tuple[LiveWalk, Any]:
    columns = (TextColumn("live walk"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("walk", total=total)

        async def run() -> tuple[LiveWalk, Any]:
            async with LiveWalk(url, ws.redis_url, ws.topic_ratings, store.history) as live:
                summary = await replay(ws, store.stream, fingerprint=f"walk v{store.version}", limit=limit, serve=live,
                                       on_progress=lambda done: bar.update(task, completed=done))  # fmt: skip
            return live, summary

        return asyncio.run(run())


def _impressions_applied(ws: Settings, url: str, served: int) -> None:
    """Until the gateway has handed every list to the broker and the worker has applied them all."""

    def flushed() -> bool:
        counts = httpx.get(f"{url}/stats", timeout=5.0).json().get("impressions") or {}
        return counts.get("queued", 0) == 0 and counts.get("in_flight", 0) == 0 and counts.get("recorded", 0) >= served

    local_services.wait_until(flushed, READY_TIMEOUT_S, "the gateway to send its impressions", 0.1)
    ends = asyncio.run(high_watermarks(ws, ws.topic_impressions))
    client = redis_client(ws.redis_url)
    try:

        def applied() -> bool:
            got = keys.text_hash(client.hgetall(keys.offsets(ws.topic_impressions)))
            return all(int(got.get(str(p), -1)) >= end - 1 for p, end in ends.items() if end > 0)

        local_services.wait_until(applied, READY_TIMEOUT_S, "the worker to apply the impressions", 0.1)
    finally:
        client.close()


def _arms(ws: Settings, runtime: ModelRuntime) -> list[dict[str, Any]]:
    """The worker's windowed attribution of the walk's lists (``GET /experiments``), once it has caught up."""
    from gateway.state import RedisState

    state = RedisState(ws.redis_url, timeout=ws.redis_timeout_s)
    try:
        got: list[dict[str, Any]] = arms_report(state.experiments(), "control", int(runtime.n_items))["arms"]
        return got
    finally:
        state.client.close()


def _evaluate_hr(settings: Settings, model: str) -> float | None:
    """``reelstream evaluate``'s streaming HR@20 of ``model`` (var/reports/evaluation.json), if it ran."""
    path = settings.reports_dir / "evaluation.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    for row in doc.get("prequential", []):
        if row.get("flavour") == "streaming" and str(row.get("model", "")).endswith(model):
            return float(row["groups"]["overall"]["hr"])
    return None


def _table(doc: dict[str, Any]) -> Table:
    table = Table(title=f"live walk vs offline walk, model {doc['model']}, HR@{doc['k']} "
                  f"({doc['scored_events']:,} scored events of {doc['events']:,})")  # fmt: skip
    for column in ("served from", "events", "live HR", "offline HR", "events that disagree"):
        table.add_column(column, justify="left" if column == "served from" else "right")

    def cell(x: float | None) -> str:
        return "—" if x is None else f"{x:.4f}"

    for source, row in doc["by_source"].items():
        table.add_row(source, f"{row['events']:,}", cell(row["live_hr"]), cell(row["offline_hr"]),
                      f"{row['disagree']:,}")  # fmt: skip
    table.add_row("[bold]all[/]", f"{doc['scored_events']:,}", cell(doc["live_hr"]), cell(doc["offline_hr"]),
                  f"{doc['disagree']:,}")  # fmt: skip
    if doc["evaluate_streaming_hr"] is not None:
        table.caption = f"reelstream evaluate, streaming: HR@20 {doc['evaluate_streaming_hr']:.4f}"
    return table
