"""The gateway's branch of the reelstream error tree, and the one place errors become HTTP codes::

    ReelstreamError                      (reelstream/errors.py)
    ├── ConfigError
    │   └── RulesError                   invalid rules document            -> 422
    ├── InfraError
    │   ├── StateUnavailable             Redis unreachable, no fallback    -> 503
    │   └── BrokerUnavailable            Kafka unreachable                 -> 503 + Retry-After
    ├── DataError                        bad input the models did not catch -> 422
    ├── ModelError                                                          -> 503
    └── NotFound                         unknown user / movie              -> 404
        ├── UserNotFound
        └── MovieNotFound

Routes raise these; :func:`http_status` is the only mapping to status codes.
"""

from __future__ import annotations

from typing import Any

from reelstream.errors import ConfigError, DataError, InfraError, ModelError, ReelstreamError

__all__ = [
    "BrokerUnavailable",
    "MovieNotFound",
    "NotFound",
    "RulesError",
    "StateUnavailable",
    "UserNotFound",
    "http_status",
]


class RulesError(ConfigError):
    """A rules document that does not validate; ``errors`` holds pydantic's field-level list."""

    def __init__(self, message: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class StateUnavailable(InfraError):
    """Redis could not be reached and the endpoint has no fallback."""


class BrokerUnavailable(InfraError):
    """The broker could not take the event; the client should retry later."""


class NotFound(ReelstreamError):
    """The requested entity does not exist."""


class UserNotFound(NotFound):
    pass


class MovieNotFound(NotFound):
    pass


def http_status(exc: ReelstreamError) -> int:
    """The HTTP status for one of our errors (unlisted ones are 503: a server-side condition).

    >>> http_status(MovieNotFound("x")), http_status(RulesError("x")), http_status(BrokerUnavailable("x"))
    (404, 422, 503)
    """
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, (RulesError, DataError)):
        return 422
    if isinstance(exc, (InfraError, ModelError)):
        return 503
    return 503
