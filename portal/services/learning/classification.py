"""Classification of SEM images by the production model (run by the gpu workers): which images need it,
and the claims that keep two workers from classifying one image.

An image needs the production model when it is pending, waiting for a first model, or (with
SEM_RECLASSIFY_AFTER_PROMOTION) classified by an older model. Workers claim such images with a
timestamp in `claimed_at`, renewed while the batch runs (`ClaimRenewal`), so a claim older than
SEM_PENDING_SWEEP_AFTER_S belongs to a dead worker and may be taken again; a slow batch is never
claimed and inferred a second time. A batch writes only while its model is still production
(`lock_for_writing`): one that outlived a promotion or roll-back hands its images to the new production
model, so every current prediction comes from production.

The rest of it, each in its own module:
- classification_batch: one batch from claim to stored results, and the re-classification backlog;
- classification_inference: the engine's predictions of a batch, with blank frames and prediction sets;
- classification_results: predictions stored (unique per image and model version, so a batch that runs
  twice writes nothing twice) and copied into the images' columns;
- classification_sweep: images and backlogs whose messages were lost, sent again.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from portal.models import ModelVersion, SEMImage

logger = logging.getLogger(__name__)

# The statuses of an image with a current prediction.
CLASSIFIED_STATUSES = (SEMImage.Status.CLASSIFIED, SEMImage.Status.OUT_OF_SCOPE)


def production_model() -> ModelVersion | None:
    return ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION).first()


def needing(model: ModelVersion) -> QuerySet[SEMImage]:
    """Images that should get (or get again) a prediction from `model`."""
    waiting = Q(status__in=[SEMImage.Status.PENDING, SEMImage.Status.NO_MODEL])
    if settings.SEM_RECLASSIFY_AFTER_PROMOTION:
        waiting |= Q(status__in=CLASSIFIED_STATUSES) & ~Q(predicted_by=model)
    return SEMImage.objects.filter(waiting)


def unclaimed(now: datetime) -> Q:
    stale = now - timedelta(seconds=settings.SEM_PENDING_SWEEP_AFTER_S)
    return Q(claimed_at__isnull=True) | Q(claimed_at__lt=stale)


def park_without_model(image_ids: list[int]) -> int:
    return SEMImage.objects.filter(pk__in=image_ids, status=SEMImage.Status.PENDING).update(
        status=SEMImage.Status.NO_MODEL, status_changed_at=timezone.now()
    )


@transaction.atomic
def claim(image_ids: list[int], model: ModelVersion) -> list[SEMImage]:
    """Atomically take the message's images, topped up with other pending uploads to a full batch.

    Uploads arrive one message per image; topping up turns a burst of them into full batches.
    PostgreSQL: rows are locked with FOR UPDATE SKIP LOCKED, so concurrent workers take disjoint
    sets without waiting. SQLite ignores FOR UPDATE but runs every transaction as BEGIN IMMEDIATE
    (one writer at a time), and the UPDATE repeats the "unclaimed" condition, so select-then-update
    cannot interleave with another worker's.
    """
    now = timezone.now()
    size = settings.SEM_CLASSIFY_BATCH_SIZE
    claimable = needing(model).filter(unclaimed(now)).order_by("pk").select_for_update(skip_locked=True, of=("self",))
    ids = list(claimable.filter(pk__in=image_ids).values_list("pk", flat=True)[:size])
    if len(ids) < size:
        others = claimable.filter(status=SEMImage.Status.PENDING).exclude(pk__in=ids)
        ids += list(others.values_list("pk", flat=True)[: size - len(ids)])
    SEMImage.objects.filter(pk__in=ids).filter(unclaimed(now)).update(
        claimed_at=now, classify_attempts=F("classify_attempts") + 1
    )
    return list(SEMImage.objects.filter(pk__in=ids, claimed_at=now).only("pk", "derivative", "sha256", "claimed_at"))


class ClaimRenewal:
    """Keeps a batch's claims fresh while it runs: a thread (with its own database connection) moves
    `claimed_at` forward every third of the claim expiry. Without it, a batch slower than the expiry
    (a loaded machine, a cold model) was claimed and inferred again by another worker. Only rows that
    still carry this batch's timestamp are renewed, so a claim taken over is never taken back."""

    def __init__(self, images: list[SEMImage]) -> None:
        self.ids = [image.pk for image in images]
        self.stamp = images[0].claimed_at if images else None
        self.interval_s = settings.SEM_PENDING_SWEEP_AFTER_S / 3
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="claim-renewal", daemon=True)

    def __enter__(self) -> ClaimRenewal:
        if self.ids:
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        try:
            while not self._stopped.wait(self.interval_s):
                self.renew()
        finally:
            connection.close()  # the connection Django opened for this thread

    def renew(self) -> int:
        now = timezone.now()
        try:
            renewed = SEMImage.objects.filter(pk__in=self.ids, claimed_at=self.stamp).update(claimed_at=now)
        except DatabaseError as error:  # the next renewal tries again; the claim is still valid meanwhile
            logger.warning("could not renew the claims of images %s: %s", self.ids, error)
            return 0
        self.stamp = now
        return renewed


def release(images: list[SEMImage]) -> None:
    SEMImage.objects.filter(pk__in=[image.pk for image in images]).update(claimed_at=None)


def lock_for_writing(model: ModelVersion, image_ids: list[int]) -> set[int] | None:
    """Lock the batch's images, then `model`'s row, inside the caller's transaction: the ids of the images
    still present, or None when `model` is no longer production.

    A batch runs for seconds; a promotion or roll-back may commit meanwhile, and its own re-classification
    skips the images this batch still claims. The check holds the model's row lock until the batch's
    writes commit, so promote/rollback (which lock the same row) run wholly before or after them. A batch
    that finds its model demoted writes nothing, hands its images back and queues production's
    re-classification, so no image keeps a demoted model's answer.
    """
    present = set(SEMImage.objects.select_for_update().filter(pk__in=image_ids).values_list("pk", flat=True))
    production = ModelVersion.objects.select_for_update().filter(pk=model.pk, status=ModelVersion.Status.PRODUCTION)
    if list(production.values_list("pk", flat=True)):
        return present
    SEMImage.objects.filter(pk__in=present).update(claimed_at=None)
    logger.info(
        "v%s was demoted while it classified images %s; production re-classifies them", model.version, image_ids
    )
    transaction.on_commit(_requeue_for_production)
    return None


def _requeue_for_production() -> None:
    from portal.services.delivery.queueing import enqueue_backlog

    current = production_model()
    if current is not None:
        enqueue_backlog(current.pk)
