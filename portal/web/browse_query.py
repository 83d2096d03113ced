"""The browse page's query: filters from BrowseFilterForm, one page of cards, no per-row queries."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from django.db.models import Q, QuerySet
from django.utils import timezone

from portal.models import SEMImage
from portal.permissions import visible_images
from portal.web.forms import BrowseFilterForm


def card_queryset(user) -> QuerySet[SEMImage]:
    """Images the user may see, with everything a thumbnail card shows joined in (no N+1)."""
    return (
        visible_images(user)
        .select_related("sample__project", "predicted_category", "curated_category", "uploaded_by", "predicted_by")
        # The parsed instrument metadata (and the model's training history) can be kilobytes per image and no
        # card shows it; the model's metrics say whether its prediction is uncertain.
        .defer("metadata", "predicted_by__metadata")
    )


def filtered_images(user, form: BrowseFilterForm) -> QuerySet[SEMImage]:
    images = card_queryset(user)
    if not form.is_valid():
        return images.order_by(*BrowseFilterForm.SORTS["newest"])
    data = form.cleaned_data
    images = images.filter(_filters(data))
    if data.get("sort") in ("confidence", "uncertain"):
        # Unclassified images have no confidence: keep them out of a confidence ordering.
        images = images.filter(predicted_confidence__isnull=False)
    return images.order_by(*form.order_by())


def _filters(data: dict) -> Q:
    condition = Q()
    if data.get("project"):
        condition &= Q(sample__project=data["project"])
    if data.get("sample"):
        condition &= Q(sample__lab_sample_id__icontains=data["sample"]) | Q(sample__name__icontains=data["sample"])
    if data.get("predicted"):
        condition &= Q(predicted_category_id=data["predicted"])
    condition &= _curated_filter(data.get("curated"))
    if data.get("conf_min") is not None:
        condition &= Q(predicted_confidence__gte=data["conf_min"] / 100)
    if data.get("conf_max") is not None:
        condition &= Q(predicted_confidence__lte=data["conf_max"] / 100)
    for field in ("status", "split"):
        if data.get(field):
            condition &= Q(**{field: data[field]})
    if data.get("uploader"):
        condition &= Q(uploaded_by=data["uploader"])
    # Whole days in the site's time zone, as a range on the indexed column (not a ::date cast).
    if data.get("date_from"):
        condition &= Q(uploaded_at__gte=_start_of_day(max(data["date_from"], _EARLIEST_DAY)))
    if data.get("date_to") and data["date_to"] < _LATEST_DAY:  # on or after it: no upper bound
        condition &= Q(uploaded_at__lt=_start_of_day(max(data["date_to"], _EARLIEST_DAY) + timedelta(days=1)))
    if data.get("instrument"):
        text = data["instrument"]
        condition &= Q(vendor__icontains=text) | Q(instrument_model__icontains=text) | Q(detector__icontains=text)
    return condition


def _curated_filter(value: str | None) -> Q:
    if not value:
        return Q()
    if value == BrowseFilterForm.UNLABELLED:
        return Q(curated_category__isnull=True)
    return Q(curated_category_id=int(value))


# The days whose midnight exists in every time zone (date.min's and date.max's do not: OverflowError).
_EARLIEST_DAY = date(2, 1, 1)
_LATEST_DAY = date(9998, 12, 31)


def _start_of_day(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))
