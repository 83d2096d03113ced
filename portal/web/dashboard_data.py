"""Numbers for the metrics dashboard. Model metrics come from ModelVersion.metrics (the evaluation
on the fixed test split, written by training); everything counted over images is scoped to the
user's projects. Each function is one query, whatever the number of images."""

from __future__ import annotations

from django.db.models import Case, Count, Exists, OuterRef, Q, QuerySet, Subquery, Value, When

from portal.models import Category, Label, ModelVersion, Prediction, SEMImage
from portal.permissions import visible_images, visible_projects
from portal.services.curation.review import CHECKED_SOURCES, disputed_in
from portal.services.learning.gate_rules import stored_reason
from portal.web.access import parse_id


def selected_model(version: str | None) -> ModelVersion | None:
    """The requested version, else production, else the newest one."""
    if parse_id(version) is not None:
        return ModelVersion.objects.filter(version=parse_id(version)).first()
    return (
        ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION).first()
        or ModelVersion.objects.order_by("-version").first()
    )


def version_history() -> list[dict]:
    """Accuracy and macro-F1 of every evaluated version, oldest first, for the chart."""
    versions = ModelVersion.objects.order_by("version").only("version", "status", "metrics")
    return [
        {"version": v.version, "status": v.status, "accuracy": v.accuracy, "macro_f1": v.macro_f1}
        for v in versions
        if v.metrics
    ]


def class_order(model: ModelVersion | None) -> list[str]:
    """The model's classes in output order (PostgreSQL's jsonb does not keep a dict's key order)."""
    if model is None:
        return []
    return list((model.metrics or {}).get("classes") or model.classes or [])


def per_class_rows(model: ModelVersion | None) -> list[dict]:
    """The evaluation's per-class rows; precision and recall carry their bootstrap interval (stored by the
    gate: `metrics["intervals"]`) as an `interval` for the bars, when the evaluation has one."""
    metrics = (model.metrics if model else None) or {}
    per_class = metrics.get("per_class") or {}
    intervals = metrics.get("intervals") or {}
    level = metrics.get("interval_level") or (metrics.get("gate") or {}).get("level")
    order = [name for name in class_order(model) if name in per_class]
    order += sorted(set(per_class) - set(order))
    rows = []
    for name in order:
        row = {"name": name, **per_class[name]}
        if row.get("support"):
            for metric in ("precision", "recall"):
                row[f"{metric}_interval"] = _interval_bar(
                    row.get(metric), (intervals.get(name) or {}).get(metric), level
                )
        rows.append(row)
    return rows


def _interval_bar(point: float | None, bounds, level: float | None) -> dict | None:
    """Positions (percent of a 0-1 track) of an interval bar and its point estimate, or None."""
    if point is None or not bounds or len(bounds) != 2:
        return None
    low, high = (min(max(float(value), 0.0), 1.0) for value in bounds)
    # The positions are strings: style attributes must not be localised (a decimal comma would break
    # them). The bounds and level stay fractions: the template says them with the `percent` filter.
    return {
        "low": low,
        "high": high,
        "left": f"{low * 100:.1f}",
        "width": f"{max(high - low, 0.0) * 100:.1f}",
        "point": f"{min(max(float(point), 0.0), 1.0) * 100:.1f}",
        "level": level or None,
    }


def gate_reason(model: ModelVersion | None) -> str:
    """Why the gate decided as it did, in words: rendered from the decision stored as data, or the stored
    words of a version gated before decisions were stored."""
    if model is None:
        return ""
    return stored_reason(model.metrics) or model.gate_reason


def gate_summary(model: ModelVersion | None) -> dict | None:
    """What the bootstrap gate decided for this model (`metrics["gate"]`), for the Training page: the
    decision and the interval of candidate minus production macro-F1 (fractions: the template says them
    in percentage points); None when the gate drew no interval (a first model, or the point rule)."""
    gate = ((model.metrics if model else None) or {}).get("gate")
    if not gate or not isinstance(gate.get("macro_f1"), dict):
        return None
    f1 = gate["macro_f1"]
    level = gate.get("level")
    worst = None
    for name, recall in (gate.get("recall") or {}).items():
        if worst is None or recall.get("low", 0) < worst[1].get("low", 0):
            worst = (name, recall)
    return {
        "decision": gate.get("decision") or "",
        "diff": f1["diff"],
        "low": f1["low"],
        "high": f1["high"],
        "level": level or None,
        "n": gate.get("n"),
        "resamples": gate.get("resamples"),
        "tolerance": -float(gate.get("tolerance") or 0.0),
        "worst_recall": {"name": worst[0], "diff": worst[1]["diff"], "low": worst[1]["low"], "high": worst[1]["high"]}
        if worst
        else None,
    }


def confusion_rows(model: ModelVersion | None) -> tuple[list[str], list[dict]]:
    """Rows of the heatmap: counts, and row-normalised percentages computed from the counts.

    classifier.metrics.evaluate stores the matrix as a list of rows in class order; a
    {"labels", "counts"} mapping is accepted too.
    """
    matrix = ((model.metrics if model else None) or {}).get("confusion_matrix") or []
    if isinstance(matrix, dict):
        labels, counts = matrix.get("labels") or [], matrix.get("counts") or []
    else:
        labels, counts = class_order(model), matrix
    rows = []
    for actual, row in zip(labels, counts):
        total = sum(row)
        cells = [
            {
                "predicted": predicted,
                "count": count,
                "percent": 100.0 * count / total if total else 0.0,  # the heat map's colour and Row % (JS)
                "share": count / total if total else 0.0,
                "correct": predicted == actual,
            }
            for predicted, count in zip(labels, row)
        ]
        rows.append({"actual": actual, "total": total, "cells": cells})
    return labels, rows


