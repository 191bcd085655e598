"""The announced-movie record in Redis (``rs:movie:{mid}``): one codec for the worker and the gateway.

The worker's :class:`streams.processor.MovieProcessor` writes a ``MovieEvent`` with
:func:`encode_movie`; the worker's rating path (a rating for a movie the model does not know) and
the gateway's catalogue refresh read it back with :func:`decode_movie`, then build the movie's
side-feature row from it (:class:`schemas.side_features.SideEncoder`). Fields: ``title``, ``genres``
and ``tags`` (``|``-joined, so a genre or tag may not contain ``|``), ``year`` (empty when
unknown), ``updated_ms``.

Pure: no Redis client.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from schemas.redis_keys import text
from schemas.user_record import RecordError

__all__ = ["LIST_SEP", "MovieRecord", "decode_movie", "encode_movie"]

#: Between the genres (and the tags) of one movie in rs:movie:{mid}.
LIST_SEP = "|"


@dataclass(frozen=True)
class MovieRecord:
    """``rs:movie:{mid}`` decoded."""

    title: str
    genres: tuple[str, ...]
    year: int | None
    tags: tuple[str, ...]
    updated_ms: int | None = None


def _join(name: str, values: Iterable[str]) -> str:
    values = list(values)
    bad = [v for v in values if LIST_SEP in v]
    if bad:
        raise RecordError(f"{name} {bad[0][:40]!r} contains {LIST_SEP!r}, the list separator of rs:movie")
    return LIST_SEP.join(values)


def encode_movie(
    title: str, genres: Iterable[str], year: int | None, tags: Iterable[str], updated_ms: int
) -> list[Any]:
    """Flat ``HSET`` arguments; RecordError for a genre or tag that holds the separator.

    >>> encode_movie("Heat (1995)", ["Action", "Crime"], 1995, [], 7)
    ['title', 'Heat (1995)', 'genres', 'Action|Crime', 'year', 1995, 'tags', '', 'updated_ms', 7]
    """
    return [
        "title", title, "genres", _join("genre", genres), "year", "" if year is None else int(year),
        "tags", _join("tag", tags), "updated_ms", int(updated_ms),
    ]  # fmt: skip


def decode_movie(raw: Mapping[Any, Any]) -> MovieRecord:
    """``HGETALL rs:movie:{mid}`` (bytes or text) as a record; RecordError for a year or time that is no integer.

    >>> decode_movie({b"title": b"Heat (1995)", b"genres": b"Action|Crime", b"year": b"1995", b"tags": b""})
    MovieRecord(title='Heat (1995)', genres=('Action', 'Crime'), year=1995, tags=(), updated_ms=None)
    """
    doc = {text(k): text(v) for k, v in raw.items()}

    def split(name: str) -> tuple[str, ...]:
        return tuple(v for v in doc.get(name, "").split(LIST_SEP) if v)

    def integer(name: str) -> int | None:
        value = doc.get(name, "")
        try:
            return int(value) if value != "" else None
        except ValueError:
            raise RecordError(f"movie record field {name!r}: {value[:40]!r} is not an integer") from None

    return MovieRecord(doc.get("title", ""), split("genres"), integer("year"), split("tags"), integer("updated_ms"))
