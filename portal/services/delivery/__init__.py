"""Delivery: getting work and news out, and keeping it moving. Handing tasks to Celery (queueing) and
reading the broker (broker_queue), the minutely sweep (maintenance), webhooks and their safe outgoing HTTP
(outbound), API tokens, and the workers' local file cache."""
