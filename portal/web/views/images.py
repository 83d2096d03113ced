"""Image detail, one-click correction, and the permission-checked file downloads."""

from __future__ import annotations

import errno
import logging
import mimetypes
from pathlib import PurePath

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from portal.downloads import stored_file_response
from portal.models import Category, Label, ModelVersion, SEMImage
from portal.permissions import can_curate_image, visible_images
from portal.services.curation.labels import set_label, undo_label
from portal.services.ingestion.validation_errors import ValidationError
from portal.storage import media_storage
from portal.web.access import member_required, posted_category_or_404
from portal.web.renditions import rendition_name

logger = logging.getLogger(__name__)

RENDITION_RETRY_AFTER_S = 60

# Only types a browser renders as images; anything else is served as a download.
SAFE_IMAGE_TYPES = {"image/png", "image/jpeg", "image/bmp", "image/tiff", "image/webp"}
ORIGINAL_TYPES = {"TIFF": "image/tiff", "PNG": "image/png", "JPEG": "image/jpeg", "BMP": "image/bmp"}


def visible_image_or_404(user, pk: int) -> SEMImage:
    related = (
        "sample__project",
        "sample__owner",
        "uploaded_by",
        "predicted_category",
        "curated_category",
        "predicted_by",
    )
    return get_object_or_404(visible_images(user).select_related(*related), pk=pk)


@member_required
def image_detail(request, pk: int):
    image = visible_image_or_404(request.user, pk)
    predictions = list(
        image.predictions.select_related("model_version", "category").order_by("-model_version__version")
    )
    for prediction in predictions:
        prediction.ranked = sorted(prediction.probabilities.items(), key=lambda item: item[1], reverse=True)
    production, similar = similar_context(request.user, image)
    context = {
        "image": image,
        "predictions": predictions,
        "labels": image.labels.select_related("category", "created_by").order_by("-created_at", "-id"),
        "can_curate": can_curate_image(request.user, image),
        "categories": Category.objects.filter(active=True),
        "instrument_rows": instrument_rows(image),
        **near_duplicate_context(request.user, image),
        "similar": similar,
        # The heat map explains the production model (the one similar images use); it needs a derivative.
        "heatmap_model": production if image.derivative else None,
        "coverage": settings.SEM_PREDICTION_SET_COVERAGE,
    }
    return render(request, "portal/image_detail.html", context)


def similar_context(user, image: SEMImage) -> tuple[ModelVersion | None, list[dict]]:
    """The production model, and the curated images most like this one that the user may see (its
    embeddings)."""
    from portal.services.curation.similar import similar_images

    model, found = similar_images(user, image)
    return model, [{"image": other, "score": score} for other, score in found]


def near_duplicate_context(user, image: SEMImage) -> dict:
    """The image's closest earlier near-duplicate and the other images of its group that the user may see."""
    from portal.services.ingestion.near_duplicates import visible_group_members, visible_near_duplicate

    members, member_count = visible_group_members(user, image)
    return {
        "near_duplicate": visible_near_duplicate(user, image),
        "group_members": members,
        "group_member_count": member_count,
    }


def instrument_rows(image: SEMImage) -> list[tuple[str, str]]:
    values = [
        ("Vendor", image.vendor),
        ("Model", image.instrument_model),
        ("Accelerating voltage", _unit(image.accelerating_voltage_kv, "kV")),
        ("Working distance", _unit(image.working_distance_mm, "mm")),
        ("Magnification", f"{image.magnification:,.0f}×" if image.magnification else ""),
        ("Pixel size", _unit(image.pixel_size_nm, "nm")),
        ("Detector", image.detector),
        ("Acquired", image.acquired_at.strftime("%Y-%m-%d %H:%M") if image.acquired_at else ""),
    ]
    return [(name, value) for name, value in values if value]


def _unit(value: float | None, unit: str) -> str:
    return f"{value:.4g} {unit}" if value is not None else ""


def curatable_image_or_404(user, pk: int, action: str) -> SEMImage:
    """The image if ``user`` may see it (else 404) and curate it (else 403, naming ``action``)."""
    image = visible_image_or_404(user, pk)
    if not can_curate_image(user, image):
        raise PermissionDenied(f"{action} needs the curator role in this project.")
    return image


# The relabel a confusion cell page offers to undo: {"label": id, "image": filename} in the session.
RELABEL_UNDO_KEY = "relabel_undo"
CONFUSION_CELL_FORM = "confusion_cell"  # the `from` field of a confusion cell's relabel form


@member_required
@require_POST
def set_image_label(request, pk: int):
    """One-click correction from the detail page and the confusion-matrix cell pages (recorded as such)."""
    image = curatable_image_or_404(request.user, pk, "Correcting labels")
    category = posted_category_or_404(request)
    from_cell = request.POST.get("from") == CONFUSION_CELL_FORM
    source = Label.Source.CONFUSION_CELL if from_cell else Label.Source.IMAGE_PAGE
    previous = image.curated_category_id
    label = set_label(image, category, source=source, user=request.user)
    messages.success(request, f"{image.original_filename} labelled {category.name}.")
    if from_cell and label.category_id != previous:
        request.session[RELABEL_UNDO_KEY] = {"label": label.pk, "image": image.original_filename}
    return redirect(_safe_next(request) or image_url(image))


