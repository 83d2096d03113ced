"""Thin Celery tasks: they take IDs, re-fetch rows and delegate to the services.

Retries are for named transient errors only (the database connection dropping); anything else is a
bug or bad data, recorded on the rows by the services. Rows deleted meanwhile are skipped by the
services (they re-select by ID). Routing: classification and training on `gpu`, webhook deliveries on
`default`, the beat's periodic tasks on `maintenance` (settings.CELERY_TASK_ROUTES).
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

logger = logging.getLogger(__name__)

TRANSIENT_ERRORS = (OperationalError, InterfaceError)
RETRY_POLICY = {
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": 5,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 8,
}


@shared_task(
    name="workers.classify_images",
    soft_time_limit=settings.CLASSIFY_TIME_LIMIT_S - 300,
    time_limit=settings.CLASSIFY_TIME_LIMIT_S,
    **RETRY_POLICY,
)
def classify_images(image_ids: list[int]) -> dict:
    from portal.services.learning import classification_batch

    outcome = classification_batch.classify_images([int(pk) for pk in image_ids])
    return {"classified": len(outcome.classified), "failed": len(outcome.failed), "parked": outcome.parked}


@shared_task(
    bind=True,
    name="workers.reclassify_backlog",
    soft_time_limit=settings.CLASSIFY_TIME_LIMIT_S - 300,
    time_limit=settings.CLASSIFY_TIME_LIMIT_S,
    **RETRY_POLICY,
)
def reclassify_backlog(self, model_version_id: int) -> bool:
    """One batch of the background re-classification, then queue the next behind newer work."""
    from portal.services.learning import classification_batch

    more = classification_batch.classify_backlog_batch(int(model_version_id))
    if more:
        self.apply_async([model_version_id], priority=settings.SEM_BACKLOG_PRIORITY)
    return more


@shared_task(name="workers.compute_heatmap", soft_time_limit=240, time_limit=300, **RETRY_POLICY)
def compute_heatmap(heatmap_id: int) -> str:
    """Grad-CAM of one image for one model version (the viewer's overlay), stored once."""
    from portal.services.learning import heatmaps

    return heatmaps.compute_heatmap(int(heatmap_id))


# Training acknowledges its message when it starts: a redelivered message would start the same
# hours-long run again behind a dead one. A lost worker is found by the sweeper (no heartbeat).
@shared_task(
    bind=True,
    name="workers.train_model",
    acks_late=False,
    reject_on_worker_lost=False,
    soft_time_limit=settings.SEM_TRAINING_TIMEOUT_S + 300,
    time_limit=settings.SEM_TRAINING_TIMEOUT_S + 600,
)
def train_model(self, training_run_id: int) -> str | None:
    from portal.services.learning import training_run

    run = training_run.run_training(int(training_run_id), celery_task_id=self.request.id or "")
    return run.status if run else None


@shared_task(name="workers.maybe_retrain", **RETRY_POLICY)
def maybe_retrain() -> int | None:
    """The nightly check: train only when enough curated labels changed since the production model."""
    from portal.models import TrainingRun
    from portal.services.learning import training

    run = training.request_training(trigger=TrainingRun.Trigger.SCHEDULE).run
    return run.pk if run else None


@shared_task(name="workers.sweep", **RETRY_POLICY)
def sweep() -> dict:
    """Every minute: nothing stays stuck after a lost message, a dead worker or a broker restart."""
    from portal.services.delivery import maintenance

    return maintenance.sweep()


@shared_task(name="workers.scan_watch_folders", soft_time_limit=900, time_limit=1200, **RETRY_POLICY)
def scan_watch_folders() -> dict:
    """Beat (every 15 s, enabled while a watch folder is): scan the folders whose poll interval has passed."""
    from portal.services.ingestion import watch_schedule

    return watch_schedule.scan_due_folders()
