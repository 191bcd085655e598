"""The user record in Redis: one codec for its writer (the worker) and its readers (the gateway, tests).

Three keys (:mod:`schemas.redis_keys`) hold one user:

* ``rs:user:{uid}`` (hash): :class:`UserRecord`'s fields, typed as in :data:`FIELDS`;
* ``rs:user:{uid}:rated`` (hash): movie id -> the latest rating and its event time packed in one
  integer, ``event_ts_ms * 10 + half_stars - 1`` (:func:`encode_rated`, :func:`decode_rated`,
  :func:`decode_rated_entry`);
* ``rs:user:{uid}:recent`` (list, newest first, at most ``RECENT_MAX``): ``movie_id:packed`` entries,
  ``packed`` as in ``rated`` (:func:`encode_recent`, :func:`decode_recent`).

**Compact on purpose** (memory per user and per rating, ``bench/redis_memory.py``): Redis keeps a small
hash or list as one listpack, where a value that is a decimal integer is stored as a 1-9 byte integer,
so a packed ``rated`` value costs 10 bytes where ``"4.5:1700000000000"`` cost 19. The listpack limits
the server is started with are settings (``redis_hash_max_listpack_*``, ``reelstream/shell/local_services.py``).
``pre`` stays float64: stored as float32 it would be rounded at every write, so a user's state would
depend on how the worker happened to batch the events (a crash, a rebalance, the seed's batch size), not
on the events alone; the bench measures what float32 would save (1 KiB a user).

**Older records still read.** A ``rated`` value with ``.`` or ``:`` is ``rating[:event_ts_ms]`` (without
a time: None); a ``recent`` entry with two ``:`` is ``movie_id:rating:ts_ms``. The worker writes the
compact form when it next writes that movie or that user, so old and new forms may sit side by side.

The worker (``streams/processor.py``) folds a batch into :class:`UserRecord` values
(:meth:`UserRecord.observe` updates the statistics) and writes :func:`encode_user`; it reads back only
:data:`FOLD_FIELDS` (:func:`decode_fold_row`). The gateway (``gateway/state.py``) decodes the hashes
with :func:`decode_user`; ``tests/user_state.py`` writes users through the same functions. Values
arrive as Redis returns them (bytes) or as ``streams.store.MemoryFeatureTables`` keeps them (text,
numbers, bytes); a value that is not of its field's type raises :class:`RecordError`, naming the
field, so no reader guesses.

Pure: numpy (polars for the bulk seed's vectorised encoders), no Redis client.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from schemas.ratings import MAX_RATING, MIN_RATING
from schemas.redis_keys import text

__all__ = [
    "BINARY_FIELDS",
    "FIELDS",
    "FOLD_FIELDS",
    "RecordError",
    "UserRecord",
    "decode_fold_row",
    "decode_rated",
    "decode_rated_at",
    "decode_rated_entry",
    "decode_recent",
    "decode_recent_list",
    "decode_user",
    "encode_rated",
    "encode_recent",
    "encode_recent_many",
    "encode_user",
    "pack_rating",
    "pack_ratings",
    "unpack_rating",
]

#: ``rs:user:{uid}`` fields and their types (``f8``/``f4``: little-endian float64/float32 array bytes).
FIELDS: dict[str, str] = {
    "version": "int",  # events applied to this user; bumps on every one (the gateway's cache key)
    "pre": "f8",  # the encoder's pre-activation sum (models.state.UserState.pre)
    "norm2": "float",  # squared input norm (UserState.norm2)
    "n_events": "int",  # UserState.n_events
    "mu": "f4",  # encoded latent mean
    "logvar": "f4",  # encoded latent log-variance
    "n": "int",  # rating events applied (a re-rating counts again)
    "sum": "float",  # sum of their ratings
    "sumsq": "float",  # sum of their squares
    "first_ms": "int",  # earliest event time applied (epoch ms)
    "last_ms": "int",  # latest event time applied (epoch ms; the freshness probe waits on it)
    "model_version": "str",  # the model whose weights ``pre``/``mu``/``logvar`` belong to
}
#: The fields the worker reads back before folding in a batch, in this order (``streams/store.py``).
#: ``model_version`` says which model's weights the state is folded with (a hot swap moves users one by one).
FOLD_FIELDS = ("version", "pre", "norm2", "n_events", "n", "sum", "sumsq", "first_ms", "last_ms", "model_version")
BINARY_FIELDS = tuple(f for f, t in FIELDS.items() if t in ("f4", "f8"))
_DTYPES: dict[str, np.dtype[Any]] = {"f8": np.dtype("<f8"), "f4": np.dtype("<f4")}
#: ``rated`` and ``recent`` ratings as half stars (``rating * 2``, 1..10), the last digit of the packed value.
_HALF = 2
_MIN_HALF, _MAX_HALF = round(MIN_RATING * _HALF), round(MAX_RATING * _HALF)


class RecordError(ValueError):
    """A stored value that is not of its field's type (the message names the field and the value)."""


