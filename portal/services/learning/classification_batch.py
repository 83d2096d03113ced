"""One classification batch from claim to stored results (workers.tasks.classify_images), and the
background re-classification after a promotion, one batch per task (workers.tasks.reclassify_backlog)."""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from portal.services.learning.artifacts import load_engine
from portal.services.learning.classification import (
    ClaimRenewal,
    claim,
    needing,
    park_without_model,
    production_model,
    release,
    unclaimed,
)
from portal.services.learning.classification_inference import predict
from portal.services.learning.classification_results import BatchOutcome, restore_stored_predictions, save_results


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
