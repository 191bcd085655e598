"""``reelstream rate USER MOVIE RATING``: produce one live rating and print its event id.

It checks what POST /ratings checks (the rating contract, schemas/ratings.py): the catalogue is the
current model's movies plus the ones a MovieEvent announced (``rs:movie:{mid}`` in Redis, where the
worker looks them up too). A refused rating exits 2 with the reason and nothing is produced.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import redis
import typer

from models.runtime import ModelRuntime, current_model_dir
from reelstream.console import console
from reelstream.errors import InfraError
from reelstream.redis_client import SIDE_READ_TIMEOUT_S, redis_client
from reelstream.settings import Settings, get_settings
from schemas import redis_keys as keys
from streams.events import judged_rating
from streams.producer import EventProducer

__all__ = ["rate"]


def _catalogue(settings: Settings) -> tuple[set[int], redis.Redis]:
    """The model's movie ids, and a Redis client for the announced ones."""
    runtime = ModelRuntime.load(current_model_dir(settings.models_dir))
    client = redis_client(settings.redis_url, timeout=SIDE_READ_TIMEOUT_S)
    return {int(m) for m in runtime.movie_ids.tolist()}, client


def rate(
    user: Annotated[int, typer.Argument(help="MovieLens user id.")],
    movie: Annotated[int, typer.Argument(help="MovieLens movie id (in the model, or announced by a MovieEvent).")],
    rating: Annotated[float, typer.Argument(help="Stars, 0.5 to 5.0 in half steps.")],
) -> None:
    """Produce one live RatingEvent (source=live); a rating the worker would refuse exits 2 with the reason."""
    settings = get_settings()
    in_model, client = _catalogue(settings)

    def known_movie(movie_id: int) -> bool:
        if movie_id in in_model:
            return True
        try:
            return bool(client.exists(keys.movie(movie_id)))
        except redis.RedisError as exc:
            raise InfraError(f"cannot check movie {movie_id} in {settings.redis_url}: {type(exc).__name__}") from None

    async def send() -> str:
        async with EventProducer(settings) as producer:
            sent = await producer.send(user, movie, rating, source="live", known_movie=known_movie)
        return sent.event_id

    try:
        judged_rating(settings, user, movie, rating, known_movie=known_movie, source="live")  # before connecting
        console.print(asyncio.run(send()), highlight=False)
    finally:
        client.close()