def curated_distribution(user) -> list[dict]:
    """How many images carry each curated category (the training data's class balance)."""
    grouped = (
        visible_images(user)
        .filter(curated_category__isnull=False)
        .values("curated_category__name")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts = {row["curated_category__name"]: row["n"] for row in grouped}
    names = Category.objects.filter(active=True).values_list("name", flat=True)
    return [{"name": name, "count": counts.get(name, 0)} for name in names]


def backlog(user) -> dict[str, int]:
    images = visible_images(user)
    totals = images.aggregate(
        images=Count("id"),
        unlabelled=Count("id", filter=Q(curated_category__isnull=True)),
        waiting=Count("id", filter=Q(status__in=[SEMImage.Status.PENDING, SEMImage.Status.NO_MODEL])),
        failed=Count("id", filter=Q(status=SEMImage.Status.FAILED)),
    )
    totals["disputed"] = disputed_in(images).count()
    return totals


def observed_accuracy(user, model: ModelVersion | None) -> dict | None:
    """How often the production model was right on images reviewers checked since its promotion:
    current review labels created after promoted_at compared with this model's prediction."""
    if not model or not model.promoted_at:
        return None
    predicted_same = Prediction.objects.filter(
        image=OuterRef("image"), model_version=model, category=OuterRef("category")
    )
    predicted_any = Prediction.objects.filter(image=OuterRef("image"), model_version=model)
    checked = (
        Label.objects.filter(
            is_current=True,
            source__in=CHECKED_SOURCES,
            created_at__gt=model.promoted_at,
            image__in=visible_images(user),
        )
        .filter(Exists(predicted_any))
        .aggregate(total=Count("id"), correct=Count("id", filter=Q(Exists(predicted_same))))
    )
    total = checked["total"]
    return {**checked, "accuracy": checked["correct"] / total if total else None}


def test_labels_changed(user, model: ModelVersion | None) -> int:
    """Test-split images of the user's projects whose label now differs from the one they had when the
    model was evaluated: the confusion matrix counts the labels of then, its cell pages the labels of
    now. A relabel that was reverted (Fibres -> Particles -> Fibres) changed nothing."""
    if model is None or not model.metrics:
        return 0
    label_then = (
        Label.objects.filter(image=OuterRef("pk"), created_at__lte=model.created_at)
        .order_by("-created_at", "-id")
        .values("category")[:1]
    )
    relabelled = (
        visible_images(user)
        .filter(split=SEMImage.Split.TEST, labels__created_at__gt=model.created_at)
        .annotate(label_then=Subquery(label_then))
        .values_list("pk", "curated_category_id", "label_then")
        .distinct()
    )
    return sum(1 for _, now, then in relabelled if now != then)


def evaluated_count(model: ModelVersion, actual: str, predicted: str) -> int | None:
    """How many test images the evaluation put in one cell of the confusion matrix."""
    for row in confusion_rows(model)[1]:
        if row["actual"] == actual:
            return next((cell["count"] for cell in row["cells"] if cell["predicted"] == predicted), None)
    return None


def test_split_sources(user) -> dict:
    """Where the test split's curated images come from (the evaluation uses every project's): the user's
    projects by name with their counts, and one count for the projects the user cannot open (never named)."""
    mine = Case(When(sample__project__in=visible_projects(user), then=Value(True)), default=Value(False))
    rows = list(
        SEMImage.objects.filter(split=SEMImage.Split.TEST, curated_category__isnull=False)
        .values("sample__project", "sample__project__name")
        .annotate(n=Count("id"), mine=mine)
        .order_by("sample__project__name")
    )
    yours = [{"name": row["sample__project__name"], "count": row["n"]} for row in rows if row["mine"]]
    return {"yours": yours, "others": sum(row["n"] for row in rows if not row["mine"])}


def hidden_cell_count(user, model: ModelVersion, actual: str, predicted: str) -> int:
    """Images of one confusion cell in projects the user cannot open (so the cell page cannot list them)."""
    everyone = _in_cell(SEMImage.objects.all(), model, actual, predicted)
    return everyone.exclude(sample__project__in=visible_projects(user)).count()


def _in_cell(images: QuerySet[SEMImage], model: ModelVersion, actual: str, predicted: str) -> QuerySet[SEMImage]:
    by_model = Prediction.objects.filter(image=OuterRef("pk"), model_version=model, category__name=predicted)
    return images.filter(split=SEMImage.Split.TEST, curated_category__name=actual).filter(Exists(by_model))


def cell_images(user, model: ModelVersion, actual: str, predicted: str) -> QuerySet[SEMImage]:
    """Test-split images curated as `actual` that `model` predicted as `predicted`."""
    return (
        _in_cell(visible_images(user), model, actual, predicted)
        .select_related("sample__project", "predicted_category", "curated_category", "uploaded_by")
        .defer("metadata")
        .order_by("-uploaded_at", "-id")
    )


def readiness_context() -> dict:
    """Categories with too few curated training images to be offered by a model, and whether the test split
    holds unseen samples (Training page, dashboard)."""
    from django.conf import settings

    from portal.services.ingestion.splits import sample_independence
    from portal.services.learning.training import class_readiness

    rows = [row for row in class_readiness() if row["needed"]]
    return {
        "split_check": sample_independence(),
        # Categories being collected get a row each; those without any curated image one line, so that a
        # lab that never images MEMS or tips is not told ten times what it needs.
        "not_ready": [row for row in rows if row["train_images"]],
        "not_started": [row["name"] for row in rows if not row["train_images"]],
        "min_images_per_class": settings.SEM_MIN_IMAGES_PER_CLASS,
    }
