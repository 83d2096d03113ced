"""Upload page: pick or create a sample, then the page's script posts each file to upload_file
(one ingest_file call per file) and polls upload_status until every image is classified."""

from __future__ import annotations

from django.contrib import messages
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from portal.models import Category, Label, SEMImage
from portal.permissions import can_upload_to, curated_projects, visible_images, visible_samples
from portal.representations import SUMMARY_RELATED, image_summary
from portal.services.learning.classification import production_model
from portal.web.access import member_required, member_required_json, parse_id
from portal.web.forms import SampleForm

MAX_STATUS_IDS = 500


@member_required
def upload_page(request):
    form = SampleForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        sample = form.save(commit=False)
        sample.owner = request.user
        sample.save()
        messages.success(request, f"Sample {sample.lab_sample_id} created.")
        return redirect(f"{reverse('web:upload')}?sample={sample.pk}")
    samples = visible_samples(request.user).select_related("project").order_by("project__name", "lab_sample_id")
    selected = _selected_sample(request, samples)
    curated_ids = set(curated_projects(request.user).values_list("pk", flat=True))
    context = {
        "sample_form": form,
        "samples": samples,
        "selected": selected,
        "curated_project_ids": curated_ids,
        "can_label": selected is not None and selected.project_id in curated_ids,
        "categories": Category.objects.filter(active=True),
        "production_model": production_model(),
    }
    return render(request, "portal/upload.html", context)


LAST_SAMPLE_KEY = "upload_last_sample"


def _selected_sample(request, samples):
    """?sample=, else the sample this user last uploaded to (remembered in the session by upload_file),
    so coming back to Upload does not mean choosing it again."""
    wanted = _int(request.GET.get("sample")) or request.session.get(LAST_SAMPLE_KEY)
    return samples.filter(pk=wanted).first() if wanted else None


@member_required_json
@require_POST
def upload_file(request):
    """Store one file through the ingestion service; answers stored, duplicate or rejected."""
    from portal.services.ingestion.ingest import ingest_file
    from portal.services.ingestion.ingest_errors import IngestError, StorageFull

    sample = visible_samples(request.user).filter(pk=_int(request.POST.get("sample"))).first()
    if sample is None or not can_upload_to(request.user, sample):
        return JsonResponse({"outcome": "rejected", "reason": "Choose one of your samples first."}, status=404)
    upload = request.FILES.get("file")
    if upload is None:
        return JsonResponse({"outcome": "rejected", "reason": "No file in the request."}, status=400)
    request.session[LAST_SAMPLE_KEY] = sample.pk
    label = _upload_label(request, sample)
    try:
        result = ingest_file(
            upload,
            filename=upload.name,
            sample=sample,
            uploaded_by=request.user,
            label=label,
            label_source=Label.Source.UPLOAD,
        )
    except IngestError as error:
        return JsonResponse(
            {"outcome": "rejected", "filename": upload.name, "code": error.code, "reason": error.message}, status=422
        )
    except StorageFull as error:
        return JsonResponse(
            {"outcome": "rejected", "filename": upload.name, "code": error.code, "reason": error.message}, status=507
        )
    return JsonResponse(
        _outcome(request.user, result.image, result.created, upload.name), status=201 if result.created else 200
    )


def _upload_label(request, sample) -> Category | None:
    """A known category given at upload is a curated label: only curators of the project may set it."""
    category_id = _int(request.POST.get("category"))
    if not category_id or not curated_projects(request.user).filter(pk=sample.project_id).exists():
        return None
    return Category.objects.filter(pk=category_id, active=True).first()


def _outcome(user, image: SEMImage, created: bool, filename: str) -> dict:
    if created:
        return {
            "outcome": "stored",
            "filename": filename,
            **image_status(image),
            "near_duplicate_of": near_duplicate_link(user, image),
        }
    # The same bytes are already stored, possibly in a project this user cannot see: link it only
    # when visible, and never reveal anything about an invisible one.
    visible = visible_images(user).filter(pk=image.pk).exists()
    duplicate = {"outcome": "duplicate", "filename": filename}
    if visible:
        duplicate.update(image_status(image), existing_filename=image.original_filename)
    return duplicate


def near_duplicate_link(user, image: SEMImage) -> dict | None:
    """The stored image's closest earlier near-duplicate (issue 13), when the user may see it: its side of
    the split follows that image's group."""
    from portal.services.ingestion.near_duplicates import visible_near_duplicate

    other = visible_near_duplicate(user, image)
    if other is None:
        return None
    return {"id": other.pk, "url": reverse("web:image_detail", args=[other.pk]), "filename": other.original_filename}


def image_status(image: SEMImage) -> dict:
    """The shared image representation (portal.representations, as the API and the webhooks name it) and
    what the page shows: its links and display names."""
    return {
        **image_summary(image),
        "url": reverse("web:image_detail", args=[image.pk]),
        "thumbnail": reverse("web:image_thumbnail", args=[image.pk]),
        "status_display": image.get_status_display(),
        "predicted_category_name": image.predicted_category.name if image.predicted_category_id else None,
        # Below what its model reaches reliably, or a blank frame: the page says "uncertain" (issue 23).
        "prediction_uncertain": image.prediction_uncertain,
        "blank": image.blank,
        # The page names a duplicate by the stored image's file name; the status poll must keep saying it
        # (before, the first poll turned "Duplicate of scan.tif" into "Duplicate of an existing image").
        "existing_filename": image.original_filename,
    }


@member_required_json
@require_GET
def upload_status(request):
    """Live status of the given images (the upload page polls this until all are classified)."""
    ids = [parse_id(part) for part in request.GET.get("ids", "").split(",")]
    ids = [pk for pk in ids if pk is not None][:MAX_STATUS_IDS]
    images = visible_images(request.user).filter(pk__in=ids).select_related(*SUMMARY_RELATED)
    return JsonResponse({"images": [image_status(image) for image in images]})


def _int(value) -> int | None:
    return parse_id(value)
