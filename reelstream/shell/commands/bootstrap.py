"""``reelstream bootstrap``: build (or append to) the versioned feature store.

Reads the dataset, validates it, splits HISTORY/STREAM at one cut time, computes
features and writes ``settings.store_dir/vNNNN`` atomically. Prints the quality
summary, the split counts and a final summary (rows, rows/s, version, folder).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from bootstrap.pipeline import BootstrapOptions, BootstrapResult, run_append, run_bootstrap
from bootstrap.quality import QualityThresholds
from reelstream.console import console
from reelstream.errors import QualityError
from reelstream.settings import get_settings

__all__ = ["bootstrap"]


@contextmanager
def _status(name: str) -> Iterator[None]:
    with console.status(f"[bold]{name}[/]…"):
        yield
    console.print(f"[green]✓[/] {name}")


def print_quality(report: dict[str, Any]) -> None:
    """The quality report as a small table (the JSON file holds everything)."""
    if not report:
        return
    table = Table(title="data quality", show_header=True, header_style="bold")
    table.add_column("check")
    table.add_column("value", justify="right")
    r = report["ratings"]
    table.add_row("ratings in = ...", r["equation"])
    for reason, n in report.get("reasons", {}).items():
        table.add_row(f"  quarantined: {reason}", f"{n:,}")
    m = report.get("movies", {})
    for key in ("count", "no_genres", "empty_titles", "duplicate_ids", "without_year"):
        if key in m:
            table.add_row(f"movies: {key}", f"{m[key]:,}")
    for name, frac in report.get("fractions", {}).items():
        table.add_row(f"{name} fraction", f"{frac:.3%}")
    console.print(table)
    status = "[green]passed[/]" if report["passed"] else "[red]FAILED[/]: " + "; ".join(report["violations"])
    console.print(f"quality: {status}")


def _summary(result: BootstrapResult) -> None:
    meta = result.metadata
    split = meta["split"]
    counts = meta["counts"]
    console.print(
        f"split ({split['method']}, cut_ts={split['cut_ts']}): "
        f"HISTORY {split['history_ratings']:,}  STREAM {split['stream_ratings']:,}"
    )
    console.print(
        f"ratings {counts['ratings']:,}  users {counts['users']:,}  movies {counts['movies']:,}  "
        f"side features {counts['side_features']:,}"
    )
    rate = result.rows_in / result.seconds if result.seconds > 0 else float("nan")
    console.print(
        f"[bold]{result.message}[/]: {result.rows_in:,} rows in {result.seconds:.2f} s ({rate:,.0f} rows/s) "
        f"-> {result.path}"
    )


def bootstrap(
    data: Annotated[Path | None, typer.Option(help="Dataset folder (default: settings.data_path).")] = None,
    quantile: Annotated[float, typer.Option(min=0.0, max=1.0, help="Cut at this quantile of timestamps.")] = 0.8,
    cut_ts: Annotated[int | None, typer.Option(help="Cut at this unix time instead of a quantile.")] = None,
    append: Annotated[Path | None, typer.Option(help="Fold this ratings CSV into the current version.")] = None,
    min_tag_count: Annotated[int, typer.Option(min=1, help="Keep tags applied at least this often.")] = 5,
    max_bad_fraction: Annotated[float, typer.Option(help="Fail above this fraction of quarantined ratings.")] = 0.01,
    max_duplicate_fraction: Annotated[float, typer.Option(help="Fail above this fraction of duplicates.")] = 0.01,
    max_no_genre_fraction: Annotated[float, typer.Option(help="Fail above this fraction of genre-less movies.")] = 0.25,
    max_empty_title_fraction: Annotated[float, typer.Option(help="Fail above this fraction of empty titles.")] = 0.01,
) -> None:
    """Validate a MovieLens dataset and write a new feature-store version."""
    settings = get_settings()
    thresholds = QualityThresholds(
        max_bad_fraction=max_bad_fraction,
        max_duplicate_fraction=max_duplicate_fraction,
        max_no_genre_fraction=max_no_genre_fraction,
        max_empty_title_fraction=max_empty_title_fraction,
    )
    try:
        if append is not None:
            result = run_append(settings.store_dir, settings.reports_dir, append, thresholds=thresholds, step=_status)
        else:
            options = BootstrapOptions(
                data_path=data or settings.data_path,
                quantile=None if cut_ts is not None else quantile,
                cut_ts=cut_ts,
                thresholds=thresholds,
                min_tag_count=min_tag_count,
            )
            result = run_bootstrap(settings.store_dir, settings.reports_dir, options, step=_status)
    except ValueError as exc:  # e.g. a quantile of 0 or 1
        raise typer.BadParameter(str(exc)) from exc
    except QualityError as exc:
        report = getattr(exc, "report", None)
        if report:
            print_quality(report)
        raise
    print_quality(result.report)
    if not result.created:
        console.print(f"[yellow]{result.message}[/]")
        return
    _summary(result)
