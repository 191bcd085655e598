"""MovieLens readers: every supported layout normalised to one frame shape.

The layout is detected from the files in the folder:

=================  ==========================================  =================
format             files                                       datasets
=================  ==========================================  =================
``movielens-csv``  ratings.csv, movies.csv (tags.csv, links)   latest-small, 20m, 25m, 32m
``ml-100k``        u.data (tab), u.item (``|``, latin-1)       ml-100k
``ml-1m``          ratings.dat, movies.dat (``::``, latin-1)   ml-1m
=================  ==========================================  =================

Every reader returns :class:`RawDataset`: ``ratings`` (user_id i64, movie_id i64,
rating f32, ts i64) in file order, ``movies`` (movie_id i64, title str, genres
list[str], year i32 nullable) and ``tags`` (user_id, movie_id, tag, ts).

Unusable input raises :class:`~reelstream.errors.DataError` naming the file, the
line and the problem. Parsing uses polars' multi-threaded CSV reader with a fixed
schema; only when that fails do we re-read as text to find the offending line, so
the happy path pays nothing for the diagnosis.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from reelstream.errors import DataError

__all__ = [
    "FORMATS",
    "GENRES_100K",
    "NO_GENRES",
    "RawDataset",
    "detect_format",
    "read_dataset",
    "read_ratings_csv",
    "sha256_file",
]

#: MovieLens' marker for a movie without genres; normalised to an empty list.
NO_GENRES = "(no genres listed)"
#: ml-100k's 19 genre flag columns, in file order (names aligned with the CSV datasets).
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip

#: format name -> the files that identify it.
FORMATS: dict[str, tuple[str, ...]] = {
    "movielens-csv": ("ratings.csv", "movies.csv"),
    "ml-100k": ("u.data", "u.item"),
    "ml-1m": ("ratings.dat", "movies.dat"),
}

RATINGS_COLUMNS: dict[str, pl.DataType] = {
    "user_id": pl.Int64(),
    "movie_id": pl.Int64(),
    "rating": pl.Float32(),
    "ts": pl.Int64(),
}
_CSV_RATINGS = {"userId": "user_id", "movieId": "movie_id", "rating": "rating", "timestamp": "ts"}
_CSV_MOVIES = {"movieId": "movie_id", "title": "title", "genres": "genres"}
_CSV_TAGS = {"userId": "user_id", "movieId": "movie_id", "tag": "tag", "timestamp": "ts"}
_YEAR_RE = r"\((\d{4})\)\s*$"
#: polars names header-less columns ``column_<n>``; whether n starts at 0 or 1 changed across versions.
_AUTO_BASE = int(pl.read_csv(io.BytesIO(b"1\n"), has_header=False).columns[0].rsplit("_", 1)[1])


def _col(i: int) -> str:
    """polars' automatic name of the 0-based column ``i`` of a header-less file."""
    return f"column_{i + _AUTO_BASE}"


@dataclass(frozen=True)
class RawDataset:
    """A dataset as read, before validation: frames in file order plus provenance."""

    name: str
    format: str
    source: Path
    ratings: pl.DataFrame
    movies: pl.DataFrame
    tags: pl.DataFrame
    #: file name -> sha256 hex digest, of every file read.
    checksums: dict[str, str] = field(default_factory=dict)
    #: line number of the first rating row (2 under a header, 1 without), for quarantine lines.
    first_line: int = 2
    ratings_file: str = "ratings.csv"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks (hashlib releases the GIL, so this overlaps parsing)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def detect_format(folder: Path) -> str:
    """The format whose identifying files are all in ``folder``."""
    if not folder.exists():
        raise DataError("dataset folder does not exist", path=folder)
    if not folder.is_dir():
        raise DataError("expected a dataset folder, got a file", path=folder)
    for name, files in FORMATS.items():
        if all((folder / f).is_file() for f in files):
            return name
    found = sorted(p.name for p in folder.iterdir())[:12]
    expected = "; ".join(f"{k}: {' + '.join(v)}" for k, v in FORMATS.items())
    raise DataError(f"unknown dataset format (expected {expected}; found {found})", path=folder)


# --------------------------------------------------------------------------- generic table reading


def _header(path: Path, separator: str, encoding: str) -> list[str]:
    with path.open("rb") as fh:
        first = fh.readline()
    if not first.strip():
        raise DataError("file is empty" if not first else "header line is blank", path=path, line=1)
    text = first.decode(encoding, errors="replace").lstrip("\ufeff").rstrip("\r\n")
    return [c.strip().strip('"') for c in text.split(separator)]


def _first_bad_row(path: Path, text: pl.DataFrame, types: Mapping[str, pl.DataType], first_line: int) -> DataError:
    """Find the first row whose value does not parse as its column type (text frame, slow path)."""
    for col, dtype in types.items():
        bad = text.with_row_index("_row").filter(
            pl.col(col).is_not_null() & pl.col(col).str.strip_chars().cast(dtype, strict=False).is_null()
        )
        if bad.height:
            row = bad.row(0, named=True)
            return DataError(
                f"column {col!r}: {str(row[col])[:60]!r} is not a valid {dtype}",
                path=path,
                line=row["_row"] + first_line,
            )
    return DataError("file could not be parsed", path=path)


