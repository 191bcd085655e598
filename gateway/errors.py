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

Requests the framework refuses before a route runs are answered here too (docs/gateway.md,
"Error answers"): :func:`validation_detail` renders a 422 whatever the refused input was, and
:func:`body_error` names why a body could not be parsed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from reelstream.errors import ConfigError, DataError, InfraError, ModelError, ReelstreamError

__all__ = [
    "BrokerUnavailable",
    "MovieNotFound",
    "NotFound",
    "RulesError",
    "StateUnavailable",
    "UserNotFound",
    "body_error",
    "echo",
    "http_status",
    "validation_detail",
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


#: How much of a refused input an error answer echoes: nesting levels, items per container, characters per string.
ECHO_DEPTH, ECHO_ITEMS, ECHO_CHARS = 4, 20, 200
#: Characters kept of an echoed key (a field name, a location part).
ECHO_KEY_CHARS = 64
#: Characters kept of an error message (pydantic's own messages quote the input too).
MESSAGE_CHARS = 2000
#: JSON has no NaN or Infinity: they are echoed as the words a client would have sent.
_NON_FINITE = {0.0: "NaN", 1.0: "Infinity", -1.0: "-Infinity"}


def _clip(text: str, limit: int = ECHO_CHARS) -> str:
    """At most ``limit`` characters, always encodable as UTF-8 (a lone surrogate becomes ``\\udXXX``)."""
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} characters)"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def echo(value: object, depth: int = 0) -> object:
    """``value`` made JSON-renderable and small, for the ``input`` of an error answer.

    Why: FastAPI echoes a refused input as it was parsed, and rendering that can fail (NaN and
    Infinity are not JSON, a body need not be UTF-8, a lone surrogate cannot be encoded, a deep
    nesting exhausts the recursion limit) or be huge (a 1 MiB body echoed whole).

    >>> echo([float("nan"), b"\\xff", {"a": [[[[1]]]]}])
    ['NaN', '\\ufffd', {'a': [['...']]}]
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):  # str() of a huge int hits Python's 4300-digit conversion limit
        return value if abs(value) < 2**63 else f"an integer of {value.bit_length()} bits"
    if isinstance(value, float):
        return value if math.isfinite(value) else _NON_FINITE[math.copysign(1.0, value) if math.isinf(value) else 0.0]
    if isinstance(value, str):
        return _clip(value)
    if isinstance(value, (bytes, bytearray, memoryview)):  # a body that was not JSON
        raw = bytes(value)
        text = raw[:ECHO_CHARS].decode("utf-8", "replace")
        return text if len(raw) <= ECHO_CHARS else f"{text}... ({len(raw)} bytes)"
    if depth >= ECHO_DEPTH and isinstance(value, (Mapping, list, tuple, set, frozenset)):
        return "..."
    if isinstance(value, Mapping):
        items = list(value.items())
        out = {_clip(str(k), ECHO_KEY_CHARS): echo(v, depth + 1) for k, v in items[:ECHO_ITEMS]}
        if len(items) > ECHO_ITEMS:
            out["..."] = f"{len(items) - ECHO_ITEMS} more keys"
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        seq = list(value)
        out_list = [echo(v, depth + 1) for v in seq[:ECHO_ITEMS]]
        if len(seq) > ECHO_ITEMS:
            out_list.append(f"... {len(seq) - ECHO_ITEMS} more items")
        return out_list
    return _clip(str(value))


def validation_detail(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """FastAPI's 422 ``detail`` list with every value passed through :func:`echo` (``msg`` kept longer)."""
    detail = []
    for error in errors:
        item: dict[str, Any] = {}
        for key, value in error.items():
            if key == "loc":
                item[key] = [part if isinstance(part, int) else _clip(str(part), ECHO_KEY_CHARS) for part in value]
            elif key == "msg":
                item[key] = _clip(str(value), MESSAGE_CHARS)
            elif key == "ctx" and isinstance(value, Mapping):  # e.g. {"ge": 0.5} or {"error": ValueError(...)}
                item[key] = {_clip(str(k), ECHO_KEY_CHARS): echo(v, ECHO_DEPTH - 1) for k, v in value.items()}
            else:
                item[key] = echo(value)
        detail.append(item)
    return detail


def body_error(cause: BaseException | None) -> str | None:
    """Why a request body could not be parsed as JSON, in words; None for a cause that is not a parse failure.

    FastAPI answers such a body with a bare 400 ("There was an error parsing the body") and keeps the
    parser's exception as the ``__cause__``; this names it.

    >>> body_error(RecursionError())
    'the JSON body nests arrays or objects too deeply to parse'
    """
    if isinstance(cause, RecursionError):
        return "the JSON body nests arrays or objects too deeply to parse"
    if isinstance(cause, UnicodeError):
        if isinstance(cause, UnicodeDecodeError):
            return f"the JSON body is not valid {cause.encoding} text ({cause.reason} at byte {cause.start})"
        return f"the JSON body is not valid text ({_clip(str(cause))})"
    if isinstance(cause, ValueError) and "integer string conversion" in str(cause):
        return "a number in the JSON body has more digits than the parser converts (4300)"
    if isinstance(cause, ValueError):
        return f"the JSON body could not be parsed: {_clip(str(cause))}"
    return None
