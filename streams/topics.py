"""The worker's Faust topic (dead letters), declared from the settings' name.

Ratings and movies are read as raw bytes by :class:`streams.consumer.BatchConsumer`
(not by Faust: see :mod:`streams.app`); the processors decode them with the Avro
codec themselves, so that undecodable bytes go to the dead-letter topic with
their reason and the hot path builds no Record per event. Only the dead-letter
topic is declared for Faust: dead letters are produced through Faust's producer
as typed records.
"""

from __future__ import annotations

from streams.app import app, settings
from streams.records import DeadLetterRecord

__all__ = ["dead_letters_topic"]

dead_letters_topic = app.topic(settings.topic_dead_letters, key_type=bytes, value_type=DeadLetterRecord)
