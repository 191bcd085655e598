"""The movie announcement contract: what a MovieEvent that ``reelstream movie add`` or ``POST /movies`` sends is.

One definition for both producers (:meth:`streams.producer.EventProducer.announce` judges every
announcement with :func:`announcement_problem` before it encodes it), so a 202 means the worker
stores the movie and the gateway can build its row. The worker itself is more lenient
(:func:`streams.rules.movie_event_problem` plus the ``|`` rule of :mod:`schemas.movie_record`): these
rules add what the model needs for a side-feature row to mean anything.

==================  ==========================================================================
``movie_id``        ``MIN_ID`` .. ``MAX_ID`` (the rating contract's ids, so the movie can be rated)
``title``           not blank
``genres``          each one of :data:`GENRES`, the fixed MovieLens list, spelt as MovieLens does:
                    the model's ``genre=...`` features use these names, so any other name would
                    give the movie no genre feature at all (a silent drop). Refused, with the
                    closest name as a hint; not blank. No genres is allowed (MovieLens'
                    ``(no genres listed)``)
``year``            ``MIN_YEAR`` .. ``MAX_YEAR`` or unknown
``tags``            not blank; free text
genres and tags     no ``|`` (the list separator of ``rs:movie:{mid}``)
==================  ==========================================================================

Pure: no Kafka, Faust or Redis import.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from schemas.movie_record import LIST_SEP
from schemas.ratings import MAX_ID, MIN_ID

__all__ = ["GENRES", "MAX_YEAR", "MIN_YEAR", "NO_GENRES", "announcement_problem", "movie_key"]

#: The MovieLens genre names (ml-latest, ml-20m .. ml-32m; ml-1m and ml-100k use a subset).
GENRES: tuple[str, ...] = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
#: MovieLens' marker for "no genre"; an announcement says so with an empty list.
NO_GENRES = "(no genres listed)"
#: Release years an announcement may carry (the first films .. a generous future).
MIN_YEAR, MAX_YEAR = 1870, 2100


def movie_key(movie_id: int) -> bytes:
    """The Kafka key of a movie's announcements: the id as ASCII digits (one partition per movie, in order).

    >>> movie_key(193609)
    b'193609'
    """
    return str(int(movie_id)).encode()


def _genre_problem(genre: str) -> str | None:
    if genre in GENRES:
        return None
    if not genre.strip():
        return "empty genre"
    if genre == NO_GENRES:
        return f"genre {NO_GENRES!r}: give no genre instead"
    hint = difflib.get_close_matches(genre, GENRES, n=1, cutoff=0.6) or [
        g for g in GENRES if g.lower() == genre.strip().lower()
    ]
    known = f"did you mean {hint[0]!r}?" if hint else "MovieLens genres: " + ", ".join(GENRES)
    return f"unknown genre {genre[:40]!r}; {known}"


def announcement_problem(
    movie_id: int, title: str, genres: Sequence[str], year: int | None, tags: Sequence[str]
) -> tuple[str, str] | None:
    """The first broken rule as ``(field, detail)``, or None for an announcement the contract accepts.

    >>> announcement_problem(1, "Heat (1995)", ["Action", "Crime"], 1995, ["heist"]) is None
    True
    >>> announcement_problem(1, "Heat (1995)", ["Sci-fi"], 1995, [])
    ('genres', "unknown genre 'Sci-fi'; did you mean 'Sci-Fi'?")
    """
    if not MIN_ID <= movie_id <= MAX_ID:
        return "movie_id", f"movie id {movie_id} is outside {MIN_ID}..{MAX_ID}"
    if not title.strip():
        return "title", "empty title"
    for genre in genres:
        if LIST_SEP in genre:
            return "genres", f"genre {genre[:40]!r} contains {LIST_SEP!r}, the list separator of rs:movie"
        if (problem := _genre_problem(genre)) is not None:
            return "genres", problem
    if year is not None and not MIN_YEAR <= year <= MAX_YEAR:
        return "year", f"year {year} is outside {MIN_YEAR}..{MAX_YEAR}"
    for tag in tags:
        if not tag.strip():
            return "tags", "empty tag"
        if LIST_SEP in tag:
            return "tags", f"tag {tag[:40]!r} contains {LIST_SEP!r}, the list separator of rs:movie"
    return None
