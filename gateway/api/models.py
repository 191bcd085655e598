"""Request and response shapes: every route declares one of these as its output."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.decisions import Source
from gateway.rules.document import Segment
from schemas import movies, ratings

__all__ = [
    "ArmPublic",
    "ArmsPublic",
    "ComponentHealth",
    "FreshnessReport",
    "Health",
    "LagReport",
    "MovieAccepted",
    "MovieCreate",
    "MovieDetail",
    "PartitionLagPublic",
    "ProbePublic",
    "ProfileRating",
    "RatingAccepted",
    "RatingCreate",
    "RecommendationList",
    "RecommendedMovie",
    "ReportList",
    "RulesPublic",
    "SimilarList",
    "SimilarMovie",
    "Stats",
    "UserList",
    "UserProfile",
]


class RecommendedMovie(BaseModel):
    movie_id: int
    title: str
    genres: list[str]
    year: int | None
    score: float = Field(description="Relevance after soft preferences, in the user's score standard deviations.")
    reasons: list[str]


class RecommendationList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": 1, "k": 2, "source": "personalised", "degraded": False, "cached": False,
                    "segment": "heavy", "variant": "control", "rule_set": "default", "rules_version": "v1-3f2a9c1b",
                    "state_version": 232, "model_version": "m0001", "exploration": "none",
                    "items": [
                        {"movie_id": 1221, "title": "Godfather: Part II, The (1974)", "genres": ["Crime", "Drama"],
                         "year": 1974, "score": 3.1, "reasons": ["because you rated Heat (1995) 5/5"]},
                        {"movie_id": 2571, "title": "Matrix, The (1999)", "genres": ["Action", "Sci-Fi"],
                         "year": 1999, "score": 2.7, "reasons": ["because you rated Heat (1995) 5/5",
                                                                  "diversity pick"]},
                    ],
                }
            ]
        }
    )  # fmt: skip

    user_id: int
    k: int
    items: list[RecommendedMovie]
    source: Source
    degraded: bool = Field(description="True when Redis was unreachable and the list is store popularity.")
    cached: bool
    segment: Segment
    variant: str = Field(description="A/B arm, by a deterministic hash of the user id.")
    rule_set: str
    rules_version: str
    state_version: int = Field(description="The user's state version in Redis (0: no state, or degraded).")
    model_version: str
    exploration: Literal["none", "thompson", "ucb"] = Field(
        "none",
        description="How the list was ranked: `none` by the posterior mean (exploit), `thompson` by a posterior "
        "draw, `ucb` by an upper confidence bound (the rule set's `exploration`; personalised lists only).",
    )


class ProfileRating(BaseModel):
    movie_id: int
    title: str
    rating: float
    ts_ms: int


class UserProfile(BaseModel):
    user_id: int
    state_version: int
    segment: Segment
    n_ratings: int
    mean_rating: float | None
    rating_std: float | None
    first_ms: int | None
    last_ms: int | None
    top_genres: list[tuple[str, int]] = Field(description="Genres of the user's liked (>= 4 stars) movies, counted.")
    recent: list[ProfileRating]
    latent_uncertainty: float | None = Field(
        description="Mean posterior variance exp(logvar) over latent dimensions (high: little evidence yet)."
    )
    model_version: str


class MovieDetail(BaseModel):
    movie_id: int
    title: str
    genres: list[str]
    year: int | None
    n_ratings: int = Field(description="Ratings in the bootstrap history.")
    mean_rating: float | None
    live_n: int | None = Field(None, description="Ratings applied by the stream worker (None when unknown).")
    live_mean: float | None = None
    in_model: bool = Field(description="False for movies scored through side features only.")


class SimilarMovie(BaseModel):
    movie_id: int
    title: str
    genres: list[str]
    similarity: float


class SimilarList(BaseModel):
    movie_id: int
    items: list[SimilarMovie]
    model_version: str


class RatingCreate(BaseModel):
    """A rating to produce. The bounds are the rating contract's constants (schemas/ratings.py); the rules
    that need settings, the clock or the catalogue (reserved probe ids, the time window, the movie) are
    checked by the same contract in the route, so a 202 means the worker applies the event."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"user_id": 1, "movie_id": 6, "rating": 4.5}]}
    )

    user_id: int = Field(
        ge=ratings.MIN_ID, le=ratings.MAX_ID, description="Ids from `probe_user_base` up are reserved for probes."
    )
    movie_id: int = Field(
        ge=ratings.MIN_ID, le=ratings.MAX_ID, description="In the model, or announced by a MovieEvent."
    )
    rating: float = Field(
        ge=ratings.MIN_RATING, le=ratings.MAX_RATING, multiple_of=ratings.RATING_STEP,
        description=f"Stars, {ratings.MIN_RATING} to {ratings.MAX_RATING} in steps of {ratings.RATING_STEP}.",
    )  # fmt: skip
    event_ts: int | None = Field(
        None, ge=0, le=ratings.MAX_ID,
        description="Epoch ms of the rating; defaults to the time of the request. Must lie within "
        "`event_min_ts_ms` .. now + `event_max_future_ms` (the worker's window).",
    )  # fmt: skip


