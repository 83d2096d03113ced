"""The review queue, one rule for the web page and the REST API.

Order: images without a curated label (and not marked "not SEM / not classifiable"): out-of-scope
images first (unlike anything the model learnt from, or blank), then predictions whose conformal set is
not one category (several, or none, at the lab's coverage), then the rest; within each, most uncertain
first (smallest margin between the model's top two classes; not yet classified images last), then images whose current prediction disagrees
with a curated label that no curator has checked yet (a label from upload, import or the API), the
most confident disagreement first (likely label mistakes). A label set or confirmed in the review
queue or on the image page counts as checked: such an image leaves the queue.

Per-session state (skips, undo) belongs to the web UI (`portal.web.review_queue`).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Case, Exists, F, IntegerField, OuterRef, Q, QuerySet, Value, When

from portal.models import Category, Label, Prediction, SEMImage
from portal.permissions import curated_projects

# Labels a curator set while looking at the image: in the review queue or on the image page.
CHECKED_SOURCES = (Label.Source.REVIEW, Label.Source.IMAGE_PAGE, Label.Source.CONFUSION_CELL)

UNLABELLED = "unlabelled"
DISPUTED = "disputed"


def curatable(user, project_id: int | None = None) -> QuerySet[SEMImage]:
    """The images of the projects the user curates (optionally only one of them)."""
    projects = curated_projects(user)
    if project_id is not None:
        projects = projects.filter(pk=project_id)
    return SEMImage.objects.filter(sample__project__in=projects)


def unlabelled_in(images: QuerySet[SEMImage]) -> QuerySet[SEMImage]:
    return images.filter(curated_category__isnull=True, not_classifiable=False)


def disputed_in(images: QuerySet[SEMImage]) -> QuerySet[SEMImage]:
    """Images whose prediction disagrees with a curated label that no curator has checked."""
    checked = Label.objects.filter(image=OuterRef("pk"), is_current=True, source__in=CHECKED_SOURCES)
    return (
        images.filter(curated_category__isnull=False, predicted_category__isnull=False, not_classifiable=False)
        .exclude(curated_category=F("predicted_category"))
        .exclude(Exists(checked))
    )


def unlabelled(user, project_id: int | None = None) -> QuerySet[SEMImage]:
    return unlabelled_in(curatable(user, project_id))


def disputed(user, project_id: int | None = None) -> QuerySet[SEMImage]:
    return disputed_in(curatable(user, project_id))


# Review priority of an unlabelled image: 0 out of scope, 1 a set of other than one category, 2 the rest.
TRUST_PRIORITY = Case(
    When(status=SEMImage.Status.OUT_OF_SCOPE, then=Value(0)),
    When(Q(predicted_set_size__isnull=False) & ~Q(predicted_set_size=1), then=Value(1)),
    default=Value(2),
    output_field=IntegerField(),
)


def ordered_unlabelled(images: QuerySet[SEMImage]) -> QuerySet[SEMImage]:
    return (
        unlabelled_in(images)
        .annotate(trust_priority=TRUST_PRIORITY)
        .order_by("trust_priority", F("predicted_margin").asc(nulls_last=True), "id")
    )


def ordered_disputed(images: QuerySet[SEMImage]) -> QuerySet[SEMImage]:
    return disputed_in(images).order_by(F("predicted_confidence").desc(nulls_last=True), "id")


def queue(
    user,
    limit: int,
    *,
    project_id: int | None = None,
    reason: str | None = None,
    exclude: Iterable[int] = (),
    related: Iterable[str] = (),
    order: str = "uncertain",
    compute: bool = True,
) -> list[SEMImage]:
    """The first `limit` images of the queue (only one `reason`'s part of it when given). Each image
    carries `review_part` ("unlabelled" or "disputed"): which part of the queue it came from; in the
    "teach" order (`portal.services.curation.review_order`) an image picked for teaching carries `review_reason`;
    ``compute`` False uses the teaching batch in the cache and never computes one."""
    exclude = list(exclude)
    images = curatable(user, project_id).exclude(pk__in=exclude).defer("metadata")
    if related:
        images = images.select_related(*related)
    head = []
    if reason != DISPUTED:
        head = _teaching_head(user, images, limit, project_id, compute) if order == "teach" else []
        taken = [image.pk for image in head]
        head += list(ordered_unlabelled(images.exclude(pk__in=taken))[: limit - len(head)])
    for image in head:
        image.review_part = UNLABELLED
    if len(head) < limit and reason != UNLABELLED:
        disagreements = list(ordered_disputed(images)[: limit - len(head)])
        for image in disagreements:
            image.review_part = DISPUTED
        head += disagreements
    return head


def _teaching_head(
    user, images: QuerySet[SEMImage], limit: int, project_id: int | None, compute: bool = True
) -> list[SEMImage]:
    """Out-of-scope images first (as in every order), then the open images of the teaching batch."""
    from portal.services.curation import review_order

    waiting = unlabelled_in(images)
    head = list(ordered_unlabelled(waiting.filter(status=SEMImage.Status.OUT_OF_SCOPE))[:limit])
    model = review_order.production_model()
    if len(head) >= limit or model is None:
        return head
    projects = tuple(sorted(curatable_projects(user, project_id)))

    def open_ids(ids):
        return list(waiting.filter(pk__in=ids).values_list("pk", flat=True))

    batch = review_order.teach_batch(model, projects, open_ids, compute=compute)
    if batch is None:
        return head
    reasons = dict(batch.picks)
    found = {image.pk: image for image in waiting.filter(pk__in=list(reasons)).exclude(pk__in=[i.pk for i in head])}
    for pk, why in batch.picks:
        if pk in found and len(head) < limit:
            found[pk].review_reason = why
            head.append(found[pk])
    return head


def curatable_projects(user, project_id: int | None = None) -> list[int]:
    projects = curated_projects(user)
    if project_id is not None:
        projects = projects.filter(pk=project_id)
    return list(projects.values_list("pk", flat=True))


def next_image(
    user,
    skipped: Iterable[int] = (),
    *,
    project_id: int | None = None,
    reason: str | None = None,
    related: Iterable[str] = (),
    order: str = "uncertain",
    compute: bool = True,
) -> tuple[SEMImage | None, str]:
    """The head of the queue and which part of it ("unlabelled" or "disputed") it came from."""
    head = queue(
        user, 1, project_id=project_id, reason=reason, exclude=skipped, related=related, order=order, compute=compute
    )
    if not head:
        return None, DISPUTED
    return head[0], head[0].review_part


def remaining(user, project_id: int | None = None) -> dict[str, int]:
    unlabelled_count = unlabelled(user, project_id).count()
    disputed_count = disputed(user, project_id).count()
    return {"unlabelled": unlabelled_count, "disputed": disputed_count, "total": unlabelled_count + disputed_count}


def remaining_by_project(user) -> list[dict]:
    """[{"project": Project, "total": images left to review}] for each project the user curates."""
    from django.db.models import Count

    counts: dict[int, int] = {}
    for part in (unlabelled(user), disputed(user)):
        for row in part.values("sample__project").annotate(n=Count("id")).order_by():
            counts[row["sample__project"]] = counts.get(row["sample__project"], 0) + row["n"]
    return [{"project": project, "total": counts.get(project.pk, 0)} for project in curated_projects(user)]


def suggestions(image: SEMImage, categories: dict[str, Category], top: int = 3) -> list[dict]:
    """The current model's top classes for the image, with probabilities, best first."""
    if not image.predicted_by_id:
        return []
    prediction = Prediction.objects.filter(image=image, model_version_id=image.predicted_by_id).first()
    if not prediction:
        return []
    ranked = sorted(prediction.probabilities.items(), key=lambda item: item[1], reverse=True)
    return [
        {"category": categories[name], "probability": probability}
        for name, probability in ranked[:top]
        if name in categories
    ]


def confident_in(images: QuerySet[SEMImage]) -> QuerySet[SEMImage]:
    """Images whose prediction may count as confident: in scope, not blank, from a model better than
    guessing, and a one-category set where the model makes sets (SEMImage.prediction_uncertain's rule, as
    a query)."""
    several = Q(predicted_set_size__isnull=False) & ~Q(predicted_set_size=1)
    confident = images.exclude(status=SEMImage.Status.OUT_OF_SCOPE).exclude(blank=True).exclude(several)
    return confident.exclude(predicted_by__in=_guessing_models())


def _guessing_models() -> list[int]:
    """Model versions no better than always answering the largest class (ModelVersion.uncertain_below):
    every answer of theirs is uncertain, whatever its confidence. A lab keeps a few versions."""
    from portal.models import ModelVersion

    return [model.pk for model in ModelVersion.objects.only("pk", "metrics") if model.uncertain_below > 1.0]


def bulk_candidates(user, min_confidence: float, project_id: int | None = None) -> QuerySet[SEMImage]:
    """Unlabelled images whose prediction is at least this confident (bulk acceptance); never an
    out-of-scope image or a set of several categories."""
    return confident_in(unlabelled(user, project_id)).filter(
        predicted_confidence__gte=min_confidence, predicted_category__isnull=False
    )
