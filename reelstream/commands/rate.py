"""``reelstream rate USER MOVIE RATING``: produce one live rating and print its event id."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from reelstream.console import console
from reelstream.settings import get_settings
from streams.events import RatingProducer

__all__ = ["rate"]


def rate(
    user: Annotated[int, typer.Argument(help="MovieLens user id.")],
    movie: Annotated[int, typer.Argument(help="MovieLens movie id.")],
    rating: Annotated[float, typer.Argument(help="Stars, 0.5 to 5.0 in half steps.")],
) -> None:
    """Produce one live RatingEvent (source=live); bad input exits 2 with a one-line message."""

    async def send() -> str:
        async with RatingProducer(get_settings()) as producer:
            sent = await producer.send(user, movie, rating, source="live")
        return sent.event_id

    console.print(asyncio.run(send()), highlight=False)
