"""Business rules: a versioned YAML document, validated with pydantic and hot-reloaded.

The document (see ``default.yaml`` next to this file and ``docs/rules.md``) has a
``base`` rule set, partial overrides per activity segment (``new``, ``casual``,
``heavy``) and A/B variants with weights. The rule set a request uses is::

    effective = deep_merge(base, segments[segment], variant.overrides)

Every (segment, variant) combination is merged and validated when the file is
loaded, so a bad override is rejected at load time, never on a request.
:class:`RulesStore` checks the file's identity (mtime, size, inode) on every
access and reloads it when it changed; an invalid file keeps the last good rules
and reports the error.

>>> doc = RulesDocument.model_validate({"name": "t", "version": 3})
>>> effective_rules(doc, "heavy", "control").diversity.mmr_lambda
0.85
>>> bucket("user-7", "salt", [("a", 1.0), ("b", 1.0)]) == bucket("user-7", "salt", [("a", 1.0), ("b", 1.0)])
True
"""

from __future__ import annotations

import copy
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.errors import RulesError

__all__ = [
    "DEFAULT_RULES_PATH",
    "SEGMENTS",
    "Avoid",
    "Diversity",
    "Exploration",
    "LoadedRules",
    "Prefer",
    "Promotions",
    "RuleSet",
    "RulesDocument",
    "RulesStore",
    "bucket",
    "effective_rules",
    "parse_rules",
]

DEFAULT_RULES_PATH = Path(__file__).with_name("default.yaml")
SEGMENTS: tuple[str, ...] = ("new", "casual", "heavy")
Segment = Literal["new", "casual", "heavy"]


class _Strict(BaseModel):
    # NaN and Infinity would pass unbounded and one-sided fields (genre boosts, gt=0) and turn scores into NaN.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Avoid(_Strict):
    """Hard avoids: a candidate matching any of these is never served."""

    rated: bool = True
    dislike_max_rating: float = Field(2.0, ge=0.0, le=5.0)
    dislike_similarity: float = Field(0.92, ge=-1.0, le=1.0)
    exclude_genres: tuple[str, ...] = ()
    year_min: int | None = Field(None, ge=1800, le=2200)
    year_max: int | None = Field(None, ge=1800, le=2200)
    blocklist: tuple[int, ...] = ()

    @model_validator(mode="after")
    def _window(self) -> Avoid:
        if self.year_min is not None and self.year_max is not None and self.year_min > self.year_max:
            raise ValueError(f"year_min {self.year_min} is after year_max {self.year_max}")
        return self


class Prefer(_Strict):
    """Soft preferences, in standard deviations of the user's score distribution."""

    genre_boosts: dict[str, Annotated[float, Field(ge=-10.0, le=10.0)]] = Field(default_factory=dict)
    recency_boost: float = Field(0.0, ge=-10.0, le=10.0)
    recency_half_life_years: float = Field(10.0, ge=0.01)  # a denormal half-life divides to NaN in float32
    popularity_penalty: float = Field(0.0, ge=-10.0, le=10.0)


class Diversity(_Strict):
    """MMR trade-off (1.0 = relevance only) and the most items one genre may fill."""

    mmr_lambda: float = Field(0.85, ge=0.0, le=1.0)
    genre_cap: int = Field(8, ge=1, le=1000)


class Promotions(_Strict):
    """Promoted items get ``boost`` and may fill at most ``max_slots`` places of a list."""

    items: tuple[int, ...] = ()
    boost: float = Field(1.0, ge=0.0, le=100.0)
    max_slots: int = Field(2, ge=0, le=1000)


class Exploration(_Strict):
    """Rank by a posterior draw (``thompson``) or an upper confidence bound (``ucb``) instead of the mean.

    ``scale`` multiplies sigma (Thompson) or is the bonus weight (UCB); ``seed`` with the user id and
    state version seeds a Thompson draw, so a list stays the same until the user's state or the rules
    change (``models/exploration.py``). Personalised lists only: cold starts have no posterior.
    """

    kind: Literal["none", "thompson", "ucb"] = "none"
    scale: float = Field(1.0, ge=0.0, le=10.0)
    seed: int = Field(0, ge=0, le=2**32 - 1)


class RuleSet(_Strict):
    """One complete, effective rule set."""

    avoid: Avoid = Avoid()
    prefer: Prefer = Prefer()
    diversity: Diversity = Diversity()
    promotions: Promotions = Promotions()
    exploration: Exploration = Exploration()


class SegmentRules(BaseModel):
    """Activity thresholds and each segment's partial overrides of ``base``."""

    model_config = ConfigDict(extra="forbid")

    casual_min_ratings: int = Field(5, ge=1)
    heavy_min_ratings: int = Field(100, ge=1)
    new: dict[str, Any] = Field(default_factory=dict)
    casual: dict[str, Any] = Field(default_factory=dict)
    heavy: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _ordered(self) -> SegmentRules:
        if self.heavy_min_ratings <= self.casual_min_ratings:
            raise ValueError("heavy_min_ratings must be greater than casual_min_ratings")
        return self


