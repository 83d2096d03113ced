"""Review orders and why each image is in the queue (issue 25).

Two orders of the unlabelled part of the review queue, both with out-of-scope images first:

* ``uncertain`` (the default): prediction sets of several categories, then the smallest top-2 margin
  (`portal.services.curation.review.ordered_unlabelled`).
* ``teach`` ("teach the model most"): `classifier.active.select_batch` over the production model's stored
  embeddings of the images of the curator's projects (typical images of uncovered clusters while some
  category has fewer than SEM_MIN_IMAGES_PER_CLASS curated labels, then the smallest margins with at
  most one image per cluster), then the rest in the ``uncertain`` order.

`select_batch` runs KMeans and nearest neighbours (scikit-learn), so it never runs per request: a batch is
computed for a model version, a set of projects and the label count of that moment, kept in the Django
cache, and served until the curator has labelled or skipped all of it (or the production model changes);
then the next request computes the next batch from the labels given meanwhile. Its cost is measured in
bench/RESULTS.md ("Active learning").

Without a production model there are no embeddings and no predictions: the page says what the lab must
do instead (`cold_start`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.core.cache import cache

from portal.models import Category, Embedding, Label, ModelVersion, Prediction, SEMImage
from portal.rates import percent

logger = logging.getLogger(__name__)

UNCERTAIN = "uncertain"
TEACH = "teach"
DEFAULT_ORDER = UNCERTAIN
ORDERS = {
    UNCERTAIN: "Model least sure first",
    TEACH: "Teach the model most",
}
BATCH_SIZE = 20
CACHE_PREFIX = "review-order:v1"
CACHE_TIMEOUT_S = 24 * 3600


def parse_order(value) -> str:
    return value if value in ORDERS else DEFAULT_ORDER


@dataclass
class TeachBatch:
    """One computed batch: [(image id, reason)] for `model_version_id` at `labels_at` curated labels."""

    model_version_id: int
    projects: tuple[int, ...]
    labels_at: int
    picks: list[tuple[int, str]] = field(default_factory=list)
    phase: str = ""  # "typical" (cold start) or "uncertain"
    pool: int = 0  # images with an embedding in the scope
    computed_in_s: float = 0.0


def production_model() -> ModelVersion | None:
    return ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION).first()


def _key(model_id: int, projects: tuple[int, ...]) -> str:
    digest = hashlib.sha256(",".join(map(str, projects)).encode()).hexdigest()[:16]
    return f"{CACHE_PREFIX}:{model_id}:{digest}"


def _cache_get(key):
    from portal.services.curation.similar import CACHE_ERRORS

    try:
        return cache.get(key)
    except CACHE_ERRORS as error:  # the cache down: compute, rather than fail the page
        logger.warning("review order: cache unavailable: %s", error)
        return None


def _cache_set(key, value) -> None:
    from portal.services.curation.similar import CACHE_ERRORS

    try:
        cache.set(key, value, timeout=CACHE_TIMEOUT_S)
    except CACHE_ERRORS as error:
        logger.warning("review order: cache unavailable: %s", error)


def label_count(projects) -> int:
    return Label.objects.filter(is_current=True, image__sample__project__in=projects).count()


def teach_batch(
    model: ModelVersion, projects: tuple[int, ...], open_ids, seed: int = 0, compute: bool = True
) -> TeachBatch | None:
    """The cached batch for this model and these projects while one of its images is still open
    (``open_ids(ids)``: those of ``ids`` still unlabelled and not skipped) or no label changed since it was
    computed; else a new one, computed now."""
    key = _key(model.pk, projects)
    stored = _cache_get(key)
    if isinstance(stored, TeachBatch) and stored.model_version_id == model.pk and stored.projects == projects:
        # kept while some of it is open; a batch labelled or skipped through is recomputed only once the
        # label count moved (the same labels would pick the same images again)
        if not compute or open_ids([pk for pk, _ in stored.picks]) or stored.labels_at == label_count(projects):
            return stored
    if not compute:
        return None
    batch = compute_batch(model, projects, seed=seed)
    _cache_set(key, batch)
    return batch


def compute_batch(model: ModelVersion, projects, batch_size: int | None = None, seed: int = 0) -> TeachBatch:
    """`select_batch` over the stored embeddings of ``model`` for the images of ``projects`` (images marked
    "not SEM / not classifiable" left out): labelled = a curated label, probabilities = the model's."""
    from classifier.active import SAMPLER_DIMS, select_batch
    from portal.services.curation.similar import decode

    started = time.perf_counter()
    projects = tuple(projects)
    labels_at = label_count(projects)
    in_scope = {"image__sample__project__in": projects, "image__not_classifiable": False}
    rows = list(
        Embedding.objects.filter(model_version=model, **in_scope)
        .order_by("image_id")
        .values_list("image_id", "image__curated_category__name", "vector")
    )
    sizes = [len(row[2]) for row in rows]
    size = max(set(sizes), key=sizes.count) if rows else 0
    rows = [row for row in rows if len(row[2]) == size]
    batch = TeachBatch(model.pk, projects, labels_at, pool=len(rows))
    if not rows:
        return batch
    ids = np.array([row[0] for row in rows], dtype=np.int64)
    embeddings = np.empty((len(rows), size // 2), dtype=np.float32)
    for index, row in enumerate(rows):
        embeddings[index] = decode(row[2])
    labels = [row[1] for row in rows]
    labelled = np.array([label is not None for label in labels])
    classes = list(model.classes)
    position = {pk: index for index, pk in enumerate(ids.tolist())}
    probabilities = np.zeros((len(rows), len(classes)))
    predictions = Prediction.objects.filter(model_version=model, **in_scope).values_list("image_id", "probabilities")
    for image_id, stored in predictions.iterator(chunk_size=2000):
        index = position.get(image_id)
        if index is not None:
            probabilities[index] = [float(stored.get(name, 0.0)) for name in classes]
    picks = select_batch(
        embeddings,
        labelled,
        labels,
        probabilities if classes else None,
        batch_size or BATCH_SIZE,
        settings.SEM_MIN_IMAGES_PER_CLASS,
        seed,
        class_names=classes,
        sampler_dims=SAMPLER_DIMS,
    )
    batch.picks = [(int(ids[index]), reason) for index, reason in picks]
    batch.phase = "uncertain" if picks and picks[0][1].startswith("model unsure") else "typical"
    batch.computed_in_s = time.perf_counter() - started
    logger.info(
        "review order: batch of %d from %d embeddings (model v%s) in %.2f s",
        len(batch.picks),
        len(rows),
        model.version,
        batch.computed_in_s,
    )
    return batch


def stores_embeddings(model: ModelVersion | None) -> bool:
    """Whether the model stored any embedding (a fine-tuned torchvision/timm network stores none)."""
    return model is not None and Embedding.objects.filter(model_version=model).exists()


# --- why an image is in the queue ----------------------------------------------------------------


def explain(image: SEMImage, disputed: bool = False) -> str:
    """The reason shown on the Review page for an image of the ``uncertain`` order (``disputed``: from the
    queue's part where the model disagrees with an unchecked curated label)."""
    if disputed:
        return "the model disagrees with the curated label, which no curator has checked"
    if image.status == SEMImage.Status.OUT_OF_SCOPE:
        return f"out of scope: {image.out_of_scope_reason}"
    if image.predicted_set_size is not None and image.predicted_set_size > 1:
        return f"prediction set of {image.predicted_set_size} categories: {_set_names(image.predicted_set)}"
    if image.predicted_set_size == 0:
        return "empty prediction set: no category is likely enough at the lab's coverage"
    if not image.predicted_by_id:
        return "not classified yet"
    return unsure(image)


def unsure(image: SEMImage) -> str:
    stored = (
        Prediction.objects.filter(image=image, model_version_id=image.predicted_by_id)
        .values_list("probabilities", flat=True)
        .first()
    )
    if not stored:
        return "model unsure"
    ranked = sorted(stored.items(), key=lambda item: item[1], reverse=True)[:2]
    return "model unsure: " + " / ".join(f"{name} {percent(probability)}" for name, probability in ranked)


def _set_names(slugs) -> str:
    names = dict(Category.objects.filter(slug__in=list(slugs)).values_list("slug", "name"))
    return ", ".join(names.get(slug, slug) for slug in slugs)


# --- cold start ---------------------------------------------------------------------------------


def cold_start() -> dict | None:
    """None while a production model exists; else what the Review page tells the lab."""
    if production_model() is not None:
        return None
    from portal.models import TrainingRun
    from portal.services.learning.training import class_readiness

    rows = [row for row in class_readiness() if row["needed"]]
    return {
        "training": TrainingRun.objects.filter(active=True).first(),  # a first model on its way
        "min_images_per_class": settings.SEM_MIN_IMAGES_PER_CLASS,
        "not_ready": [row for row in rows if row["train_images"]],
        "not_started": [row["name"] for row in rows if not row["train_images"]],
    }
