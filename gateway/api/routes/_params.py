"""Shared parameter types and the field-level 422 helper."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import Path
from fastapi.exceptions import RequestValidationError

UserId = Annotated[int, Path(ge=1, le=2**53, description="MovieLens user id.", examples=[1])]
MovieId = Annotated[int, Path(ge=1, le=2**53, description="MovieLens movie id.", examples=[1])]


def field_error(loc: Sequence[str | int], msg: str, value: object) -> RequestValidationError:
    """A 422 naming the offending field, shaped like FastAPI's own validation errors."""
    return RequestValidationError([{"type": "value_error", "loc": tuple(loc), "msg": msg, "input": value}])


def check_genres(name: str, values: list[str], known: Sequence[str]) -> None:
    unknown = [g for g in values if g not in known]
    if unknown:
        raise field_error(("query", name), f"unknown genre(s) {unknown}; known: {list(known)}", unknown)