@dataclass(slots=True)
class UserRecord:
    """``rs:user:{uid}`` decoded; ``None`` for a field the hash does not hold."""

    version: int = 0
    pre: np.ndarray | None = None  #: float64 [hidden]
    norm2: float = 0.0
    n_events: int = 0
    mu: np.ndarray | None = None  #: float32 [latent]
    logvar: np.ndarray | None = None  #: float32 [latent]
    n: int = 0
    sum: float = 0.0
    sumsq: float = 0.0
    first_ms: int | None = None
    last_ms: int | None = None
    model_version: str | None = None

    def observe(self, rating: float, ts_ms: int) -> None:
        """Count one applied rating event in the version and the statistics (the worker's rule)."""
        self.version += 1
        self.n += 1
        self.sum += rating
        self.sumsq += rating * rating
        if self.first_ms is None or ts_ms < self.first_ms:
            self.first_ms = ts_ms
        if self.last_ms is None or ts_ms > self.last_ms:
            self.last_ms = ts_ms


def _value(name: str, raw: Any) -> Any:
    """One stored value as its field's type (``raw`` not None)."""
    kind = FIELDS[name]
    try:
        if kind in _DTYPES:
            if not isinstance(raw, bytes | bytearray) or len(raw) % _DTYPES[kind].itemsize:
                raise ValueError(f"{len(raw) if isinstance(raw, bytes | bytearray) else type(raw).__name__} bytes")
            return np.frombuffer(raw, dtype=_DTYPES[kind]).astype(_DTYPES[kind].newbyteorder("="))
        if kind == "str":
            return text(raw)
        if kind == "int":
            if isinstance(raw, int):
                return raw
            return int(raw if isinstance(raw, bytes) and raw.isdigit() else text(raw))
        value = float(raw) if isinstance(raw, int | float) else float(text(raw))
        if not math.isfinite(value):
            raise ValueError("not finite")
        return value
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordError(f"user record field {name!r}: {str(raw)[:40]!r} is not a {kind} ({exc})") from None


def decode_user(raw: Mapping[Any, Any]) -> UserRecord:
    """``HGETALL rs:user:{uid}`` (bytes or text keys) as a record; fields it does not know are ignored."""
    rec = UserRecord()
    for key, value in raw.items():
        name = text(key)
        if name in FIELDS and value is not None:
            setattr(rec, name, _value(name, value))
    return rec


def decode_fold_row(values: Sequence[Any]) -> UserRecord:
    """``HMGET rs:user:{uid} *FOLD_FIELDS`` (a missing field is None) as a record.

    The worker decodes one row per user of every batch: the fields go straight to :func:`_value`, without the
    name lookups :func:`decode_user` makes for a hash of unknown fields.
    """
    if len(values) != len(FOLD_FIELDS):
        raise RecordError(f"user record row has {len(values)} values, expected {len(FOLD_FIELDS)} ({FOLD_FIELDS})")
    rec = UserRecord()
    for name, raw in zip(FOLD_FIELDS, values, strict=True):
        if raw is not None:
            setattr(rec, name, _value(name, raw))
    return rec


