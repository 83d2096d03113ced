"""The one place where the portal hands work to Celery.

Callers run inside a request or a transaction: they call these helpers from `transaction.on_commit`
(or after commit), so a worker never looks for a row that is not committed yet. Tasks are sent by
name (the `workers` package defines them), so the portal never imports `workers`; the queue of each
task comes from settings.CELERY_TASK_ROUTES.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings

CLASSIFY_IMAGES = "workers.classify_images"
RECLASSIFY_BACKLOG = "workers.reclassify_backlog"
TRAIN_MODEL = "workers.train_model"
DELIVER_WEBHOOK = "workers.webhooks.deliver"
COMPUTE_HEATMAP = "workers.compute_heatmap"


def send(name: str, args: list, **options) -> None:
    from portal.celery_app import app

    app.send_task(name, args=args, **options)


def enqueue_classification(image_ids: Iterable[int]) -> None:
    """Queue images for classification on the gpu queue, in batches the workers classify together."""
    for batch in _batches(list(image_ids), settings.SEM_CLASSIFY_BATCH_SIZE):
        send(CLASSIFY_IMAGES, [batch])


def enqueue_backlog(model_version_id: int) -> None:
    """Start the background re-classification for a newly promoted model, behind new uploads."""
    send(RECLASSIFY_BACKLOG, [model_version_id], priority=settings.SEM_BACKLOG_PRIORITY)


def enqueue_training(training_run_id: int) -> None:
    send(TRAIN_MODEL, [training_run_id])


def enqueue_heatmap(heatmap_id: int) -> None:
    """A heat map someone is waiting for: ahead of the re-classification backlog, like a new upload."""
    send(COMPUTE_HEATMAP, [heatmap_id])


def enqueue_webhook_deliveries(delivery_ids: Iterable[int]) -> None:
    for delivery_id in delivery_ids:
        send(DELIVER_WEBHOOK, [delivery_id])


def _batches(ids: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]