class Arm(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    weight: float = Field(gt=0.0, le=1e6)  # relative; two weights near the float maximum would sum to inf
    overrides: dict[str, Any] = Field(default_factory=dict)


class Variants(BaseModel):
    model_config = ConfigDict(extra="forbid")

    salt: str = "reelstream-ab"
    arms: list[Arm] = Field(default_factory=lambda: [Arm(name="control", weight=1.0)], min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Variants:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        return self


class RulesDocument(BaseModel):
    """The whole YAML file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("default", min_length=1, max_length=64)
    version: int = Field(1, ge=1)
    base: RuleSet = RuleSet()
    segments: SegmentRules = SegmentRules()
    variants: Variants = Variants()

    @model_validator(mode="after")
    def _every_combination_valid(self) -> RulesDocument:
        for segment in SEGMENTS:
            for arm in self.variants.arms:
                effective_rules(self, segment, arm.name)
        return self


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "genre_boosts":
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def effective_rules(doc: RulesDocument, segment: str, variant: str) -> RuleSet:
    """``base`` merged with the segment's and then the variant's overrides, validated."""
    merged = doc.base.model_dump()
    merged = _deep_merge(merged, getattr(doc.segments, segment))
    arm = next((a for a in doc.variants.arms if a.name == variant), None)
    if arm is None:
        raise RulesError(f"unknown variant {variant!r}")
    merged = _deep_merge(merged, arm.overrides)
    try:
        return RuleSet.model_validate(merged)
    except ValidationError as exc:
        raise ValueError(f"segment {segment!r} + variant {variant!r}: {exc}") from None


def bucket(user_key: str, salt: str, arms: list[tuple[str, float]]) -> str:
    """Deterministic A/B arm: a SHA-256 of ``salt:user`` mapped onto the cumulative weights.

    >>> bucket("42", "s", [("only", 1.0)])
    'only'
    """
    digest = hashlib.sha256(f"{salt}:{user_key}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2.0**64 * sum(w for _, w in arms)
    acc = 0.0
    for name, weight in arms:
        acc += weight
        if point < acc:
            return name
    return arms[-1][0]


def parse_rules(text: str, *, source: str = "<rules>") -> RulesDocument:
    """YAML text -> validated document; RulesError carries the field-level problems."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(f"{source}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise RulesError(f"{source}: the rules must be a YAML mapping")
    try:
        return RulesDocument.model_validate(raw)
    except ValidationError as exc:
        raise RulesError(f"{source}: invalid rules: {exc}", errors=exc.errors(include_url=False)) from None


@dataclass(frozen=True)
class LoadedRules:
    """One loaded version of the file with every (segment, variant) rule set resolved."""

    doc: RulesDocument
    text: str
    digest: str
    by_key: dict[tuple[str, str], RuleSet]

    @property
    def version(self) -> str:
        """``v<version>-<sha8>``: changes whenever the content changes, even if ``version`` did not."""
        return f"v{self.doc.version}-{self.digest[:8]}"

    @property
    def arms(self) -> list[tuple[str, float]]:
        return [(a.name, a.weight) for a in self.doc.variants.arms]

    def variant_for(self, user_key: str) -> str:
        return bucket(user_key, self.doc.variants.salt, self.arms)

    def segment_for(self, n_ratings: int) -> str:
        seg = self.doc.segments
        if n_ratings < seg.casual_min_ratings:
            return "new"
        return "heavy" if n_ratings >= seg.heavy_min_ratings else "casual"

    def rules_for(self, segment: str, variant: str) -> RuleSet:
        return self.by_key[(segment, variant)]

    @classmethod
    def from_text(cls, text: str, *, source: str = "<rules>") -> LoadedRules:
        doc = parse_rules(text, source=source)
        by_key = {(s, a.name): effective_rules(doc, s, a.name) for s in SEGMENTS for a in doc.variants.arms}
        return cls(doc, text, hashlib.sha256(text.encode()).hexdigest(), by_key)


class RulesStore:
    """The live rules file: reloaded when its (mtime, size, inode) changes; writes are atomic."""

    def __init__(self, path: Path, *, seed_from: Path = DEFAULT_RULES_PATH) -> None:
        self.path = path
        self.seed_from = seed_from
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._identity: tuple[int, int, int] | None = None
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            self._write_atomic(seed_from.read_text())
        self._loaded = self._load()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self) -> LoadedRules:
        identity = self._stat()
        try:
            text = self.path.read_text()
        except OSError as exc:
            raise RulesError(f"{self.path}: cannot read rules ({exc})") from None
        loaded = LoadedRules.from_text(text, source=str(self.path))
        self._identity = identity
        self.last_error = None
        return loaded

    def current(self) -> LoadedRules:
        """The rules to use now (reloading first if the file changed)."""
        identity = self._stat()
        if identity == self._identity or identity is None:
            return self._loaded
        with self._lock:
            if self._stat() != self._identity:
                try:
                    self._loaded = self._load()
                except RulesError as exc:
                    self._identity = identity  # do not retry a bad file on every request
                    self.last_error = str(exc)
        return self._loaded

    def replace(self, doc: RulesDocument) -> LoadedRules:
        """Write ``doc`` as the new file with ``version`` bumped past the current one; returns it loaded."""
        with self._lock:
            current = self.current_unlocked()
            new_doc = doc.model_copy(update={"version": max(doc.version, current.doc.version + 1)})
            text = yaml.safe_dump(new_doc.model_dump(mode="json"), sort_keys=False)
            LoadedRules.from_text(text)  # validate before writing
            self._write_atomic(text)
            self._loaded = self._load()
            return self._loaded

    def current_unlocked(self) -> LoadedRules:
        return self._loaded

    def _write_atomic(self, text: str) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)
