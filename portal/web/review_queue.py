"""The review queue: which image a curator sees next, and the per-session skip and undo lists.

Order: images without a curated label, most uncertain first (smallest margin between the model's
top two classes; not yet classified images last), then images whose current prediction disagrees
with a curated label that no reviewer has confirmed yet (a label from upload, import or the API).
"""

from __future__ import annotations

from django.db.models import Exists, F, OuterRef, QuerySet

from portal.models import Category, Label, Prediction, SEMImage
from portal.permissions import curated_projects

SKIPPED_KEY = "review_skipped"
UNDO_KEY = "review_undo"
MAX_REMEMBERED = 500  # bounded session size: older skips and undo steps are forgotten
# Labels a curator set while looking at the image: in the review queue or on the image page.
CHECKED_SOURCES = (Label.Source.REVIEW, Label.Source.IMAGE_PAGE)


def unlabelled(user) -> QuerySet[SEMImage]:
    return unlabelled_in(curatable(user))


def disputed(user) -> QuerySet[SEMImage]:
    return disputed_in(curatable(user))


def unlabelled_in(images: QuerySet[SEMImage]) -> QuerySet[SEMImage]:
    return images.filter(curated_category__isnull=True)


def disputed_in(images: QuerySet[SEMImage]) -> QuerySet[SEMImage]:
    """Images whose prediction disagrees with a curated label that no reviewer has confirmed."""
    reviewed = Label.objects.filter(image=OuterRef("pk"), is_current=True, source__in=CHECKED_SOURCES)
    return (
        images.filter(curated_category__isnull=False, predicted_category__isnull=False)
        .exclude(curated_category=F("predicted_category"))
        .exclude(Exists(reviewed))
    )


def curatable(user) -> QuerySet[SEMImage]:
    return SEMImage.objects.filter(sample__project__in=curated_projects(user))


def next_image(user, skipped: list[int]) -> tuple[SEMImage | None, str]:
    """The head of the queue and which part of it ("unlabelled" or "disputed") it came from."""
    related = ("sample__project", "predicted_category", "curated_category", "predicted_by")
    head = (
        unlabelled(user).exclude(pk__in=skipped).select_related(*related).defer("metadata")
        .order_by(F("predicted_margin").asc(nulls_last=True), "id").first()
    )
    if head:
        return head, "unlabelled"
    head = (
        disputed(user).exclude(pk__in=skipped).select_related(*related).defer("metadata")
        .order_by("-predicted_confidence", "id").first()
    )
    return head, "disputed"


def remaining(user) -> dict[str, int]:
    unlabelled_count = unlabelled(user).count()
    disputed_count = disputed(user).count()
    return {"unlabelled": unlabelled_count, "disputed": disputed_count, "total": unlabelled_count + disputed_count}


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
        for name, probability in ranked[:top] if name in categories
    ]


def bulk_candidates(user, min_confidence: float) -> QuerySet[SEMImage]:
    return unlabelled(user).filter(predicted_confidence__gte=min_confidence, predicted_category__isnull=False)


# --- per-session state -------------------------------------------------------------------------

def skipped_ids(session) -> list[int]:
    return session.get(SKIPPED_KEY, [])


def remember_skip(session, image_id: int) -> None:
    session[SKIPPED_KEY] = (skipped_ids(session) + [image_id])[-MAX_REMEMBERED:]


def forget_skips(session) -> None:
    session.pop(SKIPPED_KEY, None)


def push_undo(session, label_ids: list[int]) -> None:
    """One undo step: the labels one action created (a single key press, or a bulk acceptance)."""
    _push_step(session, label_ids)


def push_skip_undo(session, image_id: int) -> None:
    """A skip is an action too: U right after S brings the skipped image back."""
    _push_step(session, {"skip": image_id})


def _push_step(session, step) -> None:
    steps = session.get(UNDO_KEY, [])
    session[UNDO_KEY] = (steps + [step])[-50:]


def pop_undo(session) -> list[int] | dict | None:
    """The last step: a list of label ids, or {"skip": image id}."""
    steps = session.get(UNDO_KEY, [])
    if not steps:
        return None
    session[UNDO_KEY] = steps[:-1]
    return steps[-1]


def forget_skip(session, image_id: int) -> None:
    """Undo one skip: the image's latest entry leaves the skipped list."""
    skipped = list(skipped_ids(session))
    if image_id in skipped:
        skipped.reverse()
        skipped.remove(image_id)
        skipped.reverse()
        session[SKIPPED_KEY] = skipped


def undo_depth(session) -> int:
    return len(session.get(UNDO_KEY, []))
