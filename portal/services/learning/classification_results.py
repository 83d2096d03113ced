"""A batch's results stored: new predictions and embeddings (unique per image and model version, so a
batch that runs twice writes nothing twice), a roll-back's stored predictions copied instead of
recomputed, and either copied into the image's denormalised columns, while the batch's model is still
production (portal.services.learning.classification.lock_for_writing)."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from portal import events
from portal.models import Category, Embedding, ModelVersion, Prediction, SEMImage
from portal.services.curation import similar
from portal.services.learning.classification import lock_for_writing
from portal.services.learning.classification_inference import ImageResult, Unclassifiable


@dataclass
class BatchOutcome:
    """What one batch did with the images it was given (workers.tasks.classify_images reports it)."""

    classified: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    parked: int = 0  # set to "waiting for a first model"

    @property
    def claimed(self) -> int:
        return len(self.classified) + len(self.failed)


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
