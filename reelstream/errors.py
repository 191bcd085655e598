"""The reelstream error tree.

Callers catch a base class; the CLI turns any :class:`ReelstreamError` into a
one-line message and a non-zero exit code, the gateway maps them to HTTP codes
in one place::

    ReelstreamError
    ├── ConfigError          bad settings or environment
    ├── InfraError           a broker or Redis server could not be started/reached
    ├── DataError            bad input data: names the file, the line and the problem
    │   └── QualityError     data-quality thresholds exceeded
    └── ModelError           a missing, corrupt or mismatched model artifact
"""

from __future__ import annotations

from pathlib import Path


class ReelstreamError(Exception):
    """Base class of every error reelstream raises on purpose."""


class ConfigError(ReelstreamError):
    """The settings or the environment are not usable."""


class InfraError(ReelstreamError):
    """A broker or Redis server could not be started or reached."""


class DataError(ReelstreamError):
    """Input data is unusable; the message names the file, the line and the problem."""

    def __init__(self, message: str, *, path: Path | str | None = None, line: int | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f":{line}"
            where += ": "
        super().__init__(where + message)


class QualityError(DataError):
    """Data-quality thresholds were exceeded; the run writes nothing."""


class ModelError(ReelstreamError):
    """A model artifact is missing, corrupt or built from another data version."""
