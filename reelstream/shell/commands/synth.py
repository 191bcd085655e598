"""``reelstream synth``: write a synthetic MovieLens-shaped dataset (CSV) of any size."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from bootstrap.synth import DEFAULT_TOPICS, generate, scale, write_dataset
from reelstream.console import console

__all__ = ["synth"]


def synth(
    out: Annotated[Path, typer.Option(help="Folder to write ratings/movies/tags/links.csv into.")],
    ratings: Annotated[int, typer.Option(min=1, help="Number of ratings (32000000 = ML-32M scale).")] = 100_000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same dataset).")] = 0,
    users: Annotated[int | None, typer.Option(min=1, help="Override the scaled user count.")] = None,
    movies: Annotated[int | None, typer.Option(min=1, help="Override the scaled movie count.")] = None,
    topics: Annotated[
        int, typer.Option(min=0, help="Planted taste topics (0: pairs by popularity alone, nothing to learn).")
    ] = DEFAULT_TOPICS,
) -> None:
    """Generate ratings with planted taste (topics, genre likes, drift), Zipf-like popularity, long-tailed activity."""
    n_users, n_movies = scale(ratings, users, movies)
    t0 = time.perf_counter()
    with console.status(
        f"generating {ratings:,} ratings for {n_users:,} users x {n_movies:,} movies, {topics} topics…"
    ):
        try:
            data = generate(ratings, seed=seed, users=users, movies=movies, topics=topics)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
    t1 = time.perf_counter()
    with console.status(f"writing CSVs to {out}…"):
        counts = write_dataset(data, out)
    t2 = time.perf_counter()
    console.print(
        f"wrote {', '.join(f'{k} {v:,}' for k, v in counts.items())} to {out} "
        f"(generate {t1 - t0:.1f} s, write {t2 - t1:.1f} s)"
    )
