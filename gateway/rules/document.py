"""The rules document: its pydantic models (a rule set, segment overrides, A/B variants) and how a
(segment, variant) pair resolves to one rule set (``effective_rules``), checked for every pair at load time.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.errors import RulesError

__all__ = [
    "DEFAULT_RULES_PATH",
    "SEGMENTS",
    "Arm",
    "Avoid",
    "Diversity",
    "Exploration",
    "Prefer",
    "Promotions",
    "RuleSet",
    "RulesDocument",
    "Segment",
    "SegmentRules",
    "Variants",
    "effective_rules",
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
