"""The worker's topics, declared once from the settings' names.

Ratings and movies are read as raw bytes by :class:`streams.consumer.BatchConsumer`
(not by Faust: see :mod:`streams.app`); the processors decode them with the Avro
codec themselves, so that undecodable bytes go to the dead-letter topic with
their reason and the hot path builds no Record per event. The two declarations
below name the topics for Faust (``faust`` CLI tooling, producers); dead letters
are produced through Faust's producer as typed records.
"""

from __future__ import annotations

from streams.app import app, settings
from streams.records import DeadLetterRecord

__all__ = ["dead_letters_topic", "movies_topic", "ratings_topic"]

ratings_topic = app.topic(settings.topic_ratings, key_type=bytes, value_type=bytes, value_serializer="raw")
movies_topic = app.topic(settings.topic_movies, key_type=bytes, value_type=bytes, value_serializer="raw")
dead_letters_topic = app.topic(settings.topic_dead_letters, key_type=bytes, value_type=DeadLetterRecord)
