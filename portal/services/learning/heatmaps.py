"""Heat maps of where a model looked (Grad-CAM): requested by the viewer, computed once by a worker.

A request records a HeatMap row (unique per image and model version) and queues the worker task on
commit; a ready row is answered from its PNG without any work. The PNG's name carries the model's
artifact checksum and the image's sha256, so a file never describes another model or image. The
computation (classifier.saliency) runs only in the worker; the web process imports no ML library here.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import PurePath

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.utils import timezone

from portal.models import HeatMap, ModelVersion, Prediction, SEMImage
from portal.services.delivery import queueing
from portal.storage import media_storage

logger = logging.getLogger(__name__)


def model_for(version: int | None) -> ModelVersion | None:
    """The model version asked for, or production when none is named."""
    models = ModelVersion.objects.all()
    if version is None:
        return models.filter(status=ModelVersion.Status.PRODUCTION).first()
    return models.filter(version=version).first()


def find(image: SEMImage, model: ModelVersion) -> HeatMap | None:
    return HeatMap.objects.filter(image=image, model_version=model).first()


def request_heatmap(image: SEMImage, model: ModelVersion) -> HeatMap:
    """The image's heat map for ``model``, queued unless it is ready or already on its way. A failed one
    is queued again (the person asks again), and so are one pending for longer than the sweeper's grace
    period (its message was lost) and a ready one whose file is gone (a restored backup without it)."""
    heatmap = find(image, model)
    if heatmap is None:
        heatmap = _create(image, model)
    elif not _worth_resending(heatmap):
        return heatmap
    else:
        HeatMap.objects.filter(pk=heatmap.pk).update(
            status=HeatMap.Status.PENDING, error="", requested_at=timezone.now()
        )
        heatmap.refresh_from_db()
    transaction.on_commit(lambda: queueing.enqueue_heatmap(heatmap.pk))
    return heatmap


def _create(image: SEMImage, model: ModelVersion) -> HeatMap:
    try:
        with transaction.atomic():
            return HeatMap.objects.create(image=image, model_version=model, requested_at=timezone.now())
    except IntegrityError:  # two requests at once: the other one created it and queued the task
        return HeatMap.objects.get(image=image, model_version=model)


def _worth_resending(heatmap: HeatMap) -> bool:
    if heatmap.status == HeatMap.Status.READY:
        return not media_storage().exists(heatmap.file)
    if heatmap.status == HeatMap.Status.FAILED:
        return True
    return timezone.now() - heatmap.requested_at > timedelta(seconds=settings.SEM_PENDING_SWEEP_AFTER_S)


def storage_name(heatmap: HeatMap) -> str:
    sha = heatmap.image.sha256
    return f"heatmaps/{heatmap.model_version.artifact_sha256[:16] or heatmap.model_version_id}/{sha[:2]}/{sha}.png"


# --- in the worker ---------------------------------------------------------------------------------


def compute_heatmap(heatmap_id: int) -> str:
    """Compute and store one heat map; returns its status ("gone" when the row was deleted meanwhile)."""
    heatmap = HeatMap.objects.select_related("image", "model_version").filter(pk=heatmap_id).first()
    if heatmap is None:
        return "gone"  # the image or the model version was deleted since the request
    if heatmap.status == HeatMap.Status.READY:
        return heatmap.status  # a redelivered or repeated message: computed once
    try:
        result = _explain(heatmap)
    except Exception as error:  # recorded for the person who asked; the task itself does not retry
        logger.warning("heat map %s (image %s) failed: %s", heatmap.pk, heatmap.image_id, error, exc_info=True)
        return _finish(heatmap, status=HeatMap.Status.FAILED, error=_message(error))
    name, _created = media_storage().save_content_addressed(storage_name(heatmap), ContentFile(result["png"]))
    return _finish(heatmap, status=HeatMap.Status.READY, file=name, **result["fields"])


def _explain(heatmap: HeatMap) -> dict:
    """The PNG and the row's facts, from the worker's local copies of the derivative and the artifact."""
    from classifier.saliency import explain_path, get_explainer, heat_map_png
    from portal.services.delivery.file_cache import local_copy
    from portal.services.learning.artifacts import ensure_current_format, local_artifact

    image, model = heatmap.image, ensure_current_format(heatmap.model_version)
    if not image.derivative:
        raise FileNotFoundError("the image has no model-input derivative")
    name = image.derivative.name
    derivative = local_copy(media_storage(), name, key=image.sha256, suffix=PurePath(name).suffix)
    explainer = get_explainer(local_artifact(model), model.artifact_sha256 or None)
    explanation = explain_path(explainer, derivative, _predicted_index(heatmap, explainer.metadata["classes"]))
    fields = {
        "target_class": explanation.class_name,
        "target_layer": explanation.target_layer,
        "views": explanation.views,
        "seconds": round(explanation.seconds, 3),
    }
    return {"png": heat_map_png(explanation.cam, _image_size(derivative)), "fields": fields}


def _predicted_index(heatmap: HeatMap, classes: list[str]) -> int | None:
    """The class of the model's stored prediction of this image (what the page shows), so the map
    explains that prediction without one more forward pass; None before the model classified it."""
    probabilities = (
        Prediction.objects.filter(image_id=heatmap.image_id, model_version_id=heatmap.model_version_id)
        .values_list("probabilities", flat=True)
        .first()
    )
    if not probabilities:
        return None
    name = max(probabilities, key=probabilities.get)
    return classes.index(name) if name in classes else None


def _image_size(path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as picture:  # reads the header only
        return picture.size


def _message(error: Exception) -> str:
    from classifier.saliency import SaliencyError

    if isinstance(error, SaliencyError):
        return str(error)
    if isinstance(error, FileNotFoundError):
        return f"a file is missing: {error}"
    return f"{type(error).__name__}: {error}"[:500]


def _finish(heatmap: HeatMap, **fields) -> str:
    HeatMap.objects.filter(pk=heatmap.pk).update(finished_at=timezone.now(), **fields)
    return fields["status"]