def _read_table(
    path: Path,
    source: str | Path | bytes,
    *,
    columns: Mapping[str, str],
    types: Mapping[str, pl.DataType],
    separator: str,
    has_header: bool,
    quote_char: str | None = '"',
    new_columns: list[str] | None = None,
    first_line: int = 2,
) -> pl.DataFrame:
    """Read ``columns`` (file name -> our name) with ``types`` (our name -> dtype) strictly.

    On a parse error re-read everything as text to name the line and value.
    """
    file_types = {src: types[dst] for src, dst in columns.items() if dst in types}
    src = io.BytesIO(source) if isinstance(source, bytes) else source
    kwargs = dict(
        separator=separator,
        has_header=has_header,
        quote_char=quote_char,
        columns=list(columns),
        new_columns=new_columns,
        raise_if_empty=False,
        truncate_ragged_lines=False,
    )
    try:
        df = pl.read_csv(src, schema_overrides=file_types, **kwargs)  # type: ignore[arg-type]
    except (pl.exceptions.PolarsError, OSError) as exc:
        if isinstance(src, io.BytesIO):
            src.seek(0)
        try:
            text = pl.read_csv(src, infer_schema=False, **kwargs)  # type: ignore[arg-type]
        except (pl.exceptions.PolarsError, OSError):
            raise DataError(f"malformed file ({str(exc).splitlines()[0][:160]})", path=path) from exc
        raise _first_bad_row(path, text, file_types, first_line) from exc
    return df.rename(dict(columns))


def _check_columns(path: Path, header: list[str], expected: Mapping[str, str]) -> None:
    missing = [c for c in expected if c not in header]
    if missing:
        raise DataError(f"wrong columns: missing {missing}, expected {list(expected)}, got {header}", path=path, line=1)


def _require_rows(path: Path, df: pl.DataFrame) -> pl.DataFrame:
    if df.height == 0:
        raise DataError("file has a header but no data rows", path=path)
    return df


def _with_year(movies: pl.DataFrame) -> pl.DataFrame:
    """Strip titles and parse ``"Title (1995)"`` into ``year`` (null when absent)."""
    return movies.with_columns(
        pl.col("title").fill_null("").str.strip_chars(),
    ).with_columns(pl.col("title").str.extract(_YEAR_RE, 1).cast(pl.Int32, strict=False).alias("year"))


def _split_genres(col: pl.Expr) -> pl.Expr:
    """``"A|B"`` -> ``["A", "B"]``; ``"(no genres listed)"`` or empty -> ``[]``."""
    return (
        pl.when(col.is_null() | (col.str.strip_chars() == "") | (col == NO_GENRES))
        .then(pl.lit([], dtype=pl.List(pl.String)))
        .otherwise(col.str.split("|"))
    )


def _latin1(path: Path) -> bytes:
    return path.read_bytes().decode("latin-1").encode("utf-8")


# --------------------------------------------------------------------------- per format


def read_ratings_csv(path: Path) -> pl.DataFrame:
    """A MovieLens ``ratings.csv`` (userId,movieId,rating,timestamp) as the common ratings frame."""
    if not path.is_file():
        raise DataError("ratings file does not exist", path=path)
    _check_columns(path, _header(path, ",", "utf-8"), _CSV_RATINGS)
    df = _read_table(path, path, columns=_CSV_RATINGS, types=RATINGS_COLUMNS, separator=",", has_header=True)
    return _require_rows(path, df).select(list(RATINGS_COLUMNS))


