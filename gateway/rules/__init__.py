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

from gateway.rules.document import (
    DEFAULT_RULES_PATH,
    SEGMENTS,
    Avoid,
    Diversity,
    Exploration,
    Prefer,
    Promotions,
    RulesDocument,
    RuleSet,
    effective_rules,
)
from gateway.rules.resolve import bucket, parse_rules
from gateway.rules.store import LoadedRules, RulesStore

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
