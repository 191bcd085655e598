"""The dependency rules of docs/architecture.md, read from every import statement (lazy ones included).

Each library package may import only the packages its rule names; the shell (``reelstream.shell``: the CLI,
commands, local_services, live_system and supervisor) may import everything and no library package imports it.
The kernel (``reelstream``'s settings, errors, addresses, Redis client and console) is shared by all and imports
only itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from reelstream.settings import PROJECT_ROOT

KERNEL = {"reelstream.settings", "reelstream.errors", "reelstream.addresses", "reelstream.redis_client",
          "reelstream.console"}  # fmt: skip
#: package -> the first-party packages it may import (besides itself and the kernel)
ALLOWED: dict[str, set[str]] = {
    "schemas": set(),  # contracts: Avro schemas + wire format, rating contract, Redis keys and records, side features
    "bootstrap": {"schemas"},  # historical data in: MovieLens files -> validated Parquet feature store
    "models": {"schemas", "bootstrap"},  # learning and the numpy runtime; reads the store, no Kafka or Redis
    "streams": {"schemas", "models", "bootstrap"},  # the Faust app: consumer, processor, Redis writes, replay
    "monitoring": {"schemas", "streams"},  # lag rules, liveness, freshness probes (the probe produces events)
    "gateway": {"schemas", "models", "bootstrap", "streams", "monitoring"},  # HTTP, rules, serving
}
FIRST_PARTY = {*ALLOWED, "reelstream"}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "reelstream":  # ``from reelstream.shell import local_services``: the names are modules
                out += [(node.lineno, f"reelstream.{alias.name}") for alias in node.names]
            else:
                out.append((node.lineno, node.module))
    return out


def _violations(package: str) -> list[str]:
    bad = []
    for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
        for line, name in _imports(path):
            top = name.split(".")[0]
            if top not in FIRST_PARTY or top == package:
                continue
            if top == "reelstream":
                if ".".join(name.split(".")[:2]) not in KERNEL:
                    bad.append(f"{path.relative_to(PROJECT_ROOT)}:{line} imports the shell ({name})")
            elif top not in ALLOWED[package]:
                bad.append(f"{path.relative_to(PROJECT_ROOT)}:{line} imports {name} ({package} may not)")
    return bad


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_its_rule_allows(package: str) -> None:
    assert _violations(package) == []


def test_the_rules_catch_an_upward_import(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("def f():\n    from gateway.app import create_app\n    from reelstream import shell\n")
    assert _imports(sample) == [(2, "gateway.app"), (3, "reelstream.shell")]


def test_every_package_has_a_rule() -> None:
    packages = {p.parent.name for p in PROJECT_ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert packages == {*ALLOWED, "reelstream"}


def test_the_kernel_imports_nothing_first_party_but_the_kernel() -> None:
    bad = []
    for module in sorted(KERNEL):
        path = PROJECT_ROOT / (module.replace(".", "/") + ".py")
        for line, name in _imports(path):
            if name.split(".")[0] in FIRST_PARTY and ".".join(name.split(".")[:2]) not in KERNEL:
                bad.append(f"{path.relative_to(PROJECT_ROOT)}:{line} imports {name}")
    assert bad == []


def test_reelstream_holds_the_kernel_and_the_shell_package_only() -> None:
    """A new top-level module must be declared kernel (shared by all) or go into the shell."""
    top = {f"reelstream.{p.stem}" for p in (PROJECT_ROOT / "reelstream").glob("*.py") if p.stem != "__init__"}
    assert top == KERNEL
    assert (PROJECT_ROOT / "reelstream" / "shell" / "cli.py").is_file()
