"""The worker's topics, declared once from the settings' names.

Ratings and movies arrive as raw bytes: the agents decode them with the Avro
codec themselves, so that undecodable bytes reach the agent and go to the
dead-letter topic with their reason (Faust would log and drop a value it cannot
deserialize) and so the hot path skips building a Record per event.
"""

from __future__ import annotations

from streams.app import app, settings
from streams.records import DeadLetterRecord

__all__ = ["dead_letters_topic", "movies_topic", "ratings_topic"]

ratings_topic = app.topic(settings.topic_ratings, key_type=bytes, value_type=bytes, value_serializer="raw")
movies_topic = app.topic(settings.topic_movies, key_type=bytes, value_type=bytes, value_serializer="raw")
dead_letters_topic = app.topic(settings.topic_dead_letters, key_type=bytes, value_type=DeadLetterRecord)
