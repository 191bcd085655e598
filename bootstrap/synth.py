"""Synthetic MovieLens-shaped datasets with planted taste, for benchmarks and tests at any scale.

Writes ``ratings.csv``, ``movies.csv``, ``tags.csv`` and ``links.csv`` exactly as MovieLens does, with
ML-32M's marginals and a known structure underneath, so that a model's lead over popularity can be
measured at any scale (pairs drawn by popularity alone leave nothing to learn).

Marginals (kept from the popularity-only generator):

* users and movies scale with the rating count relative to ML-32M (32,000,000 ratings -> 200,948 users
  and 87,585 movies), with floors so small sets stay feasible;
* long-tailed user activity (log-normal), every user has at least one rating and at most half the catalogue;
* power-law item popularity ``w_i = (rank_i + 30) ** -1`` (the top movie gets ~0.4% of ratings, like
  ML-32M), ranks shuffled over movie ids;
* ratings on the half-star scale with ML-32M's shares, timestamps from one activity window per user
  between 1996 and 2023 (median ~3 weeks, a long tail of years);
* titles with years, genres from the real MovieLens list, some "(no genres listed)".

The generative model (the ground truth comes back as :class:`Taste`):

1. **Topics.** ``topics`` taste topics (``--topics``, default 20). Each movie belongs to one topic
   (topic sizes ~ Dirichlet(4)); a topic's usage prior is its popularity mass, ``a_t ~ sum of w_i
   over its movies``, so drawing a topic by ``a`` and then a movie within it by ``w`` gives back the
   global power law.
2. **Genres follow topics.** Every topic has 2 signature genres whose weight is multiplied by 8 when its
   movies' genres are drawn, so genre affinity is real (and learnable from side features).
3. **Users mix a few topics, and drift.** A user has a start and an end mixture, each 3 slots with
   topics drawn from ``a`` (with replacement) and weights ~ Dirichlet(0.7); each end slot keeps its
   start topic with probability 0.25, otherwise it is redrawn. At relative position ``tau`` in the
   user's activity window the mixture is ``(1 - tau) * start + tau * end``, so recency matters.
4. **Pairs.** Each rating draws ``tau`` uniformly (its timestamp is ``window_start + tau * length``),
   then with probability 0.25 a movie by global popularity (taste-free: popularity stays a real
   baseline), else a topic from the mixture at ``tau`` and a movie within the topic by ``w`` (one
   ``searchsorted`` into per-topic CDFs). Duplicate (user, movie) pairs are redrawn in rounds (one of the
   duplicates, chosen at random, stays): three rounds from taste, two by global popularity (a heavy
   user exhausts their topics' heads), then uniformly over the catalogue (heavy users converge fast).
5. **Ratings.** ``score = quality_i + bias_u + 2.5 * theta_u(tau)[topic_i] + 0.5 * (liked genre)
   - 0.5 * (disliked genre) + noise`` (quality ~ N(0, 0.6), bias ~ N(0, 0.5), noise ~ N(0, 0.9), one
   liked and one disliked genre per user drawn by genre frequency), mapped onto ML-32M's rating shares
   by quantiles, so positives (>= 4 stars) concentrate on the user's current topics.

``topics=0`` turns the taste off: every pair is drawn by popularity and ratings ignore taste (the old
generator's shape). Everything is vectorised numpy (draws in fixed-size chunks, so memory stays flat and
the output is deterministic per seed); the CSVs are written by polars.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

__all__ = ["DEFAULT_TOPICS", "GENRES", "ML32M", "SLOTS", "SynthData", "Taste", "generate", "scale", "write_dataset"]

#: (ratings, users, movies) of ML-32M, the reference scale.
ML32M = (32_000_000, 200_948, 87_585)
#: The MovieLens genre list with rough ML-32M frequencies (weights, not probabilities).
GENRES: dict[str, float] = {
    "Drama": 34.0, "Comedy": 23.0, "Thriller": 11.0, "Romance": 10.0, "Action": 10.0,
    "Horror": 8.0, "Documentary": 7.0, "Crime": 7.0, "Adventure": 5.5, "Sci-Fi": 4.5,
    "Children": 4.0, "Animation": 4.5, "Mystery": 4.0, "Fantasy": 4.0, "War": 2.5,
    "Western": 1.5, "Musical": 1.2, "Film-Noir": 0.4, "IMAX": 0.2,
}  # fmt: skip
#: ML-32M's rating distribution over 0.5..5.0.
RATING_VALUES = np.arange(1, 11, dtype=np.float32) / 2
RATING_SHARES = np.array([1.6, 3.0, 1.6, 6.6, 5.0, 19.4, 12.6, 26.6, 8.7, 14.9])
#: Planted taste (module docstring): topics by default, and topic slots per user mixture.
DEFAULT_TOPICS = 20
SLOTS = 3
_SLOT_CONCENTRATION = 0.7  # Dirichlet concentration of a mixture's slot weights (below 1: one slot dominates)
_DRIFT = 0.75  # chance an end-mixture slot is redrawn instead of keeping its start topic
_POPULARITY_SHARE = 0.25  # pairs drawn by global popularity, ignoring taste
_SIGNATURE_GENRES = 2  # genres a topic favours
_SIGNATURE_BOOST = 8.0  # how much more likely a topic's movies carry its signature genres
_AFFINITY = 2.5  # rating score per unit of the movie topic's weight in the user's current mixture
_GENRE_TASTE = 0.5  # rating score for a user's liked genre (minus for the disliked one)
_TASTE_ROUNDS = 3  # collision rounds drawn from taste,
_POPULAR_ROUNDS = 2  # then by global popularity (heavy users exhaust their topics), then uniformly
_TAU_BITS = 24  # time position resolution packed into the pair keys
_CHUNK = 1 << 22  # draws per vectorised chunk: bounds the temporaries' memory
_GUIDE = 8  # guide-table buckets per CDF entry
_T0 = int(datetime(1996, 1, 1, tzinfo=UTC).timestamp())
_T1 = int(datetime(2023, 10, 1, tzinfo=UTC).timestamp())
_ADJ = [
    "Silent",
    "Dark",
    "Last",
    "Lost",
    "Golden",
    "Broken",
    "Hidden",
    "Wild",
    "Secret",
    "Final",
    "Little",
    "Red",
    "Long",
    "Cold",
    "Burning",
    "Crimson",
    "Distant",
    "Eternal",
    "Forgotten",
    "Frozen",
    "Savage",
    "Sweet",
    "Quiet",
    "Midnight",
    "Electric",
    "Strange",
]
_NOUN = [
    "River",
    "Night",
    "City",
    "Heart",
    "Road",
    "Storm",
    "Dream",
    "Kingdom",
    "Shadow",
    "Garden",
    "Empire",
    "Island",
    "Game",
    "Echo",
    "Star",
    "Winter",
    "Summer",
    "Song",
    "Mirror",
    "Machine",
    "Ghost",
    "Journey",
    "Promise",
    "Harbor",
    "Letter",
    "Frontier",
    "Sky",
]
_SUFFIX = ("", "", "", "", " II", " Returns", ": The Beginning", " of Fire", " and the Sea", ", The")
_TAGS = (
    "atmospheric", "funny", "twist ending", "dark comedy", "based on a book", "sci-fi", "visually appealing",
    "thought-provoking", "classic", "surreal", "cult film", "romance", "violence", "quirky",
    "great soundtrack", "predictable", "boring", "slow", "beautiful", "inspirational", "nostalgic",
)  # fmt: skip


def scale(n_ratings: int, users: int | None = None, movies: int | None = None) -> tuple[int, int]:
    """(users, movies) for ``n_ratings``: ML-32M proportions, floors for feasibility.

    >>> scale(32_000_000)
    (200948, 87585)
    """
    n_movies = movies or max(round(n_ratings * ML32M[2] / ML32M[0]), min(100, n_ratings))
    cap = max(1, n_movies // 2)
    n_users = users or min(n_ratings, max(round(n_ratings * ML32M[1] / ML32M[0]), math.ceil(2 * n_ratings / cap)))
    return n_users, n_movies


@dataclass(frozen=True)
class Taste:
    """The planted structure behind a synthetic dataset: the ground truth tests and benchmarks check against.

    Movies are by item index (the row order of ``movies.csv``), users by ``userId - 1``.
    """

    topics: int  #: number of taste topics (0: no taste)
    movie_topic: np.ndarray  #: int16 [n_movies]
    slots: np.ndarray  #: int16 [n_users, 2, SLOTS]: topics of the start (0) and end (1) mixture
    weights: np.ndarray  #: float32 [n_users, 2, SLOTS]: their weights, each row sums to 1
    liked: np.ndarray  #: int8 [n_users]: index into GENRES
    disliked: np.ndarray  #: int8 [n_users]: index into GENRES
    popularity_share: float  #: share of pairs drawn by global popularity, ignoring taste

    def mixture(self, end: bool = False) -> np.ndarray:
        """float32 [n_users, topics]: the start (or end) mixture as dense rows."""
        n_users = self.slots.shape[0]
        out = np.zeros((n_users, max(self.topics, 1)), dtype=np.float32)
        rows = np.repeat(np.arange(n_users), SLOTS)
        np.add.at(out, (rows, self.slots[:, int(end)].ravel()), self.weights[:, int(end)].ravel())
        return out


@dataclass(frozen=True)
class SynthData:
    """The four MovieLens tables, already in CSV column names, and the taste that made them."""

    ratings: pl.DataFrame
    movies: pl.DataFrame
    tags: pl.DataFrame
    links: pl.DataFrame
    taste: Taste | None = None


def _activity(rng: np.random.Generator, n: int, n_users: int, cap: int) -> np.ndarray:
    """Per-user rating counts: log-normal, each in [1, cap], summing to ``n``."""
    weights = rng.lognormal(0.0, 1.25, n_users)
    k = np.ones(n_users, dtype=np.int64)
    left = n - n_users
    free = np.ones(n_users, dtype=bool)
    while left > 0:
        share = weights * free
        add = np.floor(share / share.sum() * left).astype(np.int64)
        if add.sum() == 0:  # hand out the last few one by one to the heaviest free users
            order = np.argsort(-share)[:left]
            add[order] = 1
        k += add
        over = np.maximum(k - cap, 0)
        k -= over
        free &= k < cap
        left = n - int(k.sum())
    return k


def _sorted_unique(keys: np.ndarray, shift: int = 0) -> np.ndarray:
    """Sorted ``keys``, one per distinct ``keys >> shift`` (the smallest).

    Sort + neighbour compare is ~5x faster than numpy 2.4's hash ``unique``.
    """
    keys.sort()
    if keys.size < 2:
        return keys
    high = keys >> shift
    return keys[np.concatenate(([True], high[1:] != high[:-1]))]


def _taste(rng: np.random.Generator, n_topics: int, n_users: int, weight: np.ndarray) -> Taste:
    """Movie topics, users' start/end mixtures and genre likes (module docstring, steps 1 and 3)."""
    n_movies = weight.size
    k = max(n_topics, 1)
    movie_topic = rng.choice(k, n_movies, p=rng.dirichlet(np.full(k, 4.0))).astype(np.int16)
    usage = np.bincount(movie_topic, weights=weight, minlength=k)
    usage = usage / usage.sum()
    slots = rng.choice(k, (n_users, 2, SLOTS), p=usage).astype(np.int16)
    keep = rng.random((n_users, SLOTS)) < 1.0 - _DRIFT
    slots[:, 1] = np.where(keep, slots[:, 0], slots[:, 1])
    weights = rng.dirichlet(np.full(SLOTS, _SLOT_CONCENTRATION), (n_users, 2)).astype(np.float32)
    g = np.array(list(GENRES.values()))
    liked, disliked = rng.choice(g.size, (2, n_users), p=g / g.sum()).astype(np.int8)
    share = _POPULARITY_SHARE if n_topics else 1.0
    return Taste(n_topics, movie_topic, slots, weights, liked, disliked, share)


