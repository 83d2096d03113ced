"""The Celery app, configured from the Django settings (CELERY_* names).

Run a worker for everything:     celery -A workers worker -Q gpu,default -c 1
GPU host (classify and train):    celery -A workers worker -Q gpu -c 1
Scheduler (django-celery-beat):   celery -A workers beat   (schedules: manage.py setup_schedules)
"""

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("sem_portal", include=["workers.tasks", "workers.webhooks"])
app.config_from_object("django.conf:settings", namespace="CELERY")
# Declared explicitly so that `-Q gpu,default` means the same on Redis and the filesystem broker.
app.conf.task_queues = (Queue("gpu", routing_key="gpu"), Queue("default", routing_key="default"))
