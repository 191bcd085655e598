"""The bootstrap ETL: MovieLens (or synthetic) files -> a versioned feature store.

Modules, in dataflow order:

* :mod:`bootstrap.readers`  detect and read ml-latest-small/20m/25m/32m CSV, ml-100k, ml-1m
* :mod:`bootstrap.quality`  rating rules, quarantine, thresholds, the quality report
* :mod:`bootstrap.split`    the global HISTORY/STREAM cut
* :mod:`bootstrap.features` dense ids, side features, user/item statistics
* :mod:`bootstrap.store`    the on-disk contract: atomic versioned writer and :func:`load_store`
* :mod:`bootstrap.pipeline` :func:`run_bootstrap` and :func:`run_append`
* :mod:`bootstrap.synth`    MovieLens-shaped synthetic data at any scale

Consumers need only the store API, re-exported here (importing it pulls in no ETL code).
"""

from bootstrap.store import FeatureStore, current_version, list_versions, load_store

__all__ = ["FeatureStore", "current_version", "list_versions", "load_store"]