class RatingAccepted(BaseModel):
    event_id: str
    user_id: int
    movie_id: int
    rating: float
    topic: str
    partition: int
    offset: int


class MovieCreate(BaseModel):
    """A movie to announce (a MovieEvent). The bounds are the announcement contract's (schemas/movies.py); the
    route runs the whole contract (genre names, ``|``, blank tags) and the catalogue check."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"movie_id": 990001, "title": "Paper Boats (2026)", "genres": ["Animation", "Children"],
                          "year": 2026, "tags": ["pixar"]}]
        },
    )  # fmt: skip

    movie_id: int = Field(
        ge=ratings.MIN_ID, le=ratings.MAX_ID, description="Not a movie the catalogue serves from trained rows (409)."
    )
    title: str = Field(min_length=1, description="Display title, e.g. 'Heat (1995)'; not blank.")
    genres: list[str] = Field(
        default_factory=list, description="MovieLens genre names, spelt as MovieLens does: " + ", ".join(movies.GENRES)
    )
    year: int | None = Field(None, ge=movies.MIN_YEAR, le=movies.MAX_YEAR, description="Release year.")
    tags: list[str] = Field(default_factory=list, description="Free-text tags (the model knows the frequent ones).")


class MovieAccepted(BaseModel):
    movie_id: int
    title: str
    genres: list[str]
    year: int | None
    tags: list[str]
    topic: str
    partition: int
    offset: int
    replaces: bool = Field(
        description="True when this gateway already serves the movie from an earlier announcement: its "
        "`rs:movie` record is replaced and the gateway's next catalogue scan serves the new metadata and row "
        "(docs/events.md)."
    )
    tags_without_feature: list[str] = Field(
        description="Tags the served model has no `tag=...` feature for: stored, but they change no score."
    )


class ComponentHealth(BaseModel):
    ok: bool
    detail: str


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    broker: ComponentHealth
    redis: ComponentHealth
    model: ComponentHealth
    worker: ComponentHealth
    rules: ComponentHealth
    events_lost: int | None = Field(
        None,
        description="Records of a reset partition's old log that the worker never read, counted when the log was "
        "found reset (a memory-only broker restarted, a topic recreated); `rs:stats` `events_lost`. An upper "
        "bound of the loss: the producers send again what the broker acknowledged in their resend window. "
        "None: Redis unreachable.",
    )
    log_resets: int | None = Field(None, description="Partition logs the worker found replaced (`rs:stats`).")
    unarchived: int | None = Field(
        None,
        description="Records the broker held beyond the archive when the archiver last looked (`rs:archive`): "
        "what a memory-only broker that dies would take with it, but for the producers' resend window. "
        "None: no archiver status, or Redis unreachable.",
    )
    challenger: dict[str, Any] | None = Field(
        None,
        description="The online model's call for a challenger (`rs:challenger`): `requested` drift alarms, "
        "`answered` by the latest `reelstream retrain`, `pending` (unanswered: a retrain is due), "
        "`last_alarm_ms` (event time), `reason`, `answer`. Informational: it never makes the status degraded. "
        "None: Redis unreachable.",
    )
    hit_rate: dict[str, Any] | None = Field(
        None,
        description="The live hit-rate watch (monitoring/hit_rate.py): `fell`, `reason`, the latest closed serving "
        "`day`, `baseline_rate` and `recent_rate` with their list counts, the 95% interval `low`..`high` of "
        "their difference. A fall asks for a challenger when `reelstream retrain` next runs. None: Redis "
        "unreachable.",
    )


class Stats(BaseModel):
    requests: list[dict[str, Any]]
    latency_ms: dict[str, dict[str, float]]
    cache: dict[str, float]
    scoring: dict[str, float] = Field(
        description="Full-catalogue scoring passes: `batches`, `scored` users, `mean_batch` (users per pass)."
    )
    recommendations_by_variant: dict[str, int]
    explored_by_variant: dict[str, int] = Field(
        default_factory=dict, description="Of those, lists an exploration arm ranked (`exploration` != none)."
    )
    events_applied: int | None
    worker_stats: dict[str, str]
    impressions: dict[str, int] | None = Field(
        None,
        description="Served lists recorded as ImpressionEvents: `recorded`, `sent`, dropped by reason "
        "(`queue_full`, `broker_down`, `shutdown`), `queued`, `in_flight`; null when recording is off.",
    )
    item_prior: dict[str, Any] = Field(
        default_factory=dict,
        description="The item prior served: `source` (none, primed, redis) and `events`, the rating events its "
        "vector counts (`rs:items:prior:clock`; 0 unless read from Redis).",
    )


class RulesPublic(BaseModel):
    name: str
    version: int
    rules_version: str
    reload_error: str | None
    document: dict[str, Any]


class UserList(BaseModel):
    users: list[int] = Field(description="User ids with state in Redis, sorted (a bounded search).")


class ArmPublic(BaseModel):
    name: str
    weight: float = Field(description="Relative weight of the arm in the A/B split.")
    exploration: dict[str, str] = Field(description="Segment -> exploration kind of the arm's rule set.")


class ArmsPublic(BaseModel):
    """What the dashboard's rule-set switcher and arms panel show (public: no other rule contents)."""

    rule_set: str
    rules_version: str
    variants: list[str]
    segments: list[str]
    arms: list[ArmPublic] = Field(default_factory=list)