@dataclass(frozen=True)
class _Sampler:
    """What :func:`_draw` reads: per-topic popularity CDFs end to end, a guide table into them, mixture CDFs.

    Topic ``t`` spans ``(t, t + 1]`` of ``cdf`` (the global catalogue is the last, ``t = topics``), so
    ``items[first j with cdf[j] >= t + u]``, ``u ~ U[0, 1)``, is a movie of topic ``t`` drawn by popularity.
    ``guide[b]`` is that first ``j`` for the bucket start ``b * span / len(guide)``: a lookup plus a step
    or two forward replaces a binary search (5x faster than ``searchsorted`` on random queries).
    """

    items: np.ndarray  #: int64 [2 * n_movies]
    cdf: np.ndarray  #: float64 [2 * n_movies]
    guide: np.ndarray  #: int64 [_GUIDE * 2 * n_movies]
    slot_cdf: list[np.ndarray]  #: per slot but the last: float32 [n_users * 2], the mixture's running sums
    slots: np.ndarray  #: int16 [n_users * 2, SLOTS]: taste.slots, one row per (user, start/end)

    @classmethod
    def build(cls, taste: Taste, weight: np.ndarray) -> _Sampler:
        k = max(taste.topics, 1)
        topic = np.concatenate([taste.movie_topic.astype(np.int64), np.full(weight.size, k)])
        items = np.concatenate([np.arange(weight.size), np.arange(weight.size)])
        order = np.argsort(topic, kind="stable")
        topic, items = topic[order], items[order]
        w = weight[items]
        total = np.bincount(topic, weights=w, minlength=k + 1)
        start = np.cumsum(total) - total
        cdf = topic + (np.cumsum(w) - start[topic]) / total[topic]
        last = np.flatnonzero(np.diff(topic, append=k + 1))  # the last movie of each topic: exactly t + 1
        cdf[last] = topic[last] + 1.0
        n_guide = _GUIDE * cdf.size
        guide = np.searchsorted(cdf, np.arange(n_guide) * ((k + 1) / n_guide))
        cum = np.cumsum(taste.weights.reshape(-1, SLOTS), axis=1)
        slot_cdf = [np.ascontiguousarray(cum[:, s]) for s in range(SLOTS - 1)]
        return cls(items, cdf, guide, slot_cdf, taste.slots.reshape(-1, SLOTS))

    def movies(self, q: np.ndarray) -> np.ndarray:
        """``items[first j with cdf[j] >= q]`` for each ``q`` in ``[0, topics + 1)``."""
        span = self.cdf[-1]
        pos = self.guide[np.minimum((q * (self.guide.size / span)).astype(np.int64), self.guide.size - 1)]
        idx = np.flatnonzero(self.cdf[pos] < q)
        while idx.size:
            pos[idx] += 1
            idx = idx[self.cdf[pos[idx]] < q[idx]]
        return self.items[pos]


