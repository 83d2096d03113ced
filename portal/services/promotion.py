"""The promotion gate, promote and roll back: which model version is production.

A candidate becomes production only when, on the same test images, it is not worse than production
beyond the test split's noise: a paired, stratified bootstrap (`classifier.bootstrap`) of candidate minus
production gives intervals (at SEM_GATE_CONFIDENCE) of the macro-F1 difference and of each class's
recall difference; the lower bound of the first must be above -SEM_GATE_MACRO_F1_TOLERANCE and of each
recall above -SEM_GATE_MAX_RECALL_DROP. With tolerance 0 a candidate must be better beyond noise: one
lucky image is not enough. A test split below SEM_GATE_MIN_TEST_IMAGES (or a class below
SEM_GATE_MIN_TEST_PER_CLASS) cannot tell: the gate says so and leaves the decision to an admin.
Without per-image predictions (production's artifact gone, classes changed) the point rule
`gate_decision` applies.
Admins may promote any candidate or roll back by hand. A promotion starts the background
re-classification of existing images and announces `model.promoted`.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from portal import events
from portal.models import ModelVersion
from portal.services.artifacts import artifact_exists, load_engine
from portal.services.classification import production_model

logger = logging.getLogger(__name__)


class ModelActionError(Exception):
    """A promotion or roll-back that cannot be done; the message is shown to the admin."""


def gate_decision(candidate: dict, production: dict | None) -> tuple[bool, str]:
    """(passed, reason) for a candidate's test-split metrics against production's on the same images."""
    f1 = _macro_f1(candidate)
    if production is None:
        return first_model_decision(candidate)
    tolerance, max_drop = settings.SEM_GATE_MACRO_F1_TOLERANCE, settings.SEM_GATE_MAX_RECALL_DROP
    production_f1 = _macro_f1(production)
    if f1 < production_f1 - tolerance:
        return False, (f"Macro-F1 {f1:.3f} is below production's {production_f1:.3f} (tolerance {tolerance:.3f})")
    drops = _recall_drops(candidate, production)
    worst = [f"{name} {drop * 100:.1f} points" for name, drop in drops if drop > max_drop + 1e-9]
    if worst:
        return False, f"Recall dropped by more than {max_drop * 100:.1f} points: " + ", ".join(worst)
    return (
        True,
        f"Macro-F1 {f1:.3f} vs production {production_f1:.3f}; no class recall dropped more than "
        f"{max_drop * 100:.1f} points",
    )


def first_model_decision(candidate: dict) -> tuple[bool, str]:
    """A first model must beat answering the test split's largest class every time, by a clear
    margin, and reach the macro-F1 floor: a model no better than that guess would only mislabel."""
    f1, floor = _macro_f1(candidate), settings.SEM_GATE_FIRST_MODEL_FLOOR
    accuracy, majority = float(candidate.get("accuracy") or 0.0), majority_baseline(candidate)
    margin = settings.SEM_GATE_BASELINE_MARGIN
    if majority is None:
        return False, "First model: no test images to compare it with the majority-class baseline"
    name, baseline = majority
    if accuracy < baseline + margin:
        return False, (
            f"First model: accuracy {accuracy:.3f} does not beat the majority-class baseline "
            f"(always '{name}': {baseline:.3f}) by the required {margin:.3f}"
        )
    if f1 < floor:
        return False, f"First model: macro-F1 {f1:.3f} is below the floor {floor:.3f}"
    return True, (
        f"First model: accuracy {accuracy:.3f} beats the majority-class baseline "
        f"(always '{name}': {baseline:.3f}) by more than {margin:.3f}; macro-F1 {f1:.3f}"
    )


def majority_baseline(metrics: dict) -> tuple[str, float] | None:
    """(class, accuracy) of always answering the class with the most test images, or None without any."""
    supports = {name: int(values.get("support") or 0) for name, values in (metrics.get("per_class") or {}).items()}
    total = sum(supports.values())
    if not total:
        return None
    name = max(supports, key=supports.get)
    return name, supports[name] / total


def _macro_f1(metrics: dict) -> float:
    return float((metrics.get("macro_avg") or {}).get("f1") or 0.0)


def _recall_drops(candidate: dict, production: dict) -> list[tuple[str, float]]:
    """Per-class recall drop, for classes with test images in both evaluations."""
    drops = []
    candidate_classes = candidate.get("per_class") or {}
    for name, before in (production.get("per_class") or {}).items():
        after = candidate_classes.get(name)
        if not before.get("support"):
            continue
        recall_after = after["recall"] if after and after.get("support") else 0.0
        drops.append((name, float(before["recall"]) - float(recall_after)))
    return sorted(drops, key=lambda item: -item[1])


def too_small_to_tell(y_true: list[str], classes: list[str]) -> str | None:
    """Why the test split cannot tell two models apart, or None when it is large enough."""
    from collections import Counter

    minimum, per_class = settings.SEM_GATE_MIN_TEST_IMAGES, settings.SEM_GATE_MIN_TEST_PER_CLASS
    support = Counter(y_true)
    short = [f"{name} {support[name]}" for name in classes if support[name] < per_class]
    if len(y_true) < minimum or short:
        parts = []
        if len(y_true) < minimum:
            parts.append(f"{len(y_true)} test images (at least {minimum} needed)")
        if short:
            parts.append(f"classes with fewer than {per_class} test images: " + ", ".join(short))
        return "The test split is too small to tell the two models apart: " + "; ".join(parts)
    return None


def bootstrap_gate_decision(
    y_true: list[str], candidate_pred: list[str], production_pred: list[str], classes: list[str]
) -> tuple[bool | None, str, dict]:
    """(passed, reason, summary) from per-image predictions of both models on the same test images;
    passed is None when the test split is too small to tell. The summary is the decision as data: the
    intervals (statistics), then `decision` and what decided it (policy); the reason renders it in words."""
    summary = _paired_differences(y_true, candidate_pred, production_pred, classes)
    summary.update(_bootstrap_verdict(summary, too_small_to_tell(y_true, classes)))
    passed = {"promoted": True, "refused": False, "too_small": None}[summary["decision"]]
    return passed, bootstrap_reason(summary), summary


def _paired_differences(y_true, candidate_pred, production_pred, classes) -> dict:
    """The paired, stratified bootstrap of candidate minus production, with the thresholds it is held to."""
    from classifier.bootstrap import paired_bootstrap

    result = paired_bootstrap(
        y_true,
        candidate_pred,
        production_pred,
        classes,
        resamples=settings.SEM_GATE_BOOTSTRAP_RESAMPLES,
        level=settings.SEM_GATE_CONFIDENCE,
        seed=0,
    )
    result.update(tolerance=settings.SEM_GATE_MACRO_F1_TOLERANCE, max_recall_drop=settings.SEM_GATE_MAX_RECALL_DROP)
    return result


def _bootstrap_verdict(summary: dict, too_small: str | None) -> dict:
    """The rule: too small to tell; else refused when the macro-F1 interval's lower bound is not above
    -tolerance or a class's recall interval reaches a drop of max_recall_drop; else promoted."""
    if too_small:
        return {"decision": "too_small", "too_small": too_small}
    max_drop = summary["max_recall_drop"]
    dropped = [name for name, recall in summary["recall"].items() if not recall["low"] > -max_drop]
    f1_holds = summary["macro_f1"]["low"] > -summary["tolerance"]
    return {"decision": "promoted" if f1_holds and not dropped else "refused", "recall_dropped": dropped}