class PartitionLagPublic(BaseModel):
    topic: str
    partition: int
    committed: int = Field(description="The group's committed offset (-1: none yet).")
    end: int = Field(description="Log-end offset (a fetch response's high watermark).")
    lag: int
    lag_seconds: float
    rate: float | None = Field(description="Messages consumed per second over the window; null until two samples.")
    verdict: Literal["OK", "WARN", "STALL", "STOP", "REWIND", "RESET"]
    reset_at_ms: int | None = Field(None, description="The latest log reset the worker recorded here (epoch ms).")
    reset_lost: int = Field(0, description="Events of the old log that reset left unapplied (estimated).")


class LagReport(BaseModel):
    group: str
    at: float = Field(description="When the sample was taken (epoch s).")
    age_s: float = Field(description="Seconds since that sample.")
    verdict: Literal["OK", "WARN", "STALL", "STOP", "REWIND", "RESET"]
    total_lag: int
    partitions: list[PartitionLagPublic]
    samples: int = Field(description="Samples taken since the gateway started.")
    error: str | None = Field(description="The last sampling failure since that sample, if any.")


class ProbePublic(BaseModel):
    at: float
    user_id: int
    movie_id: int
    partition: int
    offset: int
    produce_s: float
    seconds: float = Field(description="Marker produced -> its effect readable in Redis.")


class FreshnessReport(BaseModel):
    interval_s: float
    probes: int = Field(description="Probes kept (the latest ones).")
    lost: int = Field(description="Probes whose effect never reached Redis in time, since start.")
    percentiles_ms: dict[str, float]
    recent: list[ProbePublic]
    workers: dict[str, dict[str, int]] = Field(
        description="Each live worker's produce-to-commit window (ms): n, p50, p99, max (rs:worker:{name}:freshness)."
    )
    error: str | None


class ReportList(BaseModel):
    reports: list[str] = Field(description="Report names (GET /reports/{name}).")


class ArmReport(BaseModel):
    variant: str
    impressions: int
    users: int
    hit_lists_20: int = Field(description="Lists with a later rating of one of their top 20 inside the window.")
    hit_rate: float = Field(description="hit_lists_20 / impressions.")
    hits_5_per_list: float
    hits_10_per_list: float
    hits_20_per_list: float
    ndcg_20: float = Field(description="DCG@20 of the hits per list (binary relevance).")
    mean_hit_rating: float | None
    coverage: float | None = Field(description="Distinct movies served / the catalogue.")
    novelty: float | None = Field(
        None,
        description="Mean self-information of the listed movies, -log2(share of HISTORY users who rated "
        "them), over the lists recorded with one (reelstream evaluate's novelty); null: none yet.",
    )
    diff: float | None = Field(description="hit_rate - the control's (null for the control).")
    low: float | None = Field(description="95% two-proportion interval of diff (docs/experiments.md).")
    high: float | None
    relative: float | None
    verdict: Literal["control", "ahead", "behind", "not yet decided"]


class ExperimentsReport(BaseModel):
    control: str = Field(description="The rules' first arm.")
    metric: str
    window_s: float = Field(description="A rating counts for a list this long after serving, at most (event time).")
    arms: list[ArmReport]