@member_required
@require_POST
def undo_relabel(request, label_id: int):
    """Withdraw the user's last relabel from a confusion cell, if nothing relabelled the image since."""
    offered = request.session.get(RELABEL_UNDO_KEY) or {}
    label = Label.objects.filter(pk=label_id, created_by=request.user).select_related("image").first()
    if offered.get("label") != label_id or label is None:
        raise Http404("Nothing to undo.")
    del request.session[RELABEL_UNDO_KEY]
    if not can_curate_image(request.user, label.image):
        raise PermissionDenied("Correcting labels needs the curator role in this project.")
    if not label.is_current:
        messages.warning(request, f"{label.image.original_filename} was relabelled since; nothing undone.")
    else:
        previous = undo_label(label)
        again = previous.category.name if previous else "unlabelled"
        messages.success(request, f"Relabel of {label.image.original_filename} undone: {again} again.")
    return redirect(_safe_next(request) or image_url(label.image))


def relabel_undo_offer(request) -> dict | None:
    """The relabel the page may offer to undo (the user's last one from a confusion cell, while it is
    still the image's label), or None."""
    offered = request.session.get(RELABEL_UNDO_KEY)
    if offered and not Label.objects.filter(pk=offered.get("label"), is_current=True).exists():
        del request.session[RELABEL_UNDO_KEY]
        return None
    return offered


@member_required
@require_POST
def set_not_classifiable(request, pk: int):
    """A curator marks the image "not SEM / not classifiable" (value 1) or withdraws the mark (value 0)."""
    from portal.services.curation.labels import mark_not_classifiable

    image = curatable_image_or_404(request.user, pk, "Marking images")
    value = request.POST.get("value", "1") == "1"
    mark_not_classifiable(image, value)
    verdict = "marked not SEM / not classifiable: kept, left out of training" if value else "classifiable again"
    messages.success(request, f"{image.original_filename} {verdict}.")
    return redirect(_safe_next(request) or image_url(image))


def image_url(image: SEMImage) -> str:
    return reverse("web:image_detail", args=[image.pk])


def _safe_next(request) -> str | None:
    target = request.POST.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return target
    return None


# --- files -------------------------------------------------------------------------------------


def _file_response(storage, name: str, *, content_type: str, filename: str, attachment: bool) -> HttpResponse:
    if content_type not in SAFE_IMAGE_TYPES:
        content_type, attachment = "application/octet-stream", True
    try:
        response = stored_file_response(
            storage, name, content_type=content_type, filename=filename, attachment=attachment
        )
    except FileNotFoundError:
        logger.error("stored file %s is missing", name)
        raise Http404("The stored file is missing.") from None
    if isinstance(response, FileResponse):
        # Files of a given URL never change (content-addressed); private: they are permission-checked.
        response["Cache-Control"] = "private, max-age=86400"
    return response


@member_required
def image_original(request, pk: int):
    image = visible_image_or_404(request.user, pk)
    content_type = ORIGINAL_TYPES.get(image.format.upper(), "application/octet-stream")
    return _file_response(
        image.original.storage,
        image.original.name,
        content_type=content_type,
        filename=image.original_filename,
        attachment=True,
    )


@member_required
def image_derived(request, pk: int, kind: str):
    """The thumbnail and the model-input derivative made at ingestion."""
    image = visible_image_or_404(request.user, pk)
    stored = getattr(image, kind)
    if not stored:
        raise Http404("This image has no such file.")
    content_type = mimetypes.guess_type(stored.name)[0] or "application/octet-stream"
    stem = PurePath(image.original_filename).stem
    return _file_response(
        stored.storage,
        stored.name,
        content_type=content_type,
        filename=f"{stem}-{kind}{PurePath(stored.name).suffix}",
        attachment=False,
    )


@member_required
def image_rendition(request, pk: int, kind: str):
    """A browser-displayable PNG of the original (full resolution for the zoomable view)."""
    image = visible_image_or_404(request.user, pk)
    stem = PurePath(image.original_filename).stem
    try:
        name = rendition_name(image, kind)
    except ValidationError as error:
        # Stored before today's checks and refused by them (or by the capped decoder): nothing to show.
        logger.warning("no %s rendition of image %s: %s (%s)", kind, image.pk, error.code, error.message)
        return HttpResponse(error.message, content_type="text/plain; charset=utf-8", status=422)
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # Made once and cached on the media disk: a full disk is the server's state, not a bug.
        logger.warning("no space left for the %s rendition of image %s: %s", kind, image.pk, error)
        response = HttpResponse(
            "The server has no storage space left to prepare this view; try again later.",
            content_type="text/plain; charset=utf-8",
            status=507,
        )
        response["Retry-After"] = str(RENDITION_RETRY_AFTER_S)
        return response
    return _file_response(
        media_storage(), name, content_type="image/png", filename=f"{stem}-{kind}.png", attachment=False
    )