def bootstrap_reason(summary: dict) -> str:
    """The bootstrap gate's decision in words (stored as the version's gate reason)."""
    f1, level, tolerance = summary["macro_f1"], summary["level"], summary["tolerance"]
    max_drop = summary["max_recall_drop"]
    described = (
        f"macro-F1 difference {f1['diff']:+.3f}, {level:.0%} interval [{f1['low']:+.3f}, {f1['high']:+.3f}] "
        f"on {summary['n']} test images ({summary['resamples']} paired resamples)"
    )
    if summary["decision"] == "too_small":
        return f"{summary['too_small']}. Not promoted automatically; {described}. An admin may promote it by hand."
    if not f1["low"] > -tolerance:
        return (
            f"Not shown to be at least as good as production: {described}; the lower bound must be "
            f"above {-tolerance:+.3f}"
        )
    if summary["recall_dropped"]:
        recall = summary["recall"]
        drops = [
            f"{name} [{recall[name]['low'] * 100:+.1f}, {recall[name]['high'] * 100:+.1f}] points"
            for name in summary["recall_dropped"]
        ]
        return (
            f"A class's recall may have dropped by more than {max_drop * 100:.1f} points "
            f"({level:.0%} interval): " + ", ".join(drops) + f"; {described}"
        )
    return (
        f"Promoted: {described}, lower bound above {-tolerance:+.3f}; no class's recall interval "
        f"reaches a drop of {max_drop * 100:.1f} points"
    )


def _predict_test_split(model: ModelVersion, items: list[tuple[str, str]]) -> tuple[list[str], list]:
    """(the model's classes, its prediction for each test item), through its own engine: what it would
    answer in production."""
    engine = load_engine(model, shared=False)
    return engine.classes, engine.predict_paths([path for path, _ in items])


