"""Forms of the web UI. Choice lists come from querysets scoped to the user's projects."""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model
from django.db.models import F

from portal.models import Category, Project, Sample, SEMImage
from portal.permissions import is_admin, visible_projects


class SampleForm(forms.ModelForm):
    """A new sample, created from the upload page in one of the user's projects."""

    class Meta:
        model = Sample
        fields = ["project", "lab_sample_id", "name", "material", "preparation", "description", "lims_id"]
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2}),
            "preparation": forms.Textarea(attrs={"rows": 2}),
        }

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        projects = visible_projects(user)
        self.fields["project"].queryset = projects
        # A member of a single project has nothing to choose: preselect it.
        only = list(projects[:2])
        if len(only) == 1 and not self.is_bound:
            self.initial.setdefault("project", only[0].pk)


# Confidence is a percentage; one message for every way to get it wrong ("%%": the messages are %-formatted).
CONFIDENCE_ERRORS = {key: "Enter a confidence between 0 and 100 %%." for key in ("invalid", "min_value", "max_value")}


class BrowseFilterForm(forms.Form):
    """GET filters of the browse page; every field is optional and maps to an indexed column."""

    SORTS = {
        "newest": ("-uploaded_at", "-id"),
        "oldest": ("uploaded_at", "id"),
        "confidence": ("-predicted_confidence", "-id"),
        "uncertain": ("predicted_margin", "-id"),
        "filename": ("original_filename", "id"),
        # Images without a magnification go last (PostgreSQL puts NULL first when descending).
        "magnification": (F("magnification").desc(nulls_last=True), "-id"),
    }
    SORT_CHOICES = [
        ("newest", "Newest first"),
        ("oldest", "Oldest first"),
        ("confidence", "Most confident first"),
        ("uncertain", "Most uncertain first (smallest margin)"),
        ("filename", "File name"),
        ("magnification", "Magnification"),
    ]
    UNLABELLED = "none"

    project = forms.ModelChoiceField(queryset=Project.objects.none(), required=False, empty_label="All projects")
    sample = forms.CharField(
        required=False, max_length=100, label="Sample", widget=forms.TextInput(attrs={"placeholder": "ID or name"})
    )
    predicted = forms.TypedChoiceField(required=False, coerce=int, empty_value=None, label="Predicted")
    curated = forms.ChoiceField(required=False, label="Curated")
    conf_min = forms.IntegerField(
        required=False, min_value=0, max_value=100, label="Confidence ≥ %", error_messages=CONFIDENCE_ERRORS
    )
    conf_max = forms.IntegerField(
        required=False, min_value=0, max_value=100, label="Confidence ≤ %", error_messages=CONFIDENCE_ERRORS
    )
    status = forms.ChoiceField(required=False, choices=[("", "Any status")] + SEMImage.Status.choices)
    split = forms.ChoiceField(required=False, choices=[("", "Any split")] + SEMImage.Split.choices)
    uploader = forms.ModelChoiceField(queryset=get_user_model().objects.none(), required=False, empty_label="Anyone")
    date_from = forms.DateField(required=False, label="Uploaded from", widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, label="Uploaded to", widget=forms.DateInput(attrs={"type": "date"}))
    instrument = forms.CharField(
        required=False,
        max_length=100,
        label="Instrument",
        widget=forms.TextInput(attrs={"placeholder": "vendor, model or detector"}),
    )
    sort = forms.ChoiceField(required=False, choices=SORT_CHOICES)

    def __init__(self, *args, user, categories: list[Category], **kwargs):
        super().__init__(*args, **kwargs)
        projects = visible_projects(user)
        self.fields["project"].queryset = projects
        users = get_user_model().objects.order_by("username")
        if not is_admin(user):
            users = users.filter(memberships__project__in=projects).distinct()
        self.fields["uploader"].queryset = users
        category_choices = [(category.pk, category.name) for category in categories]
        self.fields["predicted"].choices = [("", "Any")] + category_choices
        self.fields["curated"].choices = [("", "Any"), (self.UNLABELLED, "Not labelled yet")] + [
            (str(pk), name) for pk, name in category_choices
        ]

    def order_by(self) -> tuple[str, ...]:
        return self.SORTS[self.cleaned_data.get("sort") or "newest"]


class BulkAcceptForm(forms.Form):
    """Accept every queued prediction at or above a confidence as the curated label."""

    min_confidence = forms.IntegerField(min_value=50, max_value=100, initial=95, label="Confidence ≥ %")
