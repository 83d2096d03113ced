"""django-filter sets: the browse page's filters, as query parameters."""

from __future__ import annotations

import datetime

import django_filters
from django import forms
from django.db.models import Q

from portal.models import Category, Prediction, Sample, SEMImage, TrainingRun


class IdFilter(django_filters.NumberFilter):
    """A whole number: `1.5` is an error, not silently id 1."""

    field_class = forms.IntegerField


class UtcIsoDateTimeField(django_filters.fields.IsoDateTimeField):
    """ISO 8601, converted to UTC: PostgreSQL refuses offsets beyond +-15:59 that ISO allows."""

    def to_python(self, value):
        parsed = super().to_python(value)
        try:
            return parsed.astimezone(datetime.timezone.utc) if parsed and parsed.tzinfo else parsed
        except OverflowError:
            raise forms.ValidationError("Date and time out of range.", code="overflow") from None


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


class SampleFilter(django_filters.FilterSet):
    lab_sample_id = django_filters.CharFilter(help_text="Exact lab sample ID.")
    lims_id = django_filters.CharFilter(help_text="Exact LIMS external ID.")
    name = django_filters.CharFilter(lookup_expr="icontains", help_text="Part of the sample name.")
    material = django_filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Sample
        fields = ["project", "lab_sample_id", "lims_id", "name", "material"]


class ImageFilter(django_filters.FilterSet):
    project = IdFilter(field_name="sample__project", help_text="Project id.")
    sample = IdFilter(field_name="sample", help_text="Sample id.")
    lab_sample_id = django_filters.CharFilter(field_name="sample__lab_sample_id")
    predicted_category = django_filters.ModelChoiceFilter(
        field_name="predicted_category", to_field_name="slug", queryset=Category.objects.all(),
        help_text="Category slug of the production model's prediction.")
    curated_category = django_filters.CharFilter(
        method="filter_curated", help_text="Category slug of the curated label, or `none` for unlabelled images.")
    min_confidence = django_filters.NumberFilter(field_name="predicted_confidence", lookup_expr="gte")
    max_confidence = django_filters.NumberFilter(field_name="predicted_confidence", lookup_expr="lte")
    status = django_filters.ChoiceFilter(choices=SEMImage.Status.choices)
    split = django_filters.ChoiceFilter(choices=SEMImage.Split.choices)
    uploaded_by = django_filters.CharFilter(field_name="uploaded_by__username", help_text="Uploader's username.")
    uploaded_after = UtcIsoDateTimeFilter(field_name="uploaded_at", lookup_expr="gte")
    uploaded_before = UtcIsoDateTimeFilter(field_name="uploaded_at", lookup_expr="lt")
    vendor = django_filters.CharFilter(lookup_expr="iexact")
    instrument = django_filters.CharFilter(method="filter_instrument",
                                           help_text="Part of the vendor, instrument model or detector.")
    sha256 = django_filters.CharFilter()

    class Meta:
        model = SEMImage
        fields = []

    def filter_curated(self, queryset, name, value):
        if value.lower() == "none":
            return queryset.filter(curated_category__isnull=True)
        return queryset.filter(curated_category__slug=value)

    def filter_instrument(self, queryset, name, value):
        return queryset.filter(Q(vendor__icontains=value) | Q(instrument_model__icontains=value)
                               | Q(detector__icontains=value))


class PredictionFilter(django_filters.FilterSet):
    category = django_filters.ModelChoiceFilter(field_name="category", to_field_name="slug",
                                                queryset=Category.objects.all())
    min_confidence = django_filters.NumberFilter(field_name="confidence", lookup_expr="gte")
    max_confidence = django_filters.NumberFilter(field_name="confidence", lookup_expr="lte")
    project = IdFilter(field_name="image__sample__project")

    class Meta:
        model = Prediction
        fields = []


class TrainingRunFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=TrainingRun.Status.choices)
    trigger = django_filters.ChoiceFilter(choices=TrainingRun.Trigger.choices)

    class Meta:
        model = TrainingRun
        fields = []