def _evaluate_on(model: ModelVersion, items: list[tuple[str, str]]) -> tuple[dict, list[str]]:
    """(the model's evaluation on the test items, its top class for each)."""
    from classifier.metrics import evaluate

    classes, predictions = _predict_test_split(model, items)
    metrics = evaluate([label for _, label in items], [p.probabilities for p in predictions], classes)
    return metrics, [p.top_class for p in predictions]


def apply_gate(candidate: ModelVersion) -> bool:
    """Promote the candidate if it passes the gate; else record why it stays out."""
    passed, reason, summary = _decide(candidate, production_model())
    _record_gate(candidate, passed, reason, summary)
    if passed:
        promote(candidate, None)
    return passed


def _decide(candidate: ModelVersion, production: ModelVersion | None) -> tuple[bool | None, str, dict | None]:
    """(passed, reason, bootstrap summary) by the gate's rule: a first model against the majority-class
    baseline; else the paired bootstrap on both models' per-image predictions; else, when those cannot be
    had, the point rule on the same test images. The test split is read once per gate."""
    from portal.services.datasets import training_data

    if production is None:
        return (*first_model_decision(candidate.metrics), None)
    items = training_data().test_items
    bootstrapped = _bootstrap_gate(candidate, production, items)
    if bootstrapped is not None:
        return bootstrapped
    return (*_point_gate(candidate, production, items), None)


def _point_gate(candidate: ModelVersion, production: ModelVersion, items: list) -> tuple[bool, str]:
    baseline, why_not = production_metrics_on_current_test_split(production, candidate, items)
    if baseline is None:
        return False, f"Not compared: {why_not}. An admin may promote it by hand."
    return gate_decision(candidate.metrics, baseline)


def _record_gate(candidate: ModelVersion, passed: bool | None, reason: str, summary: dict | None) -> None:
    """Store the decision, with the bootstrap's intervals (or the evaluation's own) for the pages."""
    metrics = dict(candidate.metrics or {})
    if summary is not None:
        metrics["intervals"] = summary.pop("intervals", {})
        metrics["gate"] = summary
    else:
        metrics.update(evaluation_intervals(metrics))
    if "intervals" in metrics:
        metrics["interval_level"] = settings.SEM_GATE_CONFIDENCE
    ModelVersion.objects.filter(pk=candidate.pk).update(
        gate_passed=bool(passed),
        gate_reason=reason,
        metrics=metrics,
        status=ModelVersion.Status.REJECTED if passed is False else ModelVersion.Status.CANDIDATE,
    )
    candidate.refresh_from_db()


def evaluation_intervals(metrics: dict) -> dict:
    """{"intervals": per-class precision and recall intervals} of a stored evaluation (drawn from its
    confusion matrix, for the dashboard's bars), or {} without one."""
    from classifier.bootstrap import intervals_from_confusion

    matrix, classes = metrics.get("confusion_matrix"), metrics.get("classes")
    if not matrix or not classes or isinstance(matrix, dict) or len(matrix) != len(classes):
        return {}
    return {
        "intervals": intervals_from_confusion(
            matrix, list(classes), level=settings.SEM_GATE_CONFIDENCE, resamples=settings.SEM_GATE_BOOTSTRAP_RESAMPLES
        )
    }


def _bootstrap_gate(candidate: ModelVersion, production: ModelVersion, items: list):
    """(passed, reason, summary) of the bootstrap gate, or None when it cannot run."""
    from classifier.bootstrap import metric_intervals

    if not items or set(production.classes) != set(candidate.classes):
        return None
    try:
        candidate_pred = [p.top_class for p in _predict_test_split(candidate, items)[1]]
        production_pred = [p.top_class for p in _predict_test_split(production, items)[1]]
    except Exception as error:
        logger.warning("no per-image predictions for the gate (%s); using the point rule", error)
        return None
    y_true = [label for _, label in items]
    passed, reason, summary = bootstrap_gate_decision(y_true, candidate_pred, production_pred, list(candidate.classes))
    summary["intervals"] = metric_intervals(
        y_true, candidate_pred, list(candidate.classes), level=settings.SEM_GATE_CONFIDENCE
    )
    return passed, reason, summary


