"""Metrics dashboard (any member) and the confusion-matrix cell pages (relabelling for curators)."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import render

from portal.models import Category, ModelVersion
from portal.permissions import curated_projects
from portal.web import dashboard_data as data
from portal.web.access import member_required
from portal.web.views.images import relabel_undo_offer


@member_required
def dashboard(request):
    model = data.selected_model(request.GET.get("model"))
    metrics = model.metrics if model else {}
    labels, matrix = data.confusion_rows(model)
    context = {
        "model": model,
        "versions": ModelVersion.objects.order_by("-version").only("version", "status"),
        "metrics": metrics,
        "per_class": data.per_class_rows(model),
        "matrix_labels": labels,
        "matrix": matrix,
        "history": data.version_history(),
        "distribution": data.curated_distribution(request.user),
        "backlog": data.backlog(request.user),
        "observed": data.observed_accuracy(request.user, model),
        "labels_changed": data.test_labels_changed(request.user, model),
        "sources": data.test_split_sources(request.user),
        **data.readiness_context(),
    }
    return render(request, "portal/dashboard.html", context)


@member_required
def confusion_cell(request, version: int):
    """Test-split images curated as one class (row) that this model predicted as another (column)."""
    model = ModelVersion.objects.filter(version=version).first()
    actual, predicted = request.GET.get("actual", ""), request.GET.get("predicted", "")
    if model is None or not actual or not predicted:
        raise Http404("No such model version or cell.")
    images = data.cell_images(request.user, model, actual, predicted)
    page = Paginator(images, 48).get_page(request.GET.get("page"))
    context = {
        "model": model,
        "actual": actual,
        "predicted": predicted,
        "page": page,
        "evaluated_count": data.evaluated_count(model, actual, predicted),
        "hidden_count": data.hidden_cell_count(request.user, model, actual, predicted),
        "categories": Category.objects.filter(active=True),
        "curated_project_ids": set(curated_projects(request.user).values_list("pk", flat=True)),
        "relabel_undo": relabel_undo_offer(request),
    }
    return render(request, "portal/confusion_cell.html", context)
