"""``reelstream movie add``: announce a movie (a MovieEvent) for item cold start.

The announcement is judged by the contract POST /movies uses (schemas/movies.py, then the worker's own
rule) before anything connects, so bad input exits 2 with the field and the reason and nothing is
produced. A movie of the current model is refused too: its trained rows win over any side features, so
announcing it would change nothing. Announcing an announced movie again updates its metadata (its
``rs:movie`` record; docs/events.md says when the gateway and the worker pick it up).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer
from aiokafka.errors import KafkaError

from models.runtime import ModelRuntime, current_model_dir
from reelstream.console import console
from reelstream.errors import InfraError
from reelstream.settings import get_settings
from schemas.side_features import SideEncoder
from streams.events import judged_movie, tags_without_feature
from streams.producer import EventProducer, SentMovie

__all__ = ["app"]

app = typer.Typer(help="Movies: announce new ones (MovieEvents) for item cold start.", no_args_is_help=True)

#: Seconds the broker gets to take the event (connect, metadata, acknowledgement) before the command gives up.
SEND_TIMEOUT_S = 15.0


def split_genres(values: list[str]) -> list[str]:
    """``--genre`` values, each one genre or a comma list of them, as one list (blank items kept: refused later).

    >>> split_genres(["Animation,Children", "Comedy"])
    ['Animation', 'Children', 'Comedy']
    """
    return [part.strip() for value in values for part in value.split(",")]


@app.command("add")
def add(
    movie_id: Annotated[int, typer.Option("--id", help="MovieLens movie id (positive, not one of the model's).")],
    title: Annotated[str, typer.Option("--title", help="Display title, e.g. 'Paper Boats (2026)'.")],
    genre: Annotated[
        list[str] | None,
        typer.Option("--genre", help="MovieLens genre name (Animation, Children, Sci-Fi, ...); repeat or comma list."),
    ] = None,
    year: Annotated[int | None, typer.Option("--year", help="Release year.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Free-text tag; repeat for more.")] = None,
) -> None:
    """Produce one MovieEvent keyed by the movie id and wait for the broker's acknowledgement."""
    settings = get_settings()
    genres, tags = split_genres(genre or []), list(tag or [])
    runtime = ModelRuntime.load(current_model_dir(settings.models_dir))
    in_model = {int(m) for m in runtime.movie_ids.tolist()}
    judged_movie(movie_id, title, genres, year, tags, in_catalogue=in_model.__contains__)  # before connecting
    encoder = SideEncoder.from_metadata(runtime.metadata, int(runtime.side_dec.shape[0]))
    for name in tags_without_feature(encoder, tags):
        console.print(f"[yellow]warning:[/] model {runtime.version} has no feature for tag {name!r}: "
                      "it is stored but does not change the movie's scores", highlight=False)  # fmt: skip

    async def send() -> SentMovie:
        async with EventProducer(settings) as producer:
            return await producer.announce(movie_id, title, genres, year, tags, in_catalogue=in_model.__contains__)

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # a dead broker is the one line below, not its log
    try:
        sent = asyncio.run(asyncio.wait_for(send(), SEND_TIMEOUT_S))
    except (KafkaError, OSError, TimeoutError) as exc:
        raise InfraError(
            f"broker {settings.kafka_bootstrap} did not take the MovieEvent: {type(exc).__name__}; nothing was "
            "announced (run it again once the broker answers)"
        ) from None
    console.print(
        f"announced movie {sent.movie_id} {title!r} genres={','.join(genres) or '-'} year={year or '-'} "
        f"tags={','.join(tags) or '-'}: {settings.topic_movies} partition {sent.partition} offset {sent.offset}",
        highlight=False, soft_wrap=True,
    )  # fmt: skip