def reevaluate_production() -> ModelVersion | None:
    """Evaluate production again on the current test split (after the split changed: the data migration,
    `manage.py reassign_splits`), with per-class precision/recall intervals for the dashboard."""
    from classifier.bootstrap import metric_intervals
    from portal.services.datasets import training_data
    from portal.services.splits import test_split_fingerprint

    production = production_model()
    if production is None:
        return None
    classes = list(production.classes)
    items = [(path, label) for path, label in training_data().test_items if label in set(classes)]
    if not items:
        return production
    metrics, top_classes = _evaluate_on(production, items)
    metrics["intervals"] = metric_intervals(
        [label for _, label in items], top_classes, metrics["classes"], level=settings.SEM_GATE_CONFIDENCE
    )
    metrics["interval_level"] = settings.SEM_GATE_CONFIDENCE
    metrics["test_split"] = test_split_fingerprint()
    for key in ("calibration", "gate"):
        if key in (production.metrics or {}):
            metrics[key] = production.metrics[key]
    ModelVersion.objects.filter(pk=production.pk).update(metrics=metrics, test_image_count=len(items))
    production.refresh_from_db()
    return production


def production_metrics_on_current_test_split(
    production: ModelVersion, candidate: ModelVersion, items: list[tuple[str, str]] | None = None
) -> tuple[dict | None, str]:
    """(production's metrics on the candidate's test images, "") so both are compared on the same images,
    or (None, why) when production cannot be evaluated there: its stored metrics come from another test
    split and would compare different things. `items`: the current test split (read here when not given)."""
    from portal.services.datasets import training_data

    items = training_data().test_items if items is None else items
    if not items:
        return None, "the current test split has no curated images"
    if set(production.classes) != set(candidate.classes):
        return None, f"production v{production.version} offers other categories than this candidate"
    try:
        return _evaluate_on(production, items)[0], ""
    except Exception as error:
        logger.warning("could not evaluate v%s on the test split for the gate: %s", production.version, error)
        return None, f"production v{production.version} could not be evaluated on the current test split ({error})"


@transaction.atomic
def promote(model: ModelVersion, user=None) -> ModelVersion:
    """Make `model` the production model (the previous one is retired); used by the gate, UI and API."""
    locked = {
        m.pk: m
        for m in ModelVersion.objects.select_for_update().filter(
            Q(pk=model.pk) | Q(status=ModelVersion.Status.PRODUCTION)
        )
    }
    target = locked.get(model.pk)
    if target is None:
        raise ModelActionError("This model version no longer exists")
    if target.status == ModelVersion.Status.PRODUCTION:
        return target
    if not artifact_exists(target):
        raise ModelActionError(f"v{target.version}'s artifact file is missing: {target.artifact_path}")
    previous = next((m for m in locked.values() if m.status == ModelVersion.Status.PRODUCTION), None)
    if previous:
        ModelVersion.objects.filter(pk=previous.pk).update(status=ModelVersion.Status.RETIRED)
    now = timezone.now()
    ModelVersion.objects.filter(pk=target.pk).update(
        status=ModelVersion.Status.PRODUCTION, promoted_at=now, promoted_by=user
    )
    _after_promotion(target.pk, previous.version if previous else None)
    target.refresh_from_db()
    return target


def rollback_targets(production: ModelVersion) -> QuerySet[ModelVersion]:
    """The versions a roll back from `production` may restore, the one it restores first: those that were
    production before, most recently promoted first."""
    return (
        ModelVersion.objects.filter(status=ModelVersion.Status.RETIRED, promoted_at__isnull=False)
        .exclude(pk=production.pk)
        .order_by("-promoted_at")
    )


@transaction.atomic
def rollback(user=None) -> ModelVersion:
    """Re-promote the model that was in production before the current one; the current one is rejected."""
    current = ModelVersion.objects.select_for_update().filter(status=ModelVersion.Status.PRODUCTION).first()
    if current is None:
        raise ModelActionError("There is no production model to roll back")
    previous = rollback_targets(current).select_for_update().first()
    if previous is None:
        raise ModelActionError("No earlier production model to roll back to")
    if not artifact_exists(previous):
        raise ModelActionError(f"v{previous.version}'s artifact file is missing: {previous.artifact_path}")
    who = getattr(user, "username", None) or "the system"
    reason = (
        current.gate_reason + "\n" if current.gate_reason else ""
    ) + f"Rolled back to v{previous.version} by {who} on {timezone.now():%Y-%m-%d %H:%M}"
    ModelVersion.objects.filter(pk=current.pk).update(status=ModelVersion.Status.REJECTED, gate_reason=reason)
    ModelVersion.objects.filter(pk=previous.pk).update(
        status=ModelVersion.Status.PRODUCTION, promoted_at=timezone.now(), promoted_by=user
    )
    _after_promotion(previous.pk, current.version)
    previous.refresh_from_db()
    return previous


def _after_promotion(model_version_id: int, previous_version: int | None) -> None:
    from portal.services.queueing import enqueue_backlog

    transaction.on_commit(
        lambda: events.emit("model.promoted", model_version_id=model_version_id, previous_version=previous_version)
    )
    transaction.on_commit(lambda: enqueue_backlog(model_version_id))