def _draw(rng: np.random.Generator, u: np.ndarray, taste: Taste, sampler: _Sampler, tau_bits: int,
          share: float) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(movie, quantised tau) for each user in ``u``: a topic of the mixture at tau, a movie in it by popularity.

    ``share`` of the draws ignore the mixture and take a movie by global popularity. Drawing the start
    mixture with probability ``1 - tau`` and the end one otherwise is drawing from their interpolation.
    """
    tau = rng.random(u.size, dtype=np.float32)
    row = 2 * u + (rng.random(u.size, dtype=np.float32) < tau)
    r = rng.random(u.size, dtype=np.float32)
    slot = np.zeros(u.size, dtype=np.int64)
    for cum in sampler.slot_cdf:
        slot += r > cum[row]
    topic = sampler.slots[row, slot].astype(np.float64)
    topic[rng.random(u.size, dtype=np.float32) < share] = max(taste.topics, 1)
    return sampler.movies(topic + rng.random(u.size)), (tau * (1 << tau_bits)).astype(np.int64)


def _scramble(pair: np.ndarray, bits: int) -> np.ndarray:
    """A fixed ``bits``-bit hash of each pair (Fibonacci hashing), to XOR the packed tau with."""
    return ((pair.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - bits)).astype(np.int64)


def _pairs(rng: np.random.Generator, k: np.ndarray, taste: Taste, weight: np.ndarray) -> tuple[np.ndarray, int]:
    """Distinct pairs, ``k[u]`` per user, as sorted ``pair << tau_bits | tau ^ _scramble(pair)`` keys.

    ``pair = user * n_movies + item``. Packing the quantised time position into the key's low bits lets one
    int64 sort carry it along; scrambling it per pair makes the duplicate that survives a random one, not
    the earliest (which would pull popular movies towards the start of users' windows).
    """
    n_movies = weight.size
    tau_bits = min(_TAU_BITS, 62 - int(k.size * n_movies).bit_length())
    if tau_bits < 8:
        raise ValueError(f"{k.size} users x {n_movies} movies is too large a grid to sample")
    sampler = _Sampler.build(taste, weight)
    chunks: list[np.ndarray] = []
    need = k.copy()
    users = np.arange(k.size, dtype=np.int64)
    for round_ in range(64):
        todo = need > 0
        if not todo.any():
            break
        u = np.repeat(users[todo], need[todo])
        parts = []
        for lo in range(0, u.size, _CHUNK):
            uc = u[lo : lo + _CHUNK]
            if round_ < _TASTE_ROUNDS + _POPULAR_ROUNDS:
                share = taste.popularity_share if round_ < _TASTE_ROUNDS else 1.0
                item, tau = _draw(rng, uc, taste, sampler, tau_bits, share)
            else:
                item = rng.integers(0, n_movies, uc.size)
                tau = rng.integers(0, 1 << tau_bits, uc.size)
            pair = uc * n_movies + item
            parts.append((pair << tau_bits) | (tau ^ _scramble(pair, tau_bits)))
        del u
        cand = _sorted_unique(np.concatenate(parts), tau_bits)
        del parts
        for chunk in chunks:  # drop pairs already accepted
            pos = np.minimum(np.searchsorted(chunk, (cand >> tau_bits) << tau_bits), chunk.size - 1)
            cand = cand[(chunk[pos] >> tau_bits) != (cand >> tau_bits)]
        if cand.size:
            chunks.append(cand)
        need -= np.bincount((cand >> tau_bits) // n_movies, minlength=k.size)
    else:
        raise RuntimeError("pair sampling did not converge")
    keys = np.concatenate(chunks)
    del chunks
    keys.sort(kind="stable")  # timsort merges the sorted chunks in near-linear time
    return keys, tau_bits


def _genres(rng: np.random.Generator, taste: Taste) -> tuple[list[str], np.ndarray]:
    """Each movie's genre string and genre bitmask (bit j: GENRES' j-th); topics boost their signature genres."""
    n_movies = taste.movie_topic.size
    names = np.array(list(GENRES))
    logw = np.log(np.array(list(GENRES.values())) / sum(GENRES.values()))
    boost = np.zeros((max(taste.topics, 1), names.size))
    if taste.topics:
        signature = np.argsort(-(logw[None, :] + rng.gumbel(size=boost.shape)), axis=1)[:, :_SIGNATURE_GENRES]
        np.put_along_axis(boost, signature, math.log(_SIGNATURE_BOOST), axis=1)
    gumbel = logw[None, :] + boost[taste.movie_topic] + rng.gumbel(size=(n_movies, names.size))
    order = np.argsort(-gumbel, axis=1)
    n_genres = rng.choice(np.arange(1, 6), n_movies, p=[0.40, 0.33, 0.18, 0.07, 0.02])
    no_genre = rng.random(n_movies) < 0.02
    picked = np.arange(names.size)[None, :] < np.where(no_genre, 0, n_genres)[:, None]
    bits = np.zeros(n_movies, dtype=np.int32)
    np.bitwise_or.at(bits, np.nonzero(picked)[0], (1 << order[picked]).astype(np.int32))
    genres = [
        "|".join(sorted(names[order[i, : n_genres[i]]])) if not ng else "(no genres listed)"
        for i, ng in enumerate(no_genre.tolist())
    ]
    return genres, bits


def _affinity(taste: Taste, user: np.ndarray, item: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """float32 per rating: the weight of the movie's topic in the user's mixture at the rating's tau."""
    topic = taste.movie_topic[item]
    slots, weights = taste.slots.reshape(-1, SLOTS), taste.weights.reshape(-1, SLOTS)
    out = np.zeros(user.size, dtype=np.float32)
    for end in (0, 1):
        row = 2 * user + end
        part = np.zeros(user.size, dtype=np.float32)
        for s in range(SLOTS):  # contiguous columns: 1-D gathers are several times faster than 2-D ones
            hit = np.ascontiguousarray(slots[:, s])[row] == topic
            part += np.where(hit, np.ascontiguousarray(weights[:, s])[row], np.float32(0.0))
        out += (tau if end else 1.0 - tau).astype(np.float32) * part
    return out


