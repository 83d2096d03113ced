"""The sweeper's part in classification (portal.services.delivery.maintenance): images pending too long whose
message or worker is gone are sent again, and a re-classification backlog that stopped is noticed."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from portal.models import ModelVersion, Prediction, SEMImage
from portal.services.learning.classification import needing, unclaimed

logger = logging.getLogger(__name__)

# Most images the sweeper re-queues in one pass; the next pass (a minute later) takes the rest.
SWEEP_LIMIT = 20_000


def sweep_stale_images() -> int:
    """Re-queue images pending too long whose message is lost (a broker restarted empty, a send that
    failed) or whose worker died (its claim was no longer renewed). Returns how many.

    An image whose message is merely waiting in the queue is left alone: re-sending it would only
    double the queue (portal.services.delivery.broker_queue)."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.SEM_PENDING_SWEEP_AFTER_S)
    stale = (
        SEMImage.objects.filter(status=SEMImage.Status.PENDING, status_changed_at__lt=cutoff)
        .filter(unclaimed(now))
        .order_by("pk")
    )
    candidates = list(stale.values_list("pk", "claimed_at")[:SWEEP_LIMIT])
    if not candidates:
        return 0
    from portal.services.delivery import broker_queue, queueing

    waiting = broker_queue.waiting_ids(queueing.CLASSIFY_IMAGES) or set()
    # A claim that went stale belongs to a dead worker: its message may sit unacknowledged until the
    # broker's visibility timeout, so those images are re-sent now.
    ids = [pk for pk, claimed_at in candidates if claimed_at is not None or pk not in waiting]
    if ids:
        # Restart their clock, so an image is re-queued at most once per sweep period.
        SEMImage.objects.filter(pk__in=ids).update(status_changed_at=now)
        logger.warning(
            "re-queueing %d images left pending for more than %ss", len(ids), settings.SEM_PENDING_SWEEP_AFTER_S
        )
        transaction.on_commit(lambda: queueing.enqueue_classification(ids))
    return len(ids)


def backlog_stalled(model: ModelVersion) -> bool:
    """The production model still has images to classify but its backlog made no progress lately."""
    cutoff = timezone.now() - timedelta(seconds=settings.SEM_PENDING_SWEEP_AFTER_S)
    if model.promoted_at and model.promoted_at > cutoff:
        return False
    if Prediction.objects.filter(model_version=model, created_at__gt=cutoff).exists():
        return False
    if not needing(model).filter(unclaimed(timezone.now())).exclude(status=SEMImage.Status.PENDING).exists():
        return False
    return not _backlog_message_waiting(model)


def _backlog_message_waiting(model: ModelVersion) -> bool:
    """The backlog's next batch is in the queue (behind other work): it is slow, not stalled."""
    from portal.services.delivery import broker_queue, queueing

    waiting = broker_queue.waiting_args(queueing.RECLASSIFY_BACKLOG) or []
    return any(args[:1] == [model.pk] for args in waiting)
