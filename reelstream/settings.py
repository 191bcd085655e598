"""Typed settings for every reelstream process: the one place each fact lives.

Every command, the Faust worker and the gateway read the same :class:`Settings`,
built from the environment (or a ``.env`` file in the working folder). Topic
names, ports and folders are fields here and nowhere else.

``KAFKA_BOOTSTRAP`` and ``REDIS_URL`` are read without a prefix (they are what
docker-compose and most tooling call them); every other field is read as
``REELSTREAM_<FIELD>``, e.g. ``REELSTREAM_TOPIC_PARTITIONS=16``.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import stat
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, PrivateAttr
from pydantic_settings import BaseSettings, SettingsConfigDict

from reelstream.errors import ConfigError

#: The repository root (the folder holding ``pyproject.toml``).
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    """All configuration, validated once at start-up."""

    model_config = SettingsConfigDict(env_prefix="REELSTREAM_", env_file=".env", extra="ignore", populate_by_name=True)
    #: The token read from (or written to) a token file, with that file's path: read once per process.
    _admin_secret: tuple[Path, str] | None = PrivateAttr(None)

    # --- infrastructure -------------------------------------------------------------
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", validation_alias=AliasChoices("KAFKA_BOOTSTRAP", "REELSTREAM_KAFKA_BOOTSTRAP")
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", validation_alias=AliasChoices("REDIS_URL", "REELSTREAM_REDIS_URL")
    )
    #: Socket and connect timeout (seconds) of every Redis client (``reelstream.redis_client``): no call
    #: waits forever on a Redis that went away. The gateway's request path uses ``gateway_redis_timeout``.
    redis_timeout_s: float = Field(5.0, gt=0)
    #: The Redis server's listpack limits (``reelstream/shell/local_services.py`` starts redis-server with them,
    #: docker-compose.kafka.yml passes the same, tests/test_compose.py checks). Under both a hash is one
    #: compact listpack (~14 bytes a packed ``rated`` entry); over either Redis converts it, for good, to a
    #: hash table (~80 bytes an entry). ``_value`` (bytes): Redis's default, 64, converts every
    #: ``rs:user:{uid}`` (its float64 ``pre`` is 8 bytes a hidden unit, 2 KiB at the default 256); 4096
    #: keeps it compact up to 512 units, ~900 bytes a user less. ``_entries``: Redis's own default, pinned:
    #: a user's ``rated`` hash has a field per movie rated, and 512 leaves ~37% of the ratings (6% of the
    #: users) in hash tables. Not higher: a listpack is scanned linearly (and filled quadratically) and the
    #: worker reads and writes a field per event: the server's HGET of the last of 512 fields ~27 us, of
    #: 2048 ~86 us, in a hash table ~0.4 us (under load; ``bench/redis_memory.py``, docs/redis-keys.md).
    redis_hash_max_listpack_entries: int = Field(512, ge=1)
    redis_hash_max_listpack_value: int = Field(4096, ge=1)

    # --- folders --------------------------------------------------------------------
    #: The dataset the bootstrap reads by default (the bundled ml-latest-small).
    data_path: Path = PROJECT_ROOT / "data" / "ml-latest-small"
    #: Everything the system writes: feature store, models, reports, pids and logs.
    var_dir: Path = PROJECT_ROOT / "var"

    # --- topics -----------------------------------------------------------------
    topic_ratings: str = "reelstream.ratings"
    topic_movies: str = "reelstream.movies"
    topic_dead_letters: str = "reelstream.dead-letters"
    #: Every served list (ImpressionEvent), keyed by user like the ratings.
    topic_impressions: str = "reelstream.impressions"
    topic_partitions: int = Field(8, ge=1)
    topic_replication: int = Field(1, ge=1)

    # --- worker -------------------------------------------------------------------
    app_id: str = "reelstream"
    worker_web_port: int = 6066
    #: Faust group join waits half of this on a new group (docs/infra.md, defect 4).
    broker_session_timeout: float = 6.0
    broker_heartbeat_interval: float = 1.0
    #: This worker's name (heartbeat key, logs); empty: ``{hostname}-{pid}``.
    worker_name: str = ""
    #: Most records per batch (one Redis script each). Batches are adaptive: the worker
    #: takes whatever is buffered, up to this, and never waits for a batch to fill.
    stream_batch_max: int = Field(1000, ge=1, le=10000)
    #: Most records one poll takes (``getmany``). A poll larger than ``stream_batch_max`` is applied in
    #: batch-sized parts whose planning overlaps the previous part's Redis commit (streams/apply.py).
    stream_poll_max: int = Field(4000, ge=1, le=50000)
    #: aiokafka fetch wait of the worker's consumer: the longest the broker holds an
    #: empty fetch. Lower is fresher at low rates but costs broker CPU (docs/infra.md, docs/events.md).
    stream_fetch_max_wait_ms: int = Field(100, ge=1)
    #: Kafka offsets are committed at most this often (seconds) and on revoke/stop; the
    #: offset fence in Redis, not this commit, is what keeps effects exactly-once.
    stream_commit_interval_s: float = Field(1.0, gt=0)
    #: The worker consumer's metadata refresh period (ms): how soon it sees topics created again after a
    #: broker restart (aiokafka's default, 5 minutes, would leave it idle that long).
    stream_metadata_max_age_ms: int = Field(5000, ge=100)
    #: Trending score half-life in event time (seconds).
    trending_half_life_s: float = Field(7 * 24 * 3600.0, gt=0)
    #: A rating of a served movie counts as a hit of the list when it comes this long after serving, at most
    #: (event time, seconds; docs/experiments.md).
    attribution_window_s: float = Field(7 * 24 * 3600.0, gt=0)
    #: The live hit-rate watch (monitoring/hit_rate.py): the latest this many closed serving days against the
    #: closed days before them; a relative fall past ``hit_rate_fall`` (and significant) asks for a challenger.
    hit_rate_recent_days: int = Field(3, ge=1)
    hit_rate_fall: float = Field(0.2, gt=0, lt=1)
    #: Lists each side needs before the watch judges.
    hit_rate_min_lists: int = Field(200, ge=1)
    #: Event times before this (epoch ms) are refused as bad timestamps (1990-01-01).
    event_min_ts_ms: int = 631_152_000_000
    #: Event times more than this beyond the worker's clock are refused (ms).
    event_max_future_ms: int = Field(24 * 3600 * 1000, ge=0)
    #: Producers (POST /ratings, ``rate``, ``replay``) send again what the broker acknowledged in this many
    #: seconds before their connection to it broke (``streams/resend.py``): a restarted memory-only broker
    #: then loses nothing the worker had not read. 0: never.
    resend_window_s: float = Field(30.0, ge=0)
    #: The worker saves its online model (river, with its ADWIN detector) to ``var/online/{worker}.pkl`` this
    #: often (seconds) and when it stops, and resumes from it on start. 0: never saved, a restart starts cold.
    online_checkpoint_s: float = Field(60.0, ge=0)
    #: Worker heartbeat period and time-to-live of its Redis key (seconds).
    worker_heartbeat_s: float = Field(1.0, gt=0)
    worker_heartbeat_ttl_s: int = Field(10, ge=1)
    #: While Redis or the broker is down the worker pauses and retries with capped exponential backoff:
    #: the first wait, doubled after each failure up to the cap (seconds).
    worker_retry_initial_s: float = Field(0.2, gt=0)
    worker_retry_max_s: float = Field(5.0, gt=0)
    #: The worker rebuilds a missing, stale or partial Redis (``streams.rebuild``) before it consumes and
    #: after every Redis outage. Off: it folds the stream into whatever Redis holds (tests whose reference
    #: is the stream alone).
    worker_rebuild: bool = True
    #: The pseudo-topic under which ``reelstream seed`` applies HISTORY (partition 0, offset = row index in
    #: the store's HISTORY order): its offsets in ``rs:offsets:{seed_topic}`` fence the seed like a real
    #: topic's. Never created on the broker.
    seed_topic: str = "reelstream.history"
    #: HISTORY rows per seed batch (one Lua script each).
    seed_batch: int = Field(5000, ge=1, le=100_000)
    #: HISTORY rows per user batch of the bulk seed (whole users; one pipeline each, streams/bulk_seed.py).
    seed_bulk_rows: int = Field(200_000, ge=1)
    #: Users re-encoded per compare-and-set script during a hot swap (streams/swap.py).
    swap_batch: int = Field(500, ge=1, le=100_000)
    #: Address the worker's web server (``/metrics``, ``/online``) binds; ``0.0.0.0`` in containers.
    worker_web_bind: str = "127.0.0.1"

    # --- supervisor (``reelstream up``; reelstream/shell/live_system.py) --------------------------
    #: A crashed child waits this long before its restart, doubled for each earlier crash of it within
    #: ``supervisor_crash_window_s``, up to ``supervisor_backoff_max_s`` (seconds).
    supervisor_backoff_s: float = Field(0.5, gt=0)
    supervisor_backoff_max_s: float = Field(30.0, gt=0)
    #: This many crashes of one child within ``supervisor_crash_window_s`` seconds is a crash loop:
    #: ``up`` stops the whole system with a message naming the child and its log.
    supervisor_crash_limit: int = Field(5, ge=1)
    supervisor_crash_window_s: float = Field(60.0, gt=0)
    #: Seconds between two checks of the supervised processes.
    supervisor_poll_s: float = Field(0.5, gt=0)

    # --- archive and rebuild (docs/durability.md) -----------------------------------
    #: A partition's buffered records become one Parquet segment of the archive once they hold this
    #: many value bytes, or once the oldest of them has waited ``archive_segment_age_s`` seconds.
    archive_segment_bytes: int = Field(4 * 1024 * 1024, ge=1)
    archive_segment_age_s: float = Field(2.0, gt=0)
    #: Seconds between the archiver's status writes (``rs:archive``) and progress log lines.
    archive_status_interval_s: float = Field(1.0, gt=0)
    #: The archiver's retry backoff after a broker, Redis or disk error doubles from 0.5 s up to this.
    archive_backoff_max_s: float = Field(10.0, gt=0)
    #: A rebuild's Redis lock expires this long after its holder's last batch (a killed rebuilder's
    #: lock frees itself; a waiting worker then takes over and resumes it).
    rebuild_lock_ttl_s: int = Field(30, ge=2)
    #: Archived records per rebuild batch (one fenced Lua script each).
    rebuild_batch: int = Field(5000, ge=1, le=100_000)

    # --- gateway --------------------------------------------------------------------
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    #: Bearer token of the admin routes (``GET``/``PUT /rules``). Unset: one is generated per installation
    #: into ``admin_token_path`` (mode 0600) and reused (:meth:`Settings.admin_secret`). There is no default
    #: value: a published default protects nothing. An explicit one must be long and random (see
    #: :func:`admin_token_problem`), and a gateway binding a non-loopback address requires an explicit one.
    admin_token: str | None = Field(None, repr=False)
    #: The business-rules YAML the gateway serves and hot-reloads (seeded from the bundled default).
    gateway_rules_path: Path | None = None
    #: Candidate pool taken from the full-catalogue scores before rules and MMR run.
    gateway_candidate_pool: int = Field(400, ge=20, le=5000)
    #: How personalised candidates are found: ``index`` (k-means lists over the decoder rows, then exact
    #: scores for what they return; gateway/retrieval.py) or ``exact`` (every row scored).
    gateway_retrieval: Literal["index", "exact"] = "index"
    #: Catalogues smaller than this are always scored exactly (reading every row is cheap there).
    gateway_index_min_items: int = Field(20_000, ge=0)
    #: Share of the index's lists read per request (recall against exact: bench/results/retrieval.json).
    gateway_index_probe: float = Field(0.125, gt=0, le=1)
    #: Candidates the index returns beyond the pool and the user's avoided items.
    gateway_index_margin: int = Field(200, ge=0)
    #: Cached responses kept in the gateway's in-process LRU.
    gateway_cache_size: int = Field(20_000, ge=0)
    #: Redis socket timeout (seconds) on the request path; beyond it the gateway degrades.
    gateway_redis_timeout: float = Field(0.25, gt=0)
    #: Most concurrent requests scored in one shared pass over the item decoder (1: no batching;
    #: gateway/batching.py).
    gateway_batch_max: int = Field(32, ge=1, le=1024)
    #: A worker heartbeat older than this (ms) counts as dead in /health.
    gateway_worker_stale_ms: int = Field(15_000, ge=1)
    #: Seconds a client is told to wait (Retry-After) when the broker is unreachable.
    gateway_retry_after_s: int = Field(5, ge=1)
    #: Seconds between re-reads of the worker's ``rs:items:prior`` (the model's item prior; gateway/prior.py).
    gateway_prior_refresh_s: float = Field(2.0, gt=0)
    #: Seconds between scans of ``rs:movie:*`` for movies a MovieEvent announced (they join the catalogue).
    gateway_movie_refresh_s: float = Field(30.0, gt=0)
    #: Seconds between re-reads of ``rs:model`` (the serving model; a hot swap, streams/swap.py).
    gateway_model_refresh_s: float = Field(1.0, gt=0)
    #: Largest request body (bytes) the gateway reads; a larger one gets 413 before it is buffered
    #: (the largest real body, a rules document, is a few KiB).
    gateway_max_body_bytes: int = Field(1_048_576, ge=1024)
    #: Record every served list as an ImpressionEvent (gateway/impressions.py); off: none is produced.
    gateway_impressions: bool = True
    #: Lists waiting to be produced; a list that finds the queue full is dropped and counted.
    gateway_impression_queue: int = Field(10_000, ge=1)
    #: Largest batch of impressions one background pass hands to the producer.
    gateway_impression_batch: int = Field(500, ge=1)

    # --- monitoring (the gateway's background samplers; docs/monitoring.md) ----------
    #: Seconds between consumer-lag samples behind ``GET /lag`` and the lag gauges (0: off).
    gateway_lag_interval_s: float = Field(2.0, ge=0)
    #: Seconds between end-to-end freshness probes (0: off).
    probe_interval_s: float = Field(5.0, ge=0)
    #: A probe whose effect is not in Redis after this many seconds counts as lost.
    probe_timeout_s: float = Field(30.0, gt=0)
    #: User ids from here on are reserved for freshness probes (real ids stay below it).
    probe_user_base: int = Field(2_000_000_000, ge=1)
    #: Probe users ``probe_user_base .. + probe_users - 1``, used in turn (they spread over partitions).
    probe_users: int = Field(16, ge=1, le=1024)

    # --- derived folders ------------------------------------------------------------
    @property
    def store_dir(self) -> Path:
        """Versioned feature-store folders (``v0001``, ``v0002``...) live here."""
        return self.var_dir / "store"

    @property
    def models_dir(self) -> Path:
        """Versioned model folders live here."""
        return self.var_dir / "models"

    @property
    def online_dir(self) -> Path:
        """Where workers checkpoint their online model (one file per worker name)."""
        return self.var_dir / "online"

    @property
    def reports_dir(self) -> Path:
        """Data-quality and evaluation reports."""
        return self.var_dir / "reports"

    @property
    def run_dir(self) -> Path:
        """Pid files, logs and the local brokers' state."""
        return self.var_dir / "run"

    @property
    def rules_path(self) -> Path:
        """The gateway's live rules file (``gateway_rules_path`` or ``var/gateway/rules.yaml``)."""
        return self.gateway_rules_path or self.var_dir / "gateway" / "rules.yaml"

    @property
    def archive_dir(self) -> Path:
        """``reelstream archive``'s Parquet segments: ``{topic}/p{partition}/e{epoch}-{first}-{last}.parquet``."""
        return self.store_dir / "archive"

    @property
    def archive_group(self) -> str:
        """The archiver's consumer group (its commits are what ``reelstream lag`` shows for it)."""
        return f"{self.app_id}-archive"

    @property
    def admin_token_path(self) -> Path:
        """The generated admin token (mode 0600), used when ``REELSTREAM_ADMIN_TOKEN`` is not set."""
        return self.var_dir / "admin_token"

    @property
    def admin_token_explicit(self) -> bool:
        """True when the admin token was set (environment, ``.env`` or a constructor argument)."""
        return self.admin_token is not None

    def admin_secret(self, bind_host: str | None = None) -> str:
        """The admin bearer token: the explicit one, else ``admin_token_path`` (generated on first use).

        Raises :class:`~reelstream.errors.ConfigError` for a weak explicit token, an unusable token file,
        and, given ``bind_host``, for a non-loopback bind without an explicit token: the generated file
        is convenient on one machine, but a gateway reachable from elsewhere needs a token its operator
        chose and handed out on purpose.
        """
        if self.admin_token is not None:
            problem = admin_token_problem(self.admin_token)
            if problem:
                raise ConfigError(
                    f"REELSTREAM_ADMIN_TOKEN {problem}: set it to {ADMIN_TOKEN_HINT}, or unset it to use the "
                    f"generated {self.admin_token_path}"
                )
            return self.admin_token
        if bind_host is not None and not is_loopback(bind_host):
            raise ConfigError(
                f"refusing to bind the gateway to {bind_host} (not loopback) without an explicitly set admin "
                f"token: set REELSTREAM_ADMIN_TOKEN (environment or .env) to {ADMIN_TOKEN_HINT}, or "
                "bind 127.0.0.1"
            )
        path = self.admin_token_path
        if self._admin_secret is None or self._admin_secret[0] != path:
            self._admin_secret = (path, _read_or_create_token(path))
        return self._admin_secret[1]

    @property
    def replay_checkpoint(self) -> Path:
        """Where ``reelstream replay`` records how far the broker acknowledged it."""
        return self.run_dir / "replay.checkpoint.json"

    @property
    def probe_user_ids(self) -> range:
        """The user ids reserved for freshness probes."""
        return range(self.probe_user_base, self.probe_user_base + self.probe_users)

    @property
    def topics(self) -> tuple[str, ...]:
        """Every topic the system uses, for creation and lag monitoring."""
        return (self.topic_ratings, self.topic_movies, self.topic_dead_letters, self.topic_impressions)

    @property
    def consumed_topics(self) -> tuple[str, ...]:
        """The topics the worker group reads (and the archiver keeps): its lag is over these."""
        return (self.topic_ratings, self.topic_movies, self.topic_impressions)


