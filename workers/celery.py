"""The Celery app (defined in portal.celery_app, configured from the Django settings).

Run a worker for everything:     celery -A workers worker -Q gpu,default,maintenance -c 1
GPU host (classify and train):    celery -A workers worker -Q gpu -c 1
Deliveries and periodic tasks:    celery -A workers worker -Q default,maintenance -c 2
Scheduler (django-celery-beat):   celery -A workers beat   (schedules: manage.py setup_schedules)
"""

from portal.celery_app import app

__all__ = ["app"]