def generate(
    n_ratings: int,
    *,
    seed: int = 0,
    users: int | None = None,
    movies: int | None = None,
    topics: int = DEFAULT_TOPICS,
) -> SynthData:
    """Build a MovieLens-shaped dataset with planted taste in memory (deterministic for a given ``seed``)."""
    if n_ratings < 1:
        raise ValueError("need at least one rating")
    if topics < 0:
        raise ValueError(f"topics must be >= 0 (0: no planted taste), got {topics}")
    n_users, n_movies = scale(n_ratings, users, movies)
    cap = max(1, n_movies // 2)
    if n_users > n_ratings or n_users * cap < n_ratings:
        raise ValueError(
            f"{n_ratings} ratings do not fit {n_users} users x {n_movies} movies "
            f"(each user rates between 1 and {cap} movies); change --users/--movies"
        )
    if topics > n_movies:
        raise ValueError(f"{topics} topics for {n_movies} movies: each topic needs movies; use --topics <= {n_movies}")
    rng = np.random.default_rng(seed)
    k = _activity(rng, n_ratings, n_users, cap)
    weight = np.empty(n_movies)
    weight[rng.permutation(n_movies)] = (np.arange(n_movies) + 30.0) ** -1.0  # rank -> item
    taste = _taste(rng, topics, n_users, weight)
    keys, tau_bits = _pairs(rng, k, taste, weight)
    pair = keys >> tau_bits
    user = pair // n_movies
    item = pair % n_movies
    tau = (keys & ((1 << tau_bits) - 1)) ^ _scramble(pair, tau_bits)
    del keys, pair
    tau = (tau + rng.random(n_ratings)) / (1 << tau_bits)  # jitter within the bucket

    # Movie catalogue: sparse ids like MovieLens, years skewed recent, 1-5 genres following the topic.
    movie_ids = np.sort(rng.choice(int(n_movies * 3.34) + 1, n_movies, replace=False)) + 1
    years = np.clip(2023 - np.floor(rng.exponential(18.0, n_movies)), 1902, 2023).astype(np.int64)
    genres, genre_bits = _genres(rng, taste)
    adj = rng.integers(0, len(_ADJ), n_movies)
    noun = rng.integers(0, len(_NOUN), n_movies)
    suffix = rng.integers(0, len(_SUFFIX), n_movies)
    titles = [f"{_ADJ[a]} {_NOUN[b]}{_SUFFIX[c]} ({y})" for a, b, c, y in zip(adj, noun, suffix, years, strict=True)]

    # Ratings: item quality + user bias + taste + noise, mapped onto ML-32M's marginal distribution.
    score = rng.normal(0, 0.6, n_movies)[item] + rng.normal(0, 0.5, n_users)[user]
    score += rng.normal(0, 0.9, n_ratings)
    if topics:
        score += _AFFINITY * _affinity(taste, user, item, tau)
        bits = genre_bits[item]
        score += _GENRE_TASTE * ((bits >> taste.liked[user]) & 1)
        score -= _GENRE_TASTE * ((bits >> taste.disliked[user]) & 1)
        del bits
    sample = score[rng.integers(0, n_ratings, min(n_ratings, 1_000_000))]
    cuts = np.quantile(sample, np.cumsum(RATING_SHARES / RATING_SHARES.sum())[:-1])
    rating = RATING_VALUES[np.searchsorted(cuts, score)]
    del score

    # Timestamps: each user is active in one window (median ~3 weeks, long tail of years), at the pair's tau.
    start = rng.integers(_T0, _T1, n_users)
    length = np.minimum(rng.lognormal(np.log(20 * 86400), 2.0, n_users), _T1 - start).astype(np.int64) + 1
    ts = start[user] + (tau * length[user]).astype(np.int64)
    del tau

    ratings = pl.DataFrame(
        {"userId": user + 1, "movieId": movie_ids[item], "rating": rating, "timestamp": ts},
        schema={"userId": pl.Int64, "movieId": pl.Int64, "rating": pl.Float32, "timestamp": pl.Int64},
    )
    movies_df = pl.DataFrame({"movieId": movie_ids, "title": titles, "genres": genres})
    n_tags = max(1, n_ratings // 25)
    rows = rng.integers(0, n_ratings, n_tags)
    tag_rank = np.minimum(rng.zipf(1.6, n_tags) - 1, 5000)
    tag_words = np.array([*_TAGS, *(f"keyword {i}" for i in range(5001))])
    tag_idx = np.where(tag_rank < len(_TAGS), tag_rank, len(_TAGS) + tag_rank)
    tags = pl.DataFrame(
        {
            "userId": user[rows] + 1,
            "movieId": movie_ids[item[rows]],
            "tag": tag_words[np.minimum(tag_idx, tag_words.size - 1)],
            "timestamp": ts[rows] + rng.integers(0, 3600, n_tags),
        }
    ).unique(subset=["userId", "movieId", "tag"], keep="first", maintain_order=True)
    links = pl.DataFrame(
        {
            "movieId": movie_ids,
            "imdbId": [f"{i:07d}" for i in rng.integers(1, 9_999_999, n_movies)],
            "tmdbId": rng.integers(1, 999_999, n_movies),
        }
    )
    return SynthData(ratings=ratings, movies=movies_df, tags=tags, links=links, taste=taste)


def write_dataset(data: SynthData, out: Path) -> dict[str, int]:
    """Write the four CSVs into ``out`` (created); return row counts per file."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"ratings.csv": data.ratings, "movies.csv": data.movies, "tags.csv": data.tags, "links.csv": data.links}
    for name, df in files.items():
        tmp = out / f".{name}.tmp"
        df.write_csv(tmp)
        tmp.replace(out / name)
    return {name: df.height for name, df in files.items()}
