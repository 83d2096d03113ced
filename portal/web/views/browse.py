"""Browse: a filtered, sorted, paginated thumbnail grid of the images in the user's projects."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.shortcuts import redirect, render

from portal.models import Category, ModelVersion, TrainingRun
from portal.services.learning.classification import production_model
from portal.web.access import member_required
from portal.web.browse_query import filtered_images
from portal.web.forms import BrowseFilterForm

PAGE_SIZE = 48


@member_required
def home(request):
    return redirect("web:browse")


@member_required
def browse(request):
    categories = list(Category.objects.filter(active=True))
    form = BrowseFilterForm(request.GET or None, user=request.user, categories=categories)
    images = filtered_images(request.user, form)
    page = Paginator(images, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "form": form,
        "page": page,
        "filtered": bool(request.GET),
        "active_filters": active_filters(request.GET, form),
        "production_model": production_model(),
        # "Most uncertain first" sorts by the margin between the top two classes: the cards show it.
        "show_margin": form.is_valid() and form.cleaned_data.get("sort") == "uncertain",
        **first_model_context(),
    }
    return render(request, "portal/browse.html", context)


def active_filters(query, form: BrowseFilterForm) -> int:
    """How many filters the query sets: the panel opens for them. The sort order is no filter."""
    return sum(1 for name in form.fields if name != "sort" and query.get(name, "").strip())


def first_model_context() -> dict:
    """Before any model exists every card waits for one: say whether the first run is training (its live
    progress) and list the first steps, so a new installation does not look stuck."""
    if ModelVersion.objects.exists():
        return {}
    return {"first_run": TrainingRun.objects.filter(active=True).first(), "first_steps": True}
