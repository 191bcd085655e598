"""Reading a rules file and drawing a user's A/B arm: ``parse_rules`` (YAML -> a validated document), ``bucket``."""

from __future__ import annotations

import hashlib

import yaml
from pydantic import ValidationError

from gateway.errors import RulesError
from gateway.rules.document import RulesDocument

__all__ = [
    "bucket",
    "parse_rules",
]


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
        raise RulesError(
            f"{source}: invalid rules: {exc}", errors=[dict(e) for e in exc.errors(include_url=False)]
        ) from None
