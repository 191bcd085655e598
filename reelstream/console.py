"""The one rich console every command prints through.

On a terminal rich uses its width; when the output is piped or logged (CI, ``up``'s
sub-steps) it would fall back to 80 columns and squash the tables, so it gets 120.
"""

from __future__ import annotations

import sys

from rich.console import Console

__all__ = ["console"]

console = Console(width=None if sys.stdout.isatty() else 120)