def encode_user(rec: UserRecord) -> list[Any]:
    """The record as flat ``HSET`` arguments (``field, value, ...``); None fields are left out."""
    out: list[Any] = []
    for name, kind in FIELDS.items():
        value = getattr(rec, name)
        if value is None:
            continue
        if kind in _DTYPES:
            value = np.ascontiguousarray(value, dtype=_DTYPES[kind]).tobytes()
        elif kind == "int":
            value = int(value)
        elif kind == "float":
            value = float(value)
        out += [name, value]
    return out


def pack_rating(rating: float, ts_ms: int) -> int:
    """One rating event as one integer: ``ts_ms * 10 + half_stars - 1`` (the last digit: 0 = 0.5 .. 9 = 5.0).

    Lossless for every valid rating (a half step in 0.5..5.0, ``schemas.ratings``) at any ms time,
    negative ones too (:func:`unpack_rating` floors); anything else is a RecordError, never rounded.

    >>> pack_rating(4.5, 1_700_000_000_000), pack_rating(0.5, 0), pack_rating(5.0, -1)
    (17000000000008, 0, -1)
    """
    half = float(rating) * _HALF
    if not (math.isfinite(half) and half.is_integer() and _MIN_HALF <= half <= _MAX_HALF):
        raise RecordError(f"rating {rating!r} is not a half step in {MIN_RATING}..{MAX_RATING}")
    return int(ts_ms) * 10 + int(half) - _MIN_HALF


def unpack_rating(packed: int) -> tuple[float, int]:
    """:func:`pack_rating`'s ``(rating, ts_ms)`` back.

    >>> unpack_rating(17000000000008), unpack_rating(-1)
    ((4.5, 1700000000000), (5.0, -1))
    """
    ts, digit = divmod(int(packed), 10)
    return (digit + _MIN_HALF) / _HALF, ts


def _packed(text: str) -> int:
    """A packed value's text as its integer (ValueError otherwise; no sign but ``-``, ASCII digits only)."""
    digits = text[1:] if text[:1] == "-" else text
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError(text)
    return int(text)


def pack_ratings(ratings: np.ndarray, ts_ms: np.ndarray) -> np.ndarray:
    """:func:`pack_rating` over arrays (int64), for the bulk seed; the same RecordError for any invalid rating.

    >>> pack_ratings(np.array([4.5, 0.5]), np.array([1_700_000_000_000, 0])).tolist()
    [17000000000008, 0]
    """
    half = np.asarray(ratings, dtype=np.float64) * _HALF
    bad = ~(np.isfinite(half) & (half == np.round(half)) & (half >= _MIN_HALF) & (half <= _MAX_HALF))
    if bad.any():
        raise RecordError(f"rating {float(np.asarray(ratings)[bad][0])!r} is not a half step in "
                          f"{MIN_RATING}..{MAX_RATING}")  # fmt: skip
    return np.asarray(ts_ms, dtype=np.int64) * 10 + half.astype(np.int64) - _MIN_HALF


def encode_recent_many(movie_ids: np.ndarray, ratings: np.ndarray, ts_ms: np.ndarray) -> pl.Series:
    """:func:`encode_recent` over arrays, in one vectorised pass (the bulk seed writes millions).

    >>> encode_recent_many(np.array([31, 7]), np.array([4.0, 0.5]), np.array([1000, 5])).to_list()
    ['31:10007', '7:50']
    """
    packed = pack_ratings(ratings, ts_ms)
    frame = pl.DataFrame({"m": np.asarray(movie_ids, dtype=np.int64), "p": packed})
    return frame.select(pl.concat_str("m", pl.lit(":"), "p")).to_series()


def encode_rated(ratings: Mapping[int, tuple[float, int]]) -> list[Any]:
    """``rs:user:{uid}:rated`` entries as flat ``HSET`` arguments: ``movie_id, packed, ...`` (:func:`pack_rating`).

    The event time names the rating event applied (with the user and the movie, its identity): a
    redelivered copy of it is recognised whatever offset or log it comes from (``streams/processor.py``).

    >>> encode_rated({31: (4.5, 1000)})
    [31, '10008']
    """
    out: list[Any] = []
    for mid, (r, ts) in ratings.items():
        out += [int(mid), str(pack_rating(r, ts))]
    return out


