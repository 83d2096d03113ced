"""The Celery app, configured from the Django settings (CELERY_* names).

It lives in the portal (like the settings) so that the services can send tasks by name without
importing `workers`: the layers read top-down, workers → portal.services → classifier. The task
modules are named as strings; `workers` (the `celery -A workers` package) imports this app.
"""

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("sem_portal", include=["workers.tasks", "workers.webhooks"])
app.config_from_object("django.conf:settings", namespace="CELERY")
# Declared explicitly so that `-Q gpu,default,maintenance` means the same on Redis and the filesystem broker.
app.conf.task_queues = tuple(Queue(name, routing_key=name) for name in ("gpu", "default", "maintenance"))
