"""The dead letter as a typed Faust Record (what the worker sends through Faust's producer), naming its Avro
codec (``streams.faust_codec``). Ratings and movies are read as raw bytes and decoded by the processors, so
they have no Record."""

from __future__ import annotations

import faust

from streams.faust_codec import CODEC_NAMES, register_codecs

__all__ = ["DeadLetterRecord"]

register_codecs()


class DeadLetterRecord(faust.Record, serializer=CODEC_NAMES["DeadLetter"]):
    """schemas/dead_letter.avsc"""

    original: bytes
    topic: str
    partition: int
    offset: int
    reason: str
    error: str
    dead_at: int
