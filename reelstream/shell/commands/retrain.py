"""``reelstream retrain`` and ``reelstream swap``: continual training and the hot swap (docs/models.md).

``retrain`` trains a challenger on HISTORY plus the archived stream, judges it against the serving
champion on the most recent window (:mod:`models.continual`), and only when it is better trains it on
all the data, publishes it as a new ``mNNNN`` folder and hot-swaps it in (:mod:`streams.swap`) while
ingestion continues. ``swap`` starts a swap to a given model folder, or resumes an interrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol

import polars as pl
import redis
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from reelstream.console import console
from reelstream.errors import InfraError, ModelError, ReelstreamError
from reelstream.settings import Settings, get_settings
from schemas import redis_keys as keys
from schemas.challenger import answer_fields, decode_challenger

__all__ = ["Fitted", "RetrainResult", "challenge_pending", "retrain", "retrain_once", "swap"]


class Fitted(Protocol):
    """What a trained learner gives: the numpy runtime, and a folder writer (HybridVAE's ``save``)."""

    runtime_: Any

    def save(self, folder: Path) -> None: ...


@dataclass
class RetrainResult:
    verdict: Any  #: models.continual.Verdict
    data_events: int  #: rating events trained on (HISTORY + archive)
    archived: int  #: of those, from the archive
    published: str | None = None  #: the promoted model's folder name
    swap: Any = None  #: streams.swap.SwapSummary


def learner_params(champion: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """The champion's hyper-parameters (its item prior included: the swap keeps its half-life) + ``overrides``."""
    params = dict(champion.metadata.get("params") or {})
    prior = champion.item_prior
    params["prior_beta"] = prior["beta"] if champion.has_item_prior else 0.0
    params["prior_half_life_days"] = prior["half_life_s"] / 86400.0
    params.update({k: v for k, v in overrides.items() if v is not None})
    return params


def retrain_once(
    settings: Settings,
    client: redis.Redis,
    *,
    window: float = 0.1,
    margin: float = 0.0,
    promote: bool = True,
    overrides: dict[str, Any] | None = None,
    fit: Callable[[dict[str, Any], Any], Fitted] | None = None,
    on_swap: Callable[[int, int], None] | None = None,
) -> RetrainResult:
    """One round of continual training (module docstring); ``fit(params, data)`` trains a learner (default:
    ``HybridVAE(**params).fit(data)``)."""
    from bootstrap.store import load_store
    from models.artifacts import publish
    from models.continual import judge, with_events
    from models.data import from_store
    from models.runtime import ModelRuntime
    from schemas.ratings import RatingLimits
    from streams.archive_ratings import archived_ratings
    from streams.swap import run_swap, serving_model, start_swap

    requested = decode_challenger(client.hgetall(keys.CHALLENGER)).requested  # what this round answers
    if fit is None:

        def fit(params: dict[str, Any], data: Any) -> Fitted:
            from models.hybrid_vae import HybridVAE

            return HybridVAE(**params).fit(data)

    store = load_store(settings.store_dir)
    base = from_store(store)
    archived = archived_ratings(settings.archive_dir, settings.topic_ratings, base.movie_ids,
                                RatingLimits.from_settings(settings))  # fmt: skip
    history = store.history.select("user_id", "movie_id", "rating", "ts")
    events = pl.concat([history, archived.frame.select(history.columns).cast(history.schema)]).unique(
        maintain_order=True
    )

    def data_with(share: float) -> Any:
        cols = [events[c].to_numpy() for c in ("user_id", "movie_id", "rating", "ts")]
        return with_events(base, *cols, window=share)

    champion = ModelRuntime.load(settings.models_dir / serving_model(settings.models_dir, client))
    params = learner_params(champion, overrides or {})
    windowed = data_with(window)
    verdict, _ = judge(champion, lambda d: fit(params, d).runtime_, windowed, margin=margin)
    result = RetrainResult(verdict, events.height, len(archived))
    if not (promote and verdict.promote):
        kept = "better, not promoted (--no-promote)" if verdict.promote else "not better"
        _answer(client, requested, f"kept {verdict.champion}: challenger HR@20 {verdict.challenger_hr:.4f} vs "
                                   f"{verdict.champion_hr:.4f}, {kept}")  # fmt: skip
        return result
    everything = data_with(0.0)
    model = fit(params, everything)

    def write(folder: Path, name: str) -> None:
        model.runtime_.metadata.update(model_version=name, data_version=base.version, retrain=verdict.as_dict(),
                                       trained_events=len(everything.history))  # fmt: skip
        model.save(folder)

    folder = publish(settings.models_dir, write, make_current=False)
    result.published = folder.name
    start_swap(settings.models_dir, client, folder.name)
    result.swap = run_swap(settings.models_dir, client, batch=settings.swap_batch, on_progress=on_swap)
    _answer(client, requested, f"promoted {folder.name}: challenger HR@20 {verdict.challenger_hr:.4f} vs "
                               f"{verdict.champion_hr:.4f} for {verdict.champion}")  # fmt: skip
    return result


def _answer(client: redis.Redis, requested: int, answer: str) -> None:
    """Answer the drift alarms counted when this round started (``rs:challenger``, schemas/challenger.py)."""
    client.hset(keys.CHALLENGER, mapping=dict(answer_fields(requested, answer, int(time.time() * 1000)).items()))


def challenge_pending(settings: Settings) -> int:
    """Alarms (drift, hit-rate falls) no retrain has answered yet (``retrain --when-requested``)."""
    client = _client(settings)
    try:
        return decode_challenger(client.hgetall(keys.CHALLENGER)).pending
    except redis.RedisError as exc:
        raise InfraError(f"Redis at {settings.redis_url} unreachable: {exc}") from None
    finally:
        client.close()


def _client(settings: Settings) -> redis.Redis:
    from reelstream.redis_client import redis_client

    client = redis_client(settings.redis_url)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise InfraError(f"Redis at {settings.redis_url} unreachable: {exc}") from None
    return client


def _swap_bar() -> Progress:
    return Progress(TextColumn("[bold]swap[/] users re-encoded {task.completed:,} (seen {task.fields[seen]:,})"),
                    BarColumn(), TimeElapsedColumn(), console=console)  # fmt: skip


def retrain(
    window: Annotated[
        float, typer.Option(min=0.01, max=0.9, help="Share of the latest events held out to judge.")
    ] = 0.1,
    margin: Annotated[float, typer.Option(min=0.0, help="HR@20 the challenger must beat the champion's by.")] = 0.0,
    promote: Annotated[bool, typer.Option(help="Promote and hot-swap a better challenger (else: judge only).")] = True,
    max_epochs: Annotated[int | None, typer.Option(min=1, help="Override the champion's max_epochs.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the champion's seed.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, or cuda for a GPU.")] = None,
    every_hours: Annotated[
        float | None, typer.Option(min=0.001, help="Run again every this many hours, until stopped (`up` uses it).")
    ] = None,
    when_requested: Annotated[
        bool, typer.Option(help="Run a round only while the online model's drift alarms ask for a challenger.")
    ] = False,
) -> None:
    """Train a challenger on HISTORY + the archive, judge it on the latest window, promote it only if better."""
    args = dict(window=window, margin=margin, promote=promote, max_epochs=max_epochs, seed=seed, device=device)
    if every_hours is None:
        _round(args, when_requested)
        return
    while True:  # a scheduled round that fails (no window yet, Redis away) is reported; the next one runs
        time.sleep(every_hours * 3600.0)
        try:
            _round(args, when_requested)
        except ReelstreamError as exc:
            console.print(f"[bold red]retrain round failed:[/] {exc}", highlight=False)


def _round(args: dict[str, Any], when_requested: bool) -> None:
    settings = get_settings()
    _watch_hit_rate(settings)
    if when_requested:
        pending = challenge_pending(settings)
        if not pending:
            console.print("no challenger requested (no unanswered alarm in rs:challenger): nothing to do")
            return
        console.print(f"a challenger is requested: {pending} unanswered alarm(s)")
    _retrain(**args)  # type: ignore[arg-type]


def _watch_hit_rate(settings: Settings) -> None:
    """The live hit-rate watch (monitoring/hit_rate.py): a fall asks for the challenger this round trains."""
    from monitoring.hit_rate import watch

    client = _client(settings)
    try:
        check, asked = watch(client, settings)
    except redis.RedisError as exc:
        raise InfraError(f"Redis at {settings.redis_url} unreachable: {exc}") from None
    finally:
        client.close()
    console.print(("[bold yellow]asks for a challenger:[/] " if asked else "") + check.reason, highlight=False)


def _retrain(
    window: float, margin: float, promote: bool, max_epochs: int | None, seed: int | None, device: str | None
) -> None:
    settings = get_settings()
    client = _client(settings)
    try:
        with _swap_bar() as bar:
            task = bar.add_task("swap", total=None, seen=0, visible=False)
            result = retrain_once(
                settings, client, window=window, margin=margin, promote=promote,
                overrides={"max_epochs": max_epochs, "seed": seed, "device": device},
                on_swap=lambda done, seen: bar.update(task, completed=done, seen=seen, visible=True),
            )  # fmt: skip
    except redis.RedisError as exc:
        raise InfraError(f"Redis at {settings.redis_url} unreachable: {exc}") from None
    finally:
        client.close()
    v = result.verdict
    table = Table(title=f"retrain: {result.data_events:,} events ({result.archived:,} archived), "
                  f"window {window:.0%} = {v.events:,} scored events")  # fmt: skip
    for col in ("model", "role", "HR@20", "NDCG@20"):
        table.add_column(col)
    table.add_row(v.champion, "champion (serving)", f"{v.champion_hr:.4f}", f"{v.champion_ndcg:.4f}")
    table.add_row("challenger", "trained before the window", f"{v.challenger_hr:.4f}", f"{v.challenger_ndcg:.4f}")
    console.print(table)
    if not v.promote:
        console.print(f"kept {v.champion}: the challenger's HR@20 is not above the champion's + {margin:g}")
    elif result.published is None:
        console.print("the challenger is better; not promoted (--no-promote)")
    else:
        console.print(f"[bold green]promoted {result.published}[/] (trained on every event); swap {result.swap}")


def swap(
    to: Annotated[str | None, typer.Option(help="Model folder to swap in (e.g. m0002); omit to resume.")] = None,
    batch: Annotated[int | None, typer.Option(min=1, help="Users per batch (default: settings.swap_batch).")] = None,
) -> None:
    """Hot-swap users' states to a model while ingestion continues; resumes an interrupted swap."""
    from streams.swap import run_swap, start_swap

    settings = get_settings()
    client = _client(settings)
    try:
        if to is not None:
            source = start_swap(settings.models_dir, client, to)
            console.print(f"serving model {to} (users move from {source})")
        with _swap_bar() as bar:
            task = bar.add_task("swap", total=None, seen=0)
            summary = run_swap(settings.models_dir, client, batch=batch or settings.swap_batch,
                               on_progress=lambda done, seen: bar.update(task, completed=done, seen=seen))  # fmt: skip
    except redis.RedisError as exc:
        raise InfraError(f"Redis at {settings.redis_url} unreachable: {exc}") from None
    finally:
        client.close()
    if summary is None:
        raise ModelError("no swap is running: name the model to swap in with --to")
    console.print(f"swap done: {summary}")
