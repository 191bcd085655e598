"""``reelstream experiments``: each A/B arm against the control, from the worker's attribution counters."""

from __future__ import annotations

import json

import redis
import typer
from rich.table import Table

from gateway.rules import RulesStore
from gateway.state import RedisState
from models.runtime import ModelRuntime, current_model_dir
from monitoring.experiments import report
from reelstream.console import console
from reelstream.errors import InfraError
from reelstream.settings import get_settings

__all__ = ["experiments"]

VERDICT_STYLE = {"ahead": "green", "behind": "red", "not yet decided": "yellow", "control": "bold"}


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:+.2f}"


def experiments(
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON (as GET /experiments)."),
) -> None:
    """Hit rate of each arm's served lists, its lift over the control with a 95% interval, and a verdict."""
    settings = get_settings()
    control = RulesStore(settings.rules_path).current().arms[0][0]
    catalogue = int(ModelRuntime.load(current_model_dir(settings.models_dir)).n_items)
    state = RedisState(settings.redis_url, timeout=settings.redis_timeout_s)
    try:
        counters = state.experiments()
    except (redis.RedisError, OSError, InfraError) as exc:
        raise InfraError(f"Redis at {settings.redis_url} unavailable: {exc}") from None
    finally:
        state.client.close()
    got = {**report(counters, control, catalogue), "window_s": settings.attribution_window_s}
    if as_json:
        console.print_json(json.dumps(got))
        return
    table = Table(title=f"arms against {control} (hit rate: lists with a later rating of a top-20 movie, "
                  f"window {settings.attribution_window_s / 86400:g} d)")  # fmt: skip
    for column in ("variant", "lists", "users", "hit rate %", "lift pts", "95% interval pts", "NDCG@20",
                   "coverage %", "novelty bits", "verdict"):  # fmt: skip
        table.add_column(column, justify="left" if column in {"variant", "verdict"} else "right")
    for a in got["arms"]:
        interval = "—" if a["low"] is None else f"{_pct(a['low'])} .. {_pct(a['high'])}"
        table.add_row(
            a["variant"], f"{a['impressions']:,}", f"{a['users']:,}", f"{100 * a['hit_rate']:.2f}", _pct(a["diff"]),
            interval, f"{a['ndcg_20']:.4f}", "—" if a["coverage"] is None else f"{100 * a['coverage']:.1f}",
            "—" if a["novelty"] is None else f"{a['novelty']:.2f}",
            f"[{VERDICT_STYLE[a['verdict']]}]{a['verdict']}[/]",
        )  # fmt: skip
    console.print(table if got["arms"] else "no impressions attributed yet (the gateway records them as it serves)")
