"""Batch classification of SEM images by the production model (run by the gpu workers).

An image needs the production model when it is pending, waiting for a first model, or (with
SEM_RECLASSIFY_AFTER_PROMOTION) classified by an older model. Workers claim such images with a
timestamp in `claimed_at`, renewed while the batch runs (`ClaimRenewal`), so a claim older than
SEM_PENDING_SWEEP_AFTER_S belongs to a dead worker and may be taken again; a slow batch is never
claimed and inferred a second time. Predictions are unique per image and model version, so a batch that runs twice
(a redelivered message, a re-queue by the sweeper) writes nothing twice. A batch writes only while its
model is still production (`lock_for_writing`): one that outlived a promotion or roll-back hands its images
to the new production model, so every current prediction comes from production.

torch and the classifier engine are imported only inside the functions that classify, so the web
process can import this module.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Union

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from portal import events
from portal.models import Category, Embedding, ModelVersion, Prediction, SEMImage
from portal.services import similar
from portal.services.artifacts import load_engine
from portal.storage import media_storage

if TYPE_CHECKING:
    from classifier.engine import ImagePrediction

logger = logging.getLogger(__name__)

# Most images the sweeper re-queues in one pass; the next pass (a minute later) takes the rest.
SWEEP_LIMIT = 20_000
# The statuses of an image with a current prediction.
CLASSIFIED_STATUSES = (SEMImage.Status.CLASSIFIED, SEMImage.Status.OUT_OF_SCOPE)


@dataclass(frozen=True)
class Unclassifiable:
    """Why one image of a batch got no prediction (its derivative is missing or unreadable)."""

    reason: str


# What `predict` returns per image: classifier.engine.ImagePrediction, or why there is none.
ImageResult = Union["ImagePrediction", Unclassifiable]


@dataclass
class BatchOutcome:
    classified: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    parked: int = 0  # set to "waiting for a first model"

    @property
    def claimed(self) -> int:
        return len(self.classified) + len(self.failed)


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


def classify_images(image_ids: list[int]) -> BatchOutcome:
    """Classify those of `image_ids` that still need the production model and nobody else holds."""
    model = production_model()
    if model is None:
        return BatchOutcome(parked=park_without_model(image_ids))
    claimed = claim(image_ids, model)
    if not claimed:
        return BatchOutcome()
    stored = restore_stored_predictions(model, claimed)
    if stored is None:
        return BatchOutcome()  # demoted meanwhile: production's re-classification takes the images
    to_predict = [image for image in claimed if image.pk not in stored]
    if not to_predict:
        return BatchOutcome(classified=sorted(stored))
    try:
        with ClaimRenewal(to_predict):
            engine = load_engine(model)
            results = predict(engine, to_predict)
    except BaseException:
        release(to_predict)  # a model or worker problem, not the images': let another attempt take them
        raise
    outcome = save_results(model, engine.classes, results)
    outcome.classified += sorted(stored)
    return outcome


def restore_stored_predictions(model: ModelVersion, images: list[SEMImage]) -> set[int] | None:
    """Images this model already predicted (a roll-back re-promotes an older model): copy, don't recompute.
    None when `model` is no longer production."""
    predictions = Prediction.objects.filter(model_version=model, image_id__in=[image.pk for image in images])
    now = timezone.now()
    restored = set()
    with transaction.atomic():
        if not predictions:
            return restored
        names = dict(Category.objects.values_list("slug", "name"))
        if lock_for_writing(model, [image.pk for image in images]) is None:
            return None
        for prediction in predictions:
            slugs = prediction.prediction_set if prediction.set_coverage is not None else None
            _mark_classified(prediction.image_id, model, prediction, _set_columns(slugs, names), now)
            restored.add(prediction.image_id)
    return restored


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
    from portal.services.queueing import enqueue_backlog

    current = production_model()
    if current is not None:
        enqueue_backlog(current.pk)


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


def predict(engine, images: list[SEMImage]) -> dict[int, ImageResult]:
    """{image id: its prediction, or why it has none}. One bad derivative fails only its image."""
    from portal.services.file_cache import local_derivatives

    results: dict[int, ImageResult] = {}
    present = [image for image in images if image.derivative]
    local = local_derivatives(media_storage(), [(image.derivative.name, image.sha256) for image in present])
    paths = {image.pk: local.get(image.derivative.name) for image in present}
    readable = [image for image in images if paths.get(image.pk) is not None]
    for image in images:
        if paths.get(image.pk) is None:
            results[image.pk] = Unclassifiable("The model-input derivative is missing")
    if not readable:
        return results
    flag_blank({image.pk: paths[image.pk] for image in readable})
    try:
        predictions = engine.predict_paths([paths[image.pk] for image in readable])
        results.update(zip([image.pk for image in readable], predictions))
        mark_trust(engine, [image.pk for image in readable], predictions)
    except Exception:
        # Rare: find the culprit by classifying one at a time rather than failing the batch.
        logger.warning(
            "classification batch of %d images failed; retrying them one by one (images %s)",
            len(readable),
            [image.pk for image in readable],
            exc_info=True,
        )
        for image in readable:
            results[image.pk] = _predict_one(engine, image, paths[image.pk])
    return results


def flag_blank(paths: dict[int, object]) -> None:
    """Mark images whose derivative is near-constant as blank: ingestion does it for new uploads, this
    catches images stored before it did. A fact about the file, whichever model classifies it."""
    from PIL import Image

    from portal.services.ingest_examine import is_blank

    blank = []
    for image_id, path in paths.items():
        try:
            with Image.open(path) as derivative:
                if is_blank(derivative.convert("L")):
                    blank.append(image_id)
        except Exception:  # an unreadable derivative: the engine reports it for its own image, not the batch
            continue
    if blank:
        SEMImage.objects.filter(pk__in=blank, blank=False).update(blank=True)


def mark_trust(engine, image_ids: list[int], predictions: list) -> None:
    """Each prediction's conformal set at the lab's coverage (class names; None when the model has no
    calibration), and out of scope also for a blank frame or a colour image (SEMImage.nothing_to_classify):
    nothing in it for an SEM model to classify."""
    from classifier.conformal import prediction_sets

    calibration = engine.metadata.get("conformal")
    coverage = settings.SEM_PREDICTION_SET_COVERAGE
    probabilities = [prediction.probabilities for prediction in predictions]
    sets = prediction_sets(probabilities, calibration, engine.classes, coverage) if calibration else None
    excluded = SEMImage.objects.filter(SEMImage.nothing_to_classify(), pk__in=image_ids)
    outside = set(excluded.values_list("pk", flat=True))
    for index, (image_id, prediction) in enumerate(zip(image_ids, predictions)):
        prediction.prediction_set = sets[index] if sets is not None else None
        prediction.set_coverage = coverage if sets is not None else None
        prediction.out_of_scope = bool(prediction.out_of_scope or image_id in outside)


def _predict_one(engine, image: SEMImage, path) -> ImageResult:
    try:
        prediction = engine.predict_paths([path])[0]
        mark_trust(engine, [image.pk], [prediction])
        return prediction
    except Exception as error:
        logger.warning("image %s: classification failed: %s", image.pk, error)
        return Unclassifiable(f"Could not classify the derivative: {error}")


@transaction.atomic
def save_results(model: ModelVersion, classes: list[str], results: dict[int, ImageResult]) -> BatchOutcome:
    # Lock the rows: an image deleted meanwhile is skipped, and cannot vanish before the commit.
    present = lock_for_writing(model, list(results))
    if present is None:
        return BatchOutcome()
    already = set(
        Prediction.objects.filter(model_version=model, image_id__in=present).values_list("image_id", flat=True)
    )
    categories = _categories_for(classes)
    now = timezone.now()
    outcome = BatchOutcome()
    new_predictions, new_embeddings = [], []
    for image_id, result in results.items():
        if image_id not in present:
            continue
        failure = _failure(result, categories)
        if failure:
            _mark_failed(image_id, failure, now)
            outcome.failed.append(image_id)
            continue
        prediction = _prediction(image_id, model, classes, categories, result)
        if image_id not in already:
            new_predictions.append(prediction)
            new_embeddings += _embedding(image_id, model, result)
        set_columns = _set_columns(_slugs(getattr(result, "prediction_set", None), categories), _names(categories))
        _mark_classified(image_id, model, prediction, set_columns, now)
        outcome.classified.append(image_id)
    Prediction.objects.bulk_create(new_predictions, ignore_conflicts=True)
    Embedding.objects.bulk_create(new_embeddings, ignore_conflicts=True)
    if new_embeddings:
        transaction.on_commit(similar.bump_generation)  # the search matrix of this model grew
    if new_predictions:
        transaction.on_commit(_announce([p.image_id for p in new_predictions], model.pk))
    return outcome


def _failure(result: ImageResult, categories: dict[str, Category | None]) -> str:
    """Why `result` cannot be stored as a prediction ("" when it can)."""
    if isinstance(result, Unclassifiable):
        return result.reason
    if categories.get(result.top_class) is None:
        return f"Unknown class {result.top_class!r}"
    return ""


def _categories_for(classes: list[str]) -> dict[str, Category | None]:
    """Model class name -> Category (matched by name, then slug or dataset folder name)."""
    by_key: dict[str, Category] = {}
    for category in Category.objects.all():
        for key in (category.folder_name, category.slug, category.name):
            by_key[key] = category
    return {name: by_key.get(name) for name in classes}


def _prediction(image_id, model, classes, categories, result) -> Prediction:
    return Prediction(
        image_id=image_id,
        model_version=model,
        category=categories[result.top_class],
        confidence=float(result.confidence),
        margin=float(result.margin),
        entropy=float(result.entropy),
        probabilities={name: float(p) for name, p in zip(classes, result.probabilities)},
        prediction_set=_slugs(getattr(result, "prediction_set", None), categories) or [],
        set_coverage=getattr(result, "set_coverage", None),
        ood_score=getattr(result, "ood_score", None),
        out_of_scope=bool(getattr(result, "out_of_scope", False)),
    )


def _slugs(names: list[str] | None, categories: dict) -> list[str] | None:
    """Class names -> category slugs (a class without a category is left out); None stays None."""
    if names is None:
        return None
    return [categories[name].slug for name in names if categories.get(name) is not None]


def _names(categories: dict) -> dict[str, str]:
    return {category.slug: category.name for category in categories.values() if category is not None}


def _status(out_of_scope: bool) -> str:
    return SEMImage.Status.OUT_OF_SCOPE if out_of_scope else SEMImage.Status.CLASSIFIED


def _set_columns(slugs: list[str] | None, names: dict[str, str]) -> dict:
    """SEMImage's denormalised set columns for a set of category slugs (None: the model has no sets);
    ``names``: {slug: category name}."""
    if slugs is None:
        return {"predicted_set": [], "predicted_set_size": None, "predicted_set_label": ""}
    label = " or ".join(names.get(slug, slug) for slug in slugs) or "none of the categories"
    return {"predicted_set": slugs, "predicted_set_size": len(slugs), "predicted_set_label": label[:500]}


def _embedding(image_id, model, result) -> list[Embedding]:
    """The image's embedding from the same forward pass, if the model has one (feature-head models)."""
    if getattr(result, "embedding", None) is None:
        return []
    vector = similar.encode(result.embedding)
    return [Embedding(image_id=image_id, model_version=model, dimension=result.embedding.size, vector=vector)]


