"""The item side features: one definition for the training rows and for movies announced later.

Bootstrap (``bootstrap/features.py``) builds every catalogue movie's row from these
definitions; the worker (a movie first seen in a ``MovieEvent``) and the gateway (the
same movie in its serving catalogue) build a new movie's row with :class:`SideEncoder`,
so a movie announced by a ``MovieEvent`` gets exactly the row training would have given
it. A feature is named ``kind=token``:

=======================  ============================================================
name                     value
=======================  ============================================================
``genre={Genre}``        1.0 for each of the movie's genres (MovieLens names, as given)
``decade={1990}``        1.0 for the release decade (``year // 10 * 10``)
``year=scaled``          ``(year - lo) / max(hi - lo, 1)``, ``lo, hi`` the catalogue's
                         min and max year at bootstrap (:func:`year_range`); a new movie
                         outside that range is clipped to [0, 1], the values training saw
``tag={token}``          1.0 for each tag token (:func:`tag_token`: stripped, lower-case)
                         applied at least ``min_tag_count`` times before the cut
=======================  ============================================================

Columns are ordered by kind (genre, decade, year, tag), then by name. A model records the
names and the year range in its metadata (:func:`side_metadata`: ``side_names``,
``side_year_range``), since the year scale depends on the catalogue it was trained on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from reelstream.errors import ModelError

__all__ = [
    "DECADE",
    "GENRE",
    "KINDS",
    "META_NAMES",
    "META_YEAR_RANGE",
    "SEP",
    "TAG",
    "YEAR",
    "YEAR_SCALED",
    "YEAR_TOKEN",
    "SideEncoder",
    "decade_of",
    "feature_name",
    "scaled_year",
    "side_metadata",
    "tag_token",
    "year_range",
]

log = logging.getLogger(__name__)

GENRE, DECADE, YEAR, TAG = "genre", "decade", "year", "tag"
#: The kinds in column order.
KINDS = (GENRE, DECADE, YEAR, TAG)
#: Between a feature's kind and its token.
SEP = "="
#: The one ``year`` feature: its token and its name.
YEAR_TOKEN = "scaled"
YEAR_SCALED = f"{YEAR}{SEP}{YEAR_TOKEN}"
#: Model metadata keys: the side-feature names (column order) and the year range ``[lo, hi]``.
META_NAMES, META_YEAR_RANGE = "side_names", "side_year_range"

Y = TypeVar("Y")


def feature_name(kind: str, token: str) -> str:
    """``kind=token``.

    >>> feature_name("genre", "Comedy"), feature_name("decade", str(decade_of(1995)))
    ('genre=Comedy', 'decade=1990')
    """
    return f"{kind}{SEP}{token}"


def decade_of(year: Y) -> Y:
    """The release decade: an int for an int, a polars expression for an expression (bootstrap's column)."""
    return (year // 10) * 10  # type: ignore[operator,return-value]


def tag_token(tag: str) -> str:
    """A free-text tag as a feature token (bootstrap maps every distinct tag through this).

    >>> tag_token("  Dark Comedy ")
    'dark comedy'
    """
    return tag.strip().lower()


def year_range(years: Iterable[int | None]) -> tuple[int, int]:
    """``(lo, hi)`` of the known years (``(0, 1)`` when none is known): the ``year=scaled`` scale."""
    known = [int(y) for y in years if y is not None]
    return (min(known), max(known)) if known else (0, 1)


def scaled_year(year: Y, lo: int, hi: int) -> Y:
    """``(year - lo) / max(hi - lo, 1)``, for an int or a polars expression (bootstrap's column).

    >>> scaled_year(1995, 1990, 2000)
    0.5
    """
    return (year - lo) / max(hi - lo, 1)  # type: ignore[operator,return-value]


def side_metadata(names: Sequence[str], years: tuple[int, int] | None) -> dict[str, Any]:
    """What a trained model records about its side features (read back by :meth:`SideEncoder.from_metadata`)."""
    return {META_NAMES: list(names), META_YEAR_RANGE: None if years is None else [int(years[0]), int(years[1])]}


def _known_kind(name: str) -> bool:
    kind, sep, token = name.partition(SEP)
    return bool(sep) and bool(token) and kind in KINDS


@dataclass(frozen=True)
class SideEncoder:
    """A model's side-feature columns and year scale; :meth:`vector` builds one movie's row.

    >>> enc = SideEncoder(("genre=Comedy", "genre=Drama", "decade=1990", "year=scaled", "tag=heist"), (1990, 2000))
    >>> enc.vector(["Comedy"], 1995, ["Heist ", "unknown"]).tolist()
    [1.0, 0.0, 1.0, 0.5, 1.0]
    """

    names: tuple[str, ...]
    year_range: tuple[int, int] | None = None
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {name: i for i, name in enumerate(self.names)})

    @property
    def n(self) -> int:
        return len(self.names)

    @property
    def unknown_names(self) -> list[str]:
        """Names outside this module's definition (a model built some other way): they stay 0."""
        return [n for n in self.names if not _known_kind(n)]

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], n_side: int) -> SideEncoder:
        """The encoder of a model with ``n_side`` side-feature rows, from its metadata.

        A model without names (no side features, or a random test model) gets ``n_side`` unnamed
        columns: every vector is zero, so a new movie starts from the side projection's bias alone.
        ModelError when the names do not match the model's rows.
        """
        names = list(metadata.get(META_NAMES) or [])
        if not names:
            return cls(tuple(f"unnamed:{i}" for i in range(n_side)))
        if len(names) != n_side:
            raise ModelError(f"model metadata names {len(names)} side features, but the model has {n_side} rows")
        raw = metadata.get(META_YEAR_RANGE)
        years = (int(raw[0]), int(raw[1])) if raw else None
        encoder = cls(tuple(names), years)
        if YEAR_SCALED in encoder.index and years is None:
            log.warning("model metadata has no %s: %s stays 0 for new movies", META_YEAR_RANGE, YEAR_SCALED)
        if encoder.unknown_names:
            log.warning(
                "%d side-feature names are not of the form kind=token (%s...): they stay 0 for new movies",
                len(encoder.unknown_names), encoder.unknown_names[0],
            )  # fmt: skip
        return encoder

    def vector(self, genres: Iterable[str], year: int | None = None, tags: Iterable[str] = ()) -> np.ndarray:
        """float32 [n]: the row bootstrap gives a movie with these genres, release year and tags."""
        out = np.zeros(len(self.names), dtype=np.float32)
        index = self.index
        hits = [feature_name(GENRE, g) for g in genres] + [feature_name(TAG, tag_token(t)) for t in tags]
        if year is not None:
            hits.append(feature_name(DECADE, str(decade_of(int(year)))))
        for name in hits:
            i = index.get(name)
            if i is not None:
                out[i] = 1.0
        i = index.get(YEAR_SCALED)
        if year is not None and i is not None and self.year_range is not None:
            lo, hi = self.year_range
            out[i] = min(max(scaled_year(int(year), lo, hi), 0.0), 1.0)
        return out
