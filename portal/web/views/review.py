"""Review queue for curators: one image at a time, driven by the keyboard (static/js/review.js).

Every action is a POST that redirects back to the queue, so the page always shows the server's
current head of the queue; skips and the undo stack live in the session.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from portal.models import Category, Label
from portal.rates import percent
from portal.services.curation import review_order
from portal.services.curation.labels import confirm_label, set_label, undo_label
from portal.web import review_queue as queue
from portal.web.access import curator_required, posted_category_or_404
from portal.web.forms import BulkAcceptForm

SHORTCUT_KEYS = "1234567890"


@curator_required
def review(request):
    categories = list(Category.objects.filter(active=True))
    chosen = queue.queue_filter(request.user, request.GET)
    skipped = queue.skipped_ids(request.session)
    image, part = queue.next_image(request.user, skipped, **chosen)
    # The image after this one, preloaded by the page so that the next key press shows it at once.
    after = queue.next_image(request.user, skipped + [image.pk], **chosen, compute=False)[0] if image else None
    if image is not None:
        image.review_reason = getattr(image, "review_reason", None) or review_order.explain(
            image, part == queue.DISPUTED
        )
    context = {
        "image": image,
        "orders": review_order.ORDERS,
        "default_order": review_order.DEFAULT_ORDER,
        "teach_batch_size": review_order.BATCH_SIZE,
        "min_images_per_class": settings.SEM_MIN_IMAGES_PER_CLASS,
        "cold_start": review_order.cold_start(),
        "no_embeddings": chosen["order"] == review_order.TEACH
        and not review_order.stores_embeddings(review_order.production_model()),
        "next_image": after,
        "part": part,
        "chosen": chosen,
        "filter_query": queue.filter_query(chosen),
        "remaining": queue.remaining(request.user, chosen["project_id"]),
        "by_project": queue.remaining_by_project(request.user),
        "skipped": len(skipped),
        "can_undo": queue.undo_depth(request.session) > 0,
        "shortcuts": list(zip(SHORTCUT_KEYS, categories)),
        "suggestions": queue.suggestions(image, {c.name: c for c in categories}) if image else [],
        "bulk_form": BulkAcceptForm(),
        "bulk_counts": queue.bulk_counts(request.user, chosen["project_id"]),
        **refit_note(),
        "production_guessing": _guessing(review_order.production_model()),
    }
    return render(request, "portal/review.html", context)


def _guessing(model):
    """``model`` when it is no better than guessing (every answer uncertain, none bulk-accepted), else None."""
    return model if model is not None and model.uncertain_below > 1.0 else None


def refit_note() -> dict:
    """What happens to the labels of this session: the head refit that follows a pause (when production
    can take one; training.refit_after_review)."""
    from portal.services.learning.training import refit_unavailable

    refits = bool(settings.SEM_REFIT_MIN_NEW_LABELS) and not refit_unavailable()
    return {
        "refit_after_review": refits,
        "refit_min_labels": settings.SEM_REFIT_MIN_NEW_LABELS,
        "refit_quiet_min": f"{settings.SEM_REFIT_QUIET_S / 60:g}",
    }


def back_to_queue(request):
    """The queue again, with the filters the action was posted under."""
    return redirect(reverse("web:review") + queue.filter_query(queue.queue_filter(request.user, request.GET)))


@curator_required
@require_POST
def review_label(request, pk: int):
    """Number keys and Enter: label the image; the same category as its curated label confirms it."""
    image = get_object_or_404(queue.curatable(request.user), pk=pk)
    category = posted_category_or_404(request)
    if image.curated_category_id == category.pk:
        label = confirm_label(image, user=request.user, note="confirmed in the review queue")
    else:
        label = set_label(image, category, source=Label.Source.REVIEW, user=request.user)
    queue.push_undo(request.session, [label.pk])
    return back_to_queue(request)


@curator_required
@require_POST
def review_skip(request, pk: int):
    queue.remember_skip(request.session, pk)
    queue.push_skip_undo(request.session, pk)
    return back_to_queue(request)


@curator_required
@require_POST
def review_unskip(request):
    queue.forget_skips(request.session)
    return back_to_queue(request)


@curator_required
@require_POST
def review_undo(request):
    """Undo this session's last action: a skip brings the image back; labels are withdrawn and the
    previous label (if any) is current again."""
    label_ids = queue.pop_undo(request.session)
    if not label_ids:
        messages.info(request, "Nothing to undo.")
        return back_to_queue(request)
    if isinstance(label_ids, dict):
        queue.forget_skip(request.session, label_ids.get("skip"))
        messages.info(request, "Skip undone.")
        return back_to_queue(request)
    # Only this user's own labels, in projects they still curate.
    labels = Label.objects.filter(pk__in=label_ids, created_by=request.user, image__in=queue.curatable(request.user))
    with transaction.atomic():
        undone = [undo_label(label) for label in labels]
    messages.info(request, f"Undid {len(undone)} label{'s' if len(undone) != 1 else ''}.")
    return back_to_queue(request)


@curator_required
@require_POST
def review_bulk_accept(request):
    form = BulkAcceptForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a confidence between 50 and 100 %.")
        return back_to_queue(request)
    threshold = form.cleaned_data["min_confidence"]
    project_id = queue.queue_filter(request.user, request.GET)["project_id"]
    candidates = queue.bulk_candidates(request.user, threshold / 100, project_id).select_related("predicted_category")
    with transaction.atomic():
        created = [
            set_label(
                image,
                image.predicted_category,
                source=Label.Source.REVIEW,
                user=request.user,
                note=f"bulk acceptance at confidence ≥ {threshold} %",
            ).pk
            for image in candidates
        ]
    if created:
        queue.push_undo(request.session, created)
    messages.success(
        request,
        f"Accepted {len(created)} prediction{'s' if len(created) != 1 else ''} "
        f"at confidence ≥ {percent(threshold / 100)} (U undoes).",
    )
    return back_to_queue(request)
