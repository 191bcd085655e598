"""Operational monitoring: consumer lag with a Burrow-style verdict, freshness and metrics."""

from streams import broker_watch as _broker_watch  # noqa: F401  (its clients never create topics either)
