"""The production engine's predictions of a claimed batch (portal.services.learning.classification): one bad
derivative fails only its image; blank frames are flagged and called out of scope; each prediction gets
its conformal set at the lab's coverage.

torch and the classifier engine are imported only inside the functions that classify, so the web
process can import this module.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from django.conf import settings

from portal.models import SEMImage
from portal.storage import media_storage

if TYPE_CHECKING:
    from classifier.engine import ImagePrediction

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unclassifiable:
    """Why one image of a batch got no prediction (its derivative is missing or unreadable)."""

    reason: str


# What `predict` returns per image: classifier.engine.ImagePrediction, or why there is none.
ImageResult = Union["ImagePrediction", Unclassifiable]


def predict(engine, images: list[SEMImage]) -> dict[int, ImageResult]:
    """{image id: its prediction, or why it has none}. One bad derivative fails only its image. A head
    refit answers from its base model's stored embeddings where there are some; the rest go through the
    engine from their derivatives."""
    results: dict[int, ImageResult] = from_stored_embeddings(engine, [image.pk for image in images])
    if results:
        mark_trust(engine, list(results), list(results.values()))
    results.update(_predict_derivatives(engine, [image for image in images if image.pk not in results]))
    return results


def from_stored_embeddings(engine, image_ids: list[int], own_model=None) -> dict:
    """{image id: prediction} from the embeddings a model with the engine's body stored: a head refit's
    base (classifier/head_refit.py; its statistics are in the refit's artifact), and with ``own_model`` (the
    engine's ModelVersion) its own rows. No derivative is read and no body run; images without such an
    embedding are left out."""
    import numpy as np

    from portal.models import Embedding
    from portal.services.curation.similar import decode

    results: dict = {}
    for source, statistics in _embedding_sources(engine, own_model):
        wanted = [pk for pk in image_ids if pk not in results]
        rows = list(
            Embedding.objects.filter(model_version=source, image_id__in=wanted).values_list("image_id", "vector")
        )
        if rows:
            predictions = engine.predict_embeddings(np.stack([decode(vector) for _, vector in rows]), statistics)
            results.update(zip([pk for pk, _ in rows], predictions))
    return results


def _embedding_sources(engine, own_model) -> list[tuple]:
    """[(ModelVersion whose embeddings the engine can read, their statistics)]."""
    from portal.models import ModelVersion

    sources = []
    base_sha256 = (getattr(engine, "metadata", {}).get("refit_of") or {}).get("sha256")
    if base_sha256 and getattr(engine, "base_statistics", None) is not None:
        base = ModelVersion.objects.filter(artifact_sha256=base_sha256).first()
        if base is not None:
            sources.append((base, engine.base_statistics))
    own = engine.own_statistics() if own_model is not None and hasattr(engine, "own_statistics") else None
    if own is not None:
        sources.append((own_model, own))
    return sources


def _predict_derivatives(engine, images: list[SEMImage]) -> dict[int, ImageResult]:
    from portal.services.delivery.file_cache import local_derivatives

    results: dict[int, ImageResult] = {}
    if not images:
        return results
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

    from portal.services.ingestion.ingest_examine import is_blank

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
