"""Every file a document, docstring or comment cites is in the repository (a reader can follow it).

A citation is a repository path (``docs/infra.md``, ``bench/results/*.json``) whose first part is one of
the repository's top-level entries, or a bare upper-case Markdown name (README-style), which must exist
somewhere in the repository. Runtime paths (``var/...``) are not citations of repository files. Nothing
may point outside the repository (``../``).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import PurePosixPath

from reelstream.settings import PROJECT_ROOT

_EXT = r"(?:py|md|yml|yaml|toml|avsc|sh|json|txt|html|js|css)"
PATH = re.compile(rf"(?<![\w./{{$-])((?:[A-Za-z0-9_.-]+/)+[A-Za-z0-9_*.-]+\.{_EXT})\b")
BARE_MD = re.compile(r"(?<![\w./-])([A-Z][A-Z0-9_-]*\.md)\b")
OUTSIDE = re.compile(r"\.\./shared/")
SCANNED = (".py", ".md", ".yml", ".yaml", ".toml", ".sh")


def _tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    return [p for p in out.stdout.split() if (PROJECT_ROOT / p).exists()]


def broken_citations(files: dict[str, str], tracked: set[str]) -> list[str]:
    """``file: cited`` for each citation in ``files`` (name -> text) that names no file in ``tracked``."""
    tops = {p.split("/")[0] for p in tracked} - {"var"}
    names = {PurePosixPath(p).name for p in tracked}
    bad = []
    for name, text in files.items():
        for m in PATH.finditer(text):
            cited = m.group(1)
            if cited.split("/")[0] not in tops:
                continue
            found = (any(PurePosixPath(t).match(cited) for t in tracked) if "*" in cited
                     else cited in tracked or (PROJECT_ROOT / cited).is_dir())  # fmt: skip
            if not found:
                bad.append(f"{name}: {cited}")
        bad += [f"{name}: {m.group(1)}" for m in BARE_MD.finditer(text) if m.group(1) not in names]
        bad += [f"{name}: points outside the repository ({m.group(0)})" for m in OUTSIDE.finditer(text)]
    return bad


def test_every_cited_file_exists() -> None:
    tracked = set(_tracked())
    scanned = {p: (PROJECT_ROOT / p).read_text(errors="replace") for p in sorted(tracked)
               if p.endswith(SCANNED) and not p.startswith("data/")}  # fmt: skip
    assert broken_citations(scanned, tracked) == []


def test_a_missing_citation_is_reported() -> None:
    tracked = {"docs/infra.md", "bench/results/scale.json", "streams/store.py"}
    gone, infra, shared = "docs/" + "gone.md", "INFRA" + ".md", "../" + "shared/"  # not citations of this file
    text = f"see docs/infra.md, bench/results/*.json, streams/store.py, {infra} and {gone}; {shared}x"
    assert broken_citations({"a.py": text}, tracked) == [
        f"a.py: {gone}",
        f"a.py: {infra}",
        f"a.py: points outside the repository ({shared})",
    ]