#: Shortest admin token accepted: shorter ones are guessable or copied from an example
#: (``secrets.token_urlsafe(32)``, what the generated one is, has 43 characters).
ADMIN_TOKEN_MIN_CHARS = 16
ADMIN_TOKEN_HINT = 'a long random value (python -c "import secrets; print(secrets.token_urlsafe(32))")'


def admin_token_problem(token: str) -> str | None:
    """Why ``token`` cannot guard the admin routes (empty, short, few distinct characters), or None."""
    if not token.strip():
        return "is empty"
    if token != token.strip():
        return "has leading or trailing whitespace"
    if len(token) < ADMIN_TOKEN_MIN_CHARS:
        return f"is shorter than {ADMIN_TOKEN_MIN_CHARS} characters (a guessable or well-known value)"
    if len(set(token)) < ADMIN_TOKEN_MIN_CHARS // 3:
        return "repeats too few distinct characters to be random"
    return None


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses: a bind nobody on another machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _read_or_create_token(path: Path) -> str:
    """The token in ``path``, created once (0600) with ``secrets.token_urlsafe``; concurrent callers agree.

    The new token is written to a private temporary file and hard-linked into place, so a reader never
    sees a half-written file and two first starts (``up`` and the gateway) cannot make two tokens.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, (secrets.token_urlsafe(32) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        finally:
            tmp.unlink(missing_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"{path} is readable by other users (mode {mode:04o}): run `chmod 600 {path}`, or delete it to "
            "generate a new token"
        )
    token = path.read_text().strip()
    problem = admin_token_problem(token)
    if problem:
        raise ConfigError(f"the admin token in {path} {problem}: delete the file to generate a new one")
    return token


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (cached; tests clear it with ``get_settings.cache_clear()``)."""
    return Settings()
