"""Tiny MovieLens-shaped fixtures written to real files, shared by the bootstrap tests."""

from __future__ import annotations

from pathlib import Path

#: 2000-01-01 .. 2006-01-01, one rating a year: the 0.8 quantile (lower) is row 5's ts.
RATINGS = [
    (1, 1, 4.0, 946684800),
    (1, 2, 3.5, 978307200),
    (1, 5, 5.0, 1009843200),
    (2, 1, 3.0, 1041379200),
    (2, 3, 2.5, 1072915200),
    (3, 2, 4.5, 1104537600),
    (3, 5, 1.0, 1136073600),
]
MOVIES = """movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children
2,"Heat, The (1995)",Action|Crime
3,No Year Movie,(no genres listed)
5,Alien (1979),Horror|Sci-Fi
"""
TAGS = """userId,movieId,tag,timestamp
1,1,Funny,946684801
2,1,funny ,946684802
3,2,heist,1300000000
"""


def ratings_csv(rows: list[tuple[object, ...]]) -> str:
    """MovieLens ratings.csv text for ``rows``."""
    return "userId,movieId,rating,timestamp\n" + "".join(",".join(str(v) for v in r) + "\n" for r in rows)


def write_csv_dataset(folder: Path, rows: list[tuple[object, ...]] | None = None, movies: str = MOVIES) -> Path:
    """Write a movielens-csv dataset (ratings, movies, tags, links) and return its folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text(ratings_csv(RATINGS if rows is None else rows))
    (folder / "movies.csv").write_text(movies)
    (folder / "tags.csv").write_text(TAGS)
    (folder / "links.csv").write_text("movieId,imdbId,tmdbId\n1,0114709,862\n")
    return folder
