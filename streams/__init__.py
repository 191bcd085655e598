"""streams: the Faust app, the batch worker, the producers and the replay (everything that talks to Kafka).

Importing the package makes every aiokafka Metadata request ask for no topic creation
(:mod:`streams.broker_watch`): topics come from ``streams.admin.ensure_topics`` only.
"""

from streams import broker_watch as _broker_watch  # noqa: F401  (the no-auto-create patch)
