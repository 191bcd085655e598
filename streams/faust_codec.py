"""The Faust codec over the Avro wire format (``schemas/wire.py``), registered once per event type.

:class:`AvroCodec` is the one codec class; :func:`register_codecs` registers one instance per event type under
the names in :data:`CODEC_NAMES`, once per process, so Faust Records and topics can name them.
"""

from __future__ import annotations

from typing import Any

from faust.serializers import codecs as faust_codecs

from schemas.wire import codec_for

__all__ = ["CODEC_NAMES", "AvroCodec", "register_codecs"]

#: Event type -> the name its Faust codec is registered under (each type's schema files: ``schemas/wire.py``).
CODEC_NAMES: dict[str, str] = {
    "RatingEvent": "reelstream.rating",
    "MovieEvent": "reelstream.movie",
    "DeadLetter": "reelstream.dead_letter",
}


class AvroCodec(faust_codecs.Codec):
    """Faust codec: a record's dict <-> our Avro wire format (``AvroCodec(event_type="RatingEvent")``)."""

    def __init__(self, event_type: str = "RatingEvent", **kwargs: Any) -> None:
        self.event_type = event_type
        self._codec = codec_for(event_type)
        super().__init__(event_type=event_type, **kwargs)

    def _dumps(self, obj: Any) -> bytes:
        if hasattr(obj, "asdict"):
            obj = obj.asdict()
        return self._codec.encode(dict(obj))

    def _loads(self, s: bytes) -> Any:
        return self._codec.decode(s)


_registered = False


def register_codecs() -> None:
    """Register one :class:`AvroCodec` per event type with Faust (idempotent)."""
    global _registered
    if _registered:
        return
    for event_type, codec_name in CODEC_NAMES.items():
        faust_codecs.register(codec_name, AvroCodec(event_type=event_type))
    _registered = True
