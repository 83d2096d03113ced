"""How long a training run will need, estimated when it is requested (issue 23, item 5).

The default recipe's time is its forward passes (classifier.feature_budget): one per view of every
training image and one per test-time view of every evaluation image. An earlier run measured the cost
of one image view (its plan) or, before runs recorded it, took a known time for a known number of
passes; with the size of the training set now, that says whether a budget is too small before the run
starts, not after it ran over. No earlier run: no estimate (a guess would be another machine's figure).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count

from classifier.feature_budget import ALL_VIEWS as VIEWS
from classifier.feature_budget import INFERENCE_VIEWS, KIND, needed_budget_s
from portal.models import SEMImage, TrainingRun

RUNS_LOOKED_AT = 20
VALIDATION_SHARE = 0.2  # without test images the recipe evaluates on its validation part


@dataclass(frozen=True)
class Estimate:
    n_train: int
    n_eval: int
    per_view_s: float
    spent_s: float  # loading the weights and measuring, as the earlier run spent them
    source_run: int

    def needed_s(self, views: int) -> float:
        """The budget the run needs with ``views`` views of every training image and as many as inference
        averages (at most INFERENCE_VIEWS) of every evaluation image."""
        eval_views = min(views, INFERENCE_VIEWS)
        return needed_budget_s(self.spent_s, self.per_view_s, self.n_train, self.n_eval, views, eval_views)


def dataset_size() -> tuple[int, int]:
    """(train, test) curated images of the categories a run would learn (SEM_MIN_IMAGES_PER_CLASS)."""
    rows = (
        SEMImage.objects.filter(curated_category__isnull=False, curated_category__active=True)
        .values_list("split", "curated_category")
        .annotate(n=Count("id"))
    )
    counts = {(split, category): n for split, category, n in rows}
    train = {category: n for (split, category), n in counts.items() if split == SEMImage.Split.TRAIN}
    offered = {category for category, n in train.items() if n >= settings.SEM_MIN_IMAGES_PER_CLASS}
    n_train = sum(train[category] for category in offered)
    n_test = sum(n for (split, category), n in counts.items() if split == SEMImage.Split.TEST and category in offered)
    return n_train, n_test


def estimate() -> Estimate | None:
    n_train, n_test = dataset_size()
    measured = measured_cost()
    if not n_train or measured is None:
        return None
    n_eval = n_test or round(n_train * VALIDATION_SHARE)
    return Estimate(n_train, n_eval, *measured)


def measured_cost() -> tuple[float, float, int] | None:
    """(seconds per image view, seconds before the features, run id) of the newest run that tells."""
    runs = (
        TrainingRun.objects.filter(status__in=[TrainingRun.Status.SUCCEEDED, TrainingRun.Status.FAILED])
        .select_related("model_version")
        .order_by("-created_at")[:RUNS_LOOKED_AT]
    )
    for run in runs:
        plan = run.plan or {}
        if plan.get("kind") == KIND and plan.get("per_view_s"):
            return float(plan["per_view_s"]), float(plan.get("spent_s") or 0.0), run.pk
        derived = _cost_from_duration(run)
        if derived is not None:
            return derived
    return None


def _cost_from_duration(run: TrainingRun) -> tuple[float, float, int] | None:
    """A run from before plans recorded the cost: its whole duration over its forward passes (an
    overestimate, which errs on the side of warning)."""
    metadata = (run.model_version.metadata or {}) if run.model_version_id else {}
    if metadata.get("recipe") != "frozen_head" or not run.duration_s:
        return None
    history = metadata.get("history") or [{}]
    passes = run.train_image_count * int(history[0].get("views") or VIEWS)
    passes += run.test_image_count * int(metadata.get("tta_views") or VIEWS)
    return (run.duration_s / passes, 0.0, run.pk) if passes else None


def budget_warning(budget_s: float | None) -> str | None:
    """What to tell whoever requests a run with this budget, or None when it fits (or nothing is known)."""
    found = estimate() if budget_s else None
    if found is None:
        return None
    minimum, full = found.needed_s(1), found.needed_s(VIEWS)
    if budget_s >= full:
        return None
    basis = (
        f"{found.n_train} training and {found.n_eval} evaluation images at {found.per_view_s:.2f} s per "
        f"image view (measured by run {found.source_run})"
    )
    if budget_s < minimum:
        return (
            f"The budget of {duration(budget_s)} is too small for this training set: {basis} need about "
            f"{duration(minimum)} even with one view per image, so the run will end over its budget. "
            f"Give it at least {duration(minimum)} ({duration(full)} for all {VIEWS} views)."
        )
    return (
        f"The budget of {duration(budget_s)} fits fewer than the {VIEWS} views per image of the most "
        f"accurate model: {basis} need about {duration(full)} for all of them."
    )


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    minutes, seconds = divmod(seconds, 60)
    if not minutes:
        return f"{seconds} s"
    return f"{minutes} min {seconds:02d} s" if seconds else f"{minutes} min"
