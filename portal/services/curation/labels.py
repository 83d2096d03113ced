"""Curated labels: one current label per image, with history; keeps SEMImage.curated_category in step."""

from __future__ import annotations

from django.db import transaction

from portal.models import Category, Label, SEMImage
from portal.services.curation import similar


@transaction.atomic
def set_label(image: SEMImage, category: Category, *, source: str, user=None, note: str = "") -> Label:
    """Record a new current label. Re-stating the current category is a no-op returning the current label."""
    locked = SEMImage.objects.select_for_update().get(pk=image.pk)
    current = Label.objects.filter(image=locked, is_current=True).first()
    if current and current.category_id == category.pk:
        return current
    if current:
        Label.objects.filter(pk=current.pk).update(is_current=False)
    label = Label.objects.create(image=locked, category=category, source=source, created_by=user, note=note)
    SEMImage.objects.filter(pk=locked.pk).update(curated_category=category)
    image.curated_category = category
    transaction.on_commit(lambda: _label_changed(label.pk))
    return label


@transaction.atomic
def undo_label(label: Label) -> Label | None:
    """Withdraw a label (the review queue's undo): the previous label, if any, becomes current again."""
    image = SEMImage.objects.select_for_update().get(pk=label.image_id)
    was_current = label.is_current
    withdrawn_id, withdrawn_category_id = label.pk, label.category_id
    label.delete()
    if not was_current:
        return Label.objects.filter(image=image, is_current=True).first()
    previous = Label.objects.filter(image=image).order_by("-created_at", "-id").first()
    if previous:
        Label.objects.filter(pk=previous.pk).update(is_current=True)
    SEMImage.objects.filter(pk=image.pk).update(curated_category=previous.category if previous else None)
    if previous is None or previous.category_id != withdrawn_category_id:
        # Subscribers (a LIMS) must drop the withdrawn label: the image's label is the previous one, or none.
        previous_id = previous.pk if previous else None
        transaction.on_commit(lambda: _label_changed(previous_id, image_id=image.pk, withdrawn_label_id=withdrawn_id))
    return previous


def _label_changed(label_id: int | None, **undo) -> None:
    """Hook for events (webhooks) once the label is committed; the workers package wires delivery.
    Also marks the similar-image matrices stale: an image may have joined or left the curated rows
    (undo_label calls this whenever it leaves an image without a label)."""
    from portal import events

    similar.bump_generation()
    events.emit_label_changed(label_id, **undo)


@transaction.atomic
def confirm_label(image: SEMImage, *, user, source: str = Label.Source.REVIEW, note: str = "") -> Label:
    """A reviewer confirms the current label (say, against a disagreeing prediction).

    Recorded as a new current label of the same category, so the history shows who checked it and
    when, and the review queue stops offering the image; undo_label withdraws it like any other.
    The category does not change, so no label.changed event is raised.
    """
    locked = SEMImage.objects.select_for_update().get(pk=image.pk)
    current = Label.objects.filter(image=locked, is_current=True).first()
    if current is None:
        raise ValueError(f"image {image.pk} has no current label to confirm")
    Label.objects.filter(pk=current.pk).update(is_current=False)
    return Label.objects.create(
        image=locked, category_id=current.category_id, source=source, created_by=user, note=note
    )


def mark_not_classifiable(image: SEMImage, value: bool = True) -> bool:
    """A curator's verdict that the image is not an SEM image or fits no category (or its withdrawal).
    The image and its labels are kept; training leaves it out (portal.services.learning.datasets.training_data)
    and the review queue no longer offers it. Returns whether anything changed."""
    changed = SEMImage.objects.filter(pk=image.pk).exclude(not_classifiable=value).update(not_classifiable=value)
    image.not_classifiable = value
    return bool(changed)