def _read_movielens_csv(folder: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    ratings = read_ratings_csv(folder / "ratings.csv")
    mpath = folder / "movies.csv"
    _check_columns(mpath, _header(mpath, ",", "utf-8"), _CSV_MOVIES)
    movies = _read_table(
        mpath,
        mpath,
        columns=_CSV_MOVIES,
        types={"movie_id": pl.Int64(), "title": pl.String(), "genres": pl.String()},
        separator=",",
        has_header=True,
    )
    movies = _require_rows(mpath, movies).with_columns(_split_genres(pl.col("genres")).alias("genres"))
    tpath = folder / "tags.csv"
    tag_types = {"user_id": pl.Int64(), "movie_id": pl.Int64(), "tag": pl.String(), "ts": pl.Int64()}
    if tpath.is_file() and tpath.stat().st_size > 0:
        _check_columns(tpath, _header(tpath, ",", "utf-8"), _CSV_TAGS)
        tags = _read_table(tpath, tpath, columns=_CSV_TAGS, types=tag_types, separator=",", has_header=True)
    else:
        tags = pl.DataFrame(schema=tag_types)
    return ratings, movies, tags


def _read_100k(folder: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    rpath = folder / "u.data"
    if rpath.stat().st_size == 0:
        raise DataError("file is empty", path=rpath, line=1)
    names = ["user_id", "movie_id", "rating", "ts"]
    ratings = _read_table(
        rpath,
        rpath,
        columns={_col(i): n for i, n in enumerate(names)},
        types=RATINGS_COLUMNS,
        separator="\t",
        has_header=False,
        quote_char=None,
        first_line=1,
    )
    mpath = folder / "u.item"
    raw = _latin1(mpath)
    if not raw.strip():
        raise DataError("file is empty", path=mpath, line=1)
    flag_cols = {_col(5 + i): f"g{i}" for i in range(len(GENRES_100K))}
    movies = _read_table(
        mpath,
        raw,
        columns={_col(0): "movie_id", _col(1): "title", **flag_cols},
        types={"movie_id": pl.Int64(), "title": pl.String(), **{g: pl.Int8() for g in flag_cols.values()}},
        separator="|",
        has_header=False,
        quote_char=None,
        first_line=1,
    )
    genre_exprs = [
        pl.when(pl.col(g) == 1).then(pl.lit(name))
        for g, name in zip(flag_cols.values(), GENRES_100K, strict=True)
        if name != "unknown"
    ]
    movies = movies.with_columns(pl.concat_list(genre_exprs).list.drop_nulls().alias("genres")).select(
        "movie_id", "title", "genres"
    )
    tags = pl.DataFrame(schema={"user_id": pl.Int64(), "movie_id": pl.Int64(), "tag": pl.String(), "ts": pl.Int64()})
    return _require_rows(rpath, ratings), _require_rows(mpath, movies), tags


def _read_1m(folder: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    # polars separators are one byte: map "::" to the ASCII unit separator, which never occurs in the data.
    rpath = folder / "ratings.dat"
    raw = rpath.read_bytes().replace(b"::", b"\x1f")
    if not raw.strip():
        raise DataError("file is empty", path=rpath, line=1)
    ratings = _read_table(
        rpath,
        raw,
        columns={_col(i): n for i, n in enumerate(["user_id", "movie_id", "rating", "ts"])},
        types=RATINGS_COLUMNS,
        separator="\x1f",
        has_header=False,
        quote_char=None,
        first_line=1,
    )
    mpath = folder / "movies.dat"
    mraw = _latin1(mpath).replace(b"::", b"\x1f")
    if not mraw.strip():
        raise DataError("file is empty", path=mpath, line=1)
    movies = _read_table(
        mpath,
        mraw,
        columns={_col(0): "movie_id", _col(1): "title", _col(2): "genres"},
        types={"movie_id": pl.Int64(), "title": pl.String(), "genres": pl.String()},
        separator="\x1f",
        has_header=False,
        quote_char=None,
        first_line=1,
    ).with_columns(_split_genres(pl.col("genres")).alias("genres"))
    tags = pl.DataFrame(schema={"user_id": pl.Int64(), "movie_id": pl.Int64(), "tag": pl.String(), "ts": pl.Int64()})
    return _require_rows(rpath, ratings), _require_rows(mpath, movies), tags


_READERS = {"movielens-csv": _read_movielens_csv, "ml-100k": _read_100k, "ml-1m": _read_1m}
_RATINGS_FILE = {"movielens-csv": "ratings.csv", "ml-100k": "u.data", "ml-1m": "ratings.dat"}
_EXTRA_FILES = {"movielens-csv": ("tags.csv", "links.csv"), "ml-100k": (), "ml-1m": ()}


def read_dataset(folder: Path) -> RawDataset:
    """Detect the layout of ``folder`` and read it; checksums are computed alongside parsing."""
    folder = Path(folder)
    fmt = detect_format(folder)
    files = [f for f in (*FORMATS[fmt], *_EXTRA_FILES[fmt]) if (folder / f).is_file()]
    with ThreadPoolExecutor(max_workers=1) as pool:
        digests: dict[str, Future[str]] = {f: pool.submit(sha256_file, folder / f) for f in files}
        ratings, movies, tags = _READERS[fmt](folder)
        checksums = {f: fut.result() for f, fut in digests.items()}
    movies = _with_year(movies).select(
        pl.col("movie_id").cast(pl.Int64), "title", pl.col("genres").cast(pl.List(pl.String)), "year"
    )
    return RawDataset(
        name=folder.name,
        format=fmt,
        source=folder.resolve(),
        ratings=ratings.select([pl.col(c).cast(t) for c, t in RATINGS_COLUMNS.items()]),
        movies=movies,
        tags=tags.select(
            pl.col("user_id").cast(pl.Int64),
            pl.col("movie_id").cast(pl.Int64),
            pl.col("tag"),
            pl.col("ts").cast(pl.Int64),
        ),
        checksums=checksums,
        first_line=2 if fmt == "movielens-csv" else 1,
        ratings_file=_RATINGS_FILE[fmt],
    )
