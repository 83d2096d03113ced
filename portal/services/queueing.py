"""The one place where the portal hands work to Celery.

Callers run inside a request or a transaction: they call these helpers from `transaction.on_commit`
(or after commit), so a worker never looks for a row that is not committed yet. Celery is imported
lazily so that importing the portal never imports the task modules' dependencies.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings


def enqueue_classification(image_ids: Iterable[int]) -> None:
    """Queue images for classification on the gpu queue, in batches the workers classify together."""
    from workers.tasks import classify_images

    for batch in _batches(list(image_ids), settings.SEM_CLASSIFY_BATCH_SIZE):
        classify_images.delay(batch)


def enqueue_backlog(model_version_id: int) -> None:
    """Start the background re-classification for a newly promoted model, behind new uploads."""
    from workers.tasks import reclassify_backlog

    reclassify_backlog.apply_async([model_version_id], priority=settings.SEM_BACKLOG_PRIORITY)


def enqueue_training(training_run_id: int) -> None:
    from workers.tasks import train_model

    train_model.delay(training_run_id)


def _batches(ids: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start:start + size]
