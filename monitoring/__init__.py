"""Operational monitoring: consumer lag with a Burrow-style verdict, freshness and metrics."""
