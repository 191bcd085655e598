"""The shell: the ``reelstream`` CLI, its commands and the local system it runs (broker, Redis, workers,
gateway under a supervisor). It may import every package; nothing imports it (tests/test_import_boundaries.py)."""
