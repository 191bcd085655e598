"""The loaded rules and their file: every rule set resolved once per version, hot-reloaded when the file changes."""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import yaml

from gateway.errors import RulesError
from gateway.rules.document import DEFAULT_RULES_PATH, SEGMENTS, RulesDocument, RuleSet, Segment, effective_rules
from gateway.rules.resolve import bucket, parse_rules

__all__ = [
    "LoadedRules",
    "RulesStore",
]


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

    def segment_for(self, n_ratings: int) -> Segment:
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
            st = self.path.stat()
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
        tmp.replace(self.path)
