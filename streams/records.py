"""Typed Faust Records of the three events; each names its Avro codec (``streams.faust_codec``)."""

from __future__ import annotations

import faust

from streams.faust_codec import CODEC_NAMES, register_codecs

__all__ = ["DeadLetterRecord", "MovieRecord", "RatingRecord"]

register_codecs()


class RatingRecord(faust.Record, serializer=CODEC_NAMES["RatingEvent"]):
    """schemas/rating_event.avsc"""

    event_id: str
    user_id: int
    movie_id: int
    rating: float
    event_ts: int
    source: str = "live"


class MovieRecord(faust.Record, serializer=CODEC_NAMES["MovieEvent"]):
    """schemas/movie_event.avsc"""

    movie_id: int
    title: str
    genres: list[str]
    year: int | None = None
    tags: list[str] = []  # noqa: RUF012 - faust copies field defaults per instance


class DeadLetterRecord(faust.Record, serializer=CODEC_NAMES["DeadLetter"]):
    """schemas/dead_letter.avsc"""

    original: bytes
    topic: str
    partition: int
    offset: int
    reason: str
    error: str
    dead_at: int
