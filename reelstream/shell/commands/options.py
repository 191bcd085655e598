"""Command-line options shared by several commands (one definition, one help text)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["DataOption", "ModelDirOption"]

#: ``--model-dir``: a model folder; None means the one ``var/models/CURRENT`` names.
ModelDirOption = Annotated[Path | None, typer.Option(help="Model folder (default: the one var/models/CURRENT names).")]
#: ``--data``: a MovieLens folder read directly (split at 0.8) instead of the feature store.
DataOption = Annotated[
    Path | None, typer.Option(help="Evaluate on a MovieLens folder (split at 0.8) instead of the store.")
]
