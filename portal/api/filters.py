"""django-filter sets: the browse page's filters, as query parameters."""

from __future__ import annotations

import datetime

import django_filters
from django import forms
from django.db.models import Q
from drf_spectacular.utils import extend_schema_field

from portal.models import Prediction, Sample, SEMImage, TrainingRun

MAX_ID = 2**63 - 1  # PostgreSQL bigint


class IdFilter(django_filters.NumberFilter):
    """A whole number: `1.5` is an error, not silently id 1. A number no row can have (beyond a bigint)
    matches nothing, like any other id that does not exist, instead of a database error."""

    field_class = forms.IntegerField

    def filter(self, qs, value):
        if value is not None and not -MAX_ID <= value <= MAX_ID:
            return qs.none()
        return super().filter(qs, value)


@extend_schema_field({"type": "number", "minimum": 0, "maximum": 1})
class ConfidenceFilter(django_filters.NumberFilter):
    """A confidence, 0 to 1: the schema and the check agree (django-filter's default allows up to 1e50)."""

    field_class = forms.FloatField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 0.0)
        kwargs.setdefault("max_value", 1.0)
        super().__init__(*args, **kwargs)


class UtcIsoDateTimeField(django_filters.fields.IsoDateTimeField):
    """ISO 8601, converted to UTC: PostgreSQL refuses offsets beyond +-15:59 that ISO allows."""

    def to_python(self, value):
        parsed = super().to_python(value)
        try:
            return parsed.astimezone(datetime.UTC) if parsed and parsed.tzinfo else parsed
        except OverflowError:
            raise forms.ValidationError("Date and time out of range.", code="overflow") from None


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


class StrictFilterSet(django_filters.FilterSet):
    """An empty value is "not given" for a text filter only: `?status=` or `?uploaded_before=` is not a
    status or a date, so it is a 400, as the schema's types say (django-filter would ignore it)."""

    def is_valid(self):
        valid = super().is_valid()
        for name, value in self.data.items():
            parameter = self.filters.get(name)
            if parameter is None or value != "":
                continue
            if not isinstance(parameter, django_filters.CharFilter):
                self.form.add_error(name if name in self.form.fields else None, "An empty value is not allowed here.")
                valid = False
        return valid


class SampleFilter(StrictFilterSet):
    # A project id, not a choice among existing projects: a project that does not exist and one you cannot
    # see both give an empty list (a choice field answered 400 for the one and 200 for the other).
    project = IdFilter(field_name="project", help_text="Project id.")
    lab_sample_id = django_filters.CharFilter(help_text="Exact lab sample ID.")
    lims_id = django_filters.CharFilter(help_text="Exact LIMS external ID.")
    name = django_filters.CharFilter(lookup_expr="icontains", help_text="Part of the sample name.")
    material = django_filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Sample
        fields = ["project", "lab_sample_id", "lims_id", "name", "material"]


class ImageFilter(StrictFilterSet):
    project = IdFilter(field_name="sample__project", help_text="Project id.")
    sample = IdFilter(field_name="sample", help_text="Sample id.")
    lab_sample_id = django_filters.CharFilter(field_name="sample__lab_sample_id")
    predicted_category = django_filters.CharFilter(
        field_name="predicted_category__slug", help_text="Category slug of the production model's prediction."
    )
    curated_category = django_filters.CharFilter(
        method="filter_curated", help_text="Category slug of the curated label, or `none` for unlabelled images."
    )
    min_confidence = ConfidenceFilter(field_name="predicted_confidence", lookup_expr="gte")
    max_confidence = ConfidenceFilter(field_name="predicted_confidence", lookup_expr="lte")
    status = django_filters.ChoiceFilter(choices=SEMImage.Status.choices)
    split = django_filters.ChoiceFilter(choices=SEMImage.Split.choices)
    uploaded_by = django_filters.CharFilter(field_name="uploaded_by__username", help_text="Uploader's username.")
    uploaded_after = UtcIsoDateTimeFilter(field_name="uploaded_at", lookup_expr="gte")
    uploaded_before = UtcIsoDateTimeFilter(field_name="uploaded_at", lookup_expr="lt")
    vendor = django_filters.CharFilter(lookup_expr="iexact")
    instrument = django_filters.CharFilter(
        method="filter_instrument", help_text="Part of the vendor, instrument model or detector."
    )
    sha256 = django_filters.CharFilter()

    class Meta:
        model = SEMImage
        fields = []

    def filter_curated(self, queryset, name, value):
        if value.lower() == "none":
            return queryset.filter(curated_category__isnull=True)
        return queryset.filter(curated_category__slug=value)

    def filter_instrument(self, queryset, name, value):
        return queryset.filter(
            Q(vendor__icontains=value) | Q(instrument_model__icontains=value) | Q(detector__icontains=value)
        )


class PredictionFilter(StrictFilterSet):
    category = django_filters.CharFilter(field_name="category__slug", help_text="Predicted category slug.")
    min_confidence = ConfidenceFilter(field_name="confidence", lookup_expr="gte")
    max_confidence = ConfidenceFilter(field_name="confidence", lookup_expr="lte")
    project = IdFilter(field_name="image__sample__project")

    class Meta:
        model = Prediction
        fields = []


class TrainingRunFilter(StrictFilterSet):
    status = django_filters.ChoiceFilter(choices=TrainingRun.Status.choices)
    trigger = django_filters.ChoiceFilter(choices=TrainingRun.Trigger.choices)

    class Meta:
        model = TrainingRun
        fields = []