def decode_rated_entry(value: Any) -> tuple[float, int | None]:
    """One ``rated`` value as ``(rating, event_ts_ms)``; an older ``rating[:ts]`` value without a time gives None.

    >>> decode_rated_entry(b"10008"), decode_rated_entry(b"4.5:1000"), decode_rated_entry("3.0")
    ((4.5, 1000), (4.5, 1000), (3.0, None))
    """
    if type(value) is bytes and value.isdigit():  # the packed form as Redis returns it (the gateway's hot path)
        ts, digit = divmod(int(value), 10)
        return (digit + _MIN_HALF) / _HALF, ts
    if isinstance(value, int):
        return unpack_rating(value)
    if isinstance(value, float):  # an older rating without a time, as the memory store keeps it
        return value, None
    try:
        raw = text(value)
        if "." in raw or ":" in raw:  # older: repr(rating)[:event_ts_ms]
            rating, _, at = raw.partition(":")
            return float(rating), (int(at) if at else None)
        return unpack_rating(_packed(raw))
    except (ValueError, UnicodeDecodeError):
        raise RecordError(f"rated value {str(value)[:40]!r} is not a packed rating (or rating[:event_ts_ms])") from None


def decode_rated_at(raw: Mapping[Any, Any]) -> dict[int, tuple[float, int]]:
    """``HGETALL rs:user:{uid}:rated`` as ``{movie_id: (rating, event_ts_ms)}`` (0 for a value without a time).

    >>> decode_rated_at({b"31": b"10008", b"7": b"3.0"})
    {31: (4.5, 1000), 7: (3.0, 0)}
    """
    out: dict[int, tuple[float, int]] = {}
    for k, v in raw.items():
        if type(k) is bytes and type(v) is bytes and k.isdigit() and v.isdigit():  # as decode_rated_entry, inlined
            packed_ts, digit = divmod(int(v), 10)
            out[int(k)] = ((digit + _MIN_HALF) / _HALF, packed_ts)
            continue
        try:
            rating, ts = decode_rated_entry(v)
            out[int(text(k))] = (rating, ts or 0)
        except (ValueError, UnicodeDecodeError, RecordError):
            raise RecordError(f"rated entry {str(k)[:40]!r} -> {str(v)[:40]!r} is not movie id -> rating") from None
    return out


def decode_rated(raw: Mapping[Any, Any]) -> dict[int, float]:
    """``HGETALL rs:user:{uid}:rated`` as ``{movie_id: rating}``."""
    return {mid: r for mid, (r, _) in decode_rated_at(raw).items()}


def encode_recent(movie_id: int, rating: float, ts_ms: int) -> str:
    """One ``rs:user:{uid}:recent`` entry, ``movie_id:packed`` (:func:`pack_rating`).

    >>> encode_recent(31, 4.0, 1000), decode_recent(b"31:10007"), decode_recent(b"31:4.0:1000")
    ('31:10007', (31, 4.0, 1000), (31, 4.0, 1000))
    """
    return f"{int(movie_id)}:{pack_rating(rating, ts_ms)}"


def decode_recent(entry: Any) -> tuple[int, float, int]:
    """``movie_id:packed`` (or an older ``movie_id:rating:ts_ms``) -> ``(movie_id, rating, ts_ms)``."""
    try:
        parts = text(entry).split(":")
        if len(parts) == 3:
            return int(parts[0]), float(parts[1]), int(parts[2])
        mid, packed = parts
        return int(mid), *unpack_rating(_packed(packed))
    except (ValueError, UnicodeDecodeError):
        raise RecordError(
            f"recent entry {str(entry)[:60]!r} is not movie_id:packed (or movie_id:rating:ts_ms)"
        ) from None


def decode_recent_list(entries: Iterable[Any]) -> list[tuple[int, float, int]]:
    """A whole recent list (newest first)."""
    return [decode_recent(e) for e in entries]