def _mark_classified(image_id: int, model: ModelVersion, prediction: Prediction, set_columns: dict, now) -> None:
    """Copy `prediction` (new or stored) into the image's denormalised columns and release its claim."""
    SEMImage.objects.filter(pk=image_id).update(
        status=_status(prediction.out_of_scope),
        status_changed_at=now,
        claimed_at=None,
        error="",
        predicted_category_id=prediction.category_id,
        predicted_confidence=prediction.confidence,
        predicted_margin=prediction.margin,
        predicted_by=model,
        **set_columns,
    )


def _mark_failed(image_id: int, message: str, now) -> None:
    SEMImage.objects.filter(pk=image_id).update(
        status=SEMImage.Status.FAILED, status_changed_at=now, claimed_at=None, error=message[:2000]
    )


def _announce(image_ids: list[int], model_version_id: int):
    return lambda: events.emit("image.classified", image_ids=image_ids, model_version_id=model_version_id)


# --- Background re-classification after a promotion ----------------------------------------------


def classify_backlog_batch(model_version_id: int) -> bool:
    """Classify the next batch the production model has not seen yet; True while more remain.

    Works newest first, one batch per task, so uploads queued meanwhile run between batches.
    """
    model = production_model()
    if model is None or model.pk != model_version_id:
        return False  # a newer promotion started its own backlog
    now = timezone.now()
    ids = list(
        needing(model)
        .filter(unclaimed(now))
        .order_by("-pk")
        .values_list("pk", flat=True)[: settings.SEM_CLASSIFY_BATCH_SIZE]
    )
    if not ids:
        return False
    classify_images(ids)
    return needing(model).filter(unclaimed(timezone.now())).exists()


# --- Sweeper ------------------------------------------------------------------------------------


def sweep_stale_images() -> int:
    """Re-queue images pending too long whose message is lost (a broker restarted empty, a send that
    failed) or whose worker died (its claim was no longer renewed). Returns how many.

    An image whose message is merely waiting in the queue is left alone: re-sending it would only
    double the queue (portal.services.broker_queue)."""
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
    from portal.services import broker_queue, queueing

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
    from portal.services import broker_queue, queueing

    waiting = broker_queue.waiting_args(queueing.RECLASSIFY_BACKLOG) or []
    return any(args[:1] == [model.pk] for args in waiting)
