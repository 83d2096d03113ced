"""The promotion gate, promote and roll back: which model version is production.

A candidate becomes production only when, on the same test images, it is not worse than production
beyond the test split's noise: a paired, stratified bootstrap (`classifier.bootstrap`) of candidate minus
production gives intervals (at SEM_GATE_CONFIDENCE) of the macro-F1 difference and of each class's
recall difference; the lower bound of the first must be above -SEM_GATE_MACRO_F1_TOLERANCE and of each
recall above -SEM_GATE_MAX_RECALL_DROP. With tolerance 0 a candidate must be better beyond noise: one
lucky image is not enough. A test split below SEM_GATE_MIN_TEST_IMAGES (or a class below
SEM_GATE_MIN_TEST_PER_CLASS) cannot tell: the gate says so and leaves the decision to an admin.
Without per-image predictions (production's artifact gone, classes changed) the point rule
`gate_decision` applies. The rules themselves (figures in, decision out): portal.services.learning.gate_rules.
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
from portal.services.learning.artifacts import artifact_exists, load_engine
from portal.services.learning.classification import production_model
from portal.services.learning.gate_rules import (
    GateDecision,
    bootstrap_gate_decision,
    first_model_decision,
    gate_decision,
    not_compared,
    noted,
)

logger = logging.getLogger(__name__)


class ModelActionError(Exception):
    """A promotion or roll-back that cannot be done; the message is shown to the admin."""


def _predict_test_split(model: ModelVersion, items: list[tuple[str, str]], ids=None) -> tuple[list[str], list]:
    """(the model's classes, its prediction for each test item), through its own engine: what it would
    answer in production. With the items' image ``ids``, from the embeddings stored by a model with the
    same body where there are some (its own, a head refit's base): no body run for those."""
    from portal.services.learning.classification_inference import from_stored_embeddings

    engine = load_engine(model, shared=False)
    stored = from_stored_embeddings(engine, list(ids), own_model=model) if ids else {}
    keys = list(ids) if ids else [None] * len(items)
    missing = [index for index, key in enumerate(keys) if key not in stored]
    computed = dict(zip(missing, engine.predict_paths([items[index][0] for index in missing])))
    return engine.classes, [stored[key] if key in stored else computed[index] for index, key in enumerate(keys)]


def _evaluate_on(model: ModelVersion, items: list[tuple[str, str]], ids=None) -> tuple[dict, list[str]]:
    """(the model's evaluation on the test items, its top class for each)."""
    from classifier.metrics import evaluate

    classes, predictions = _predict_test_split(model, items, ids)
    metrics = evaluate([label for _, label in items], [p.probabilities for p in predictions], classes)
    return metrics, [p.top_class for p in predictions]


def apply_gate(candidate: ModelVersion) -> bool:
    """Promote the candidate if it passes the gate; else record why it stays out."""
    decision = _decide(candidate, production_model())
    _record_gate(candidate, decision)
    if decision.passed:
        promote(candidate, None)
    return decision.passed


def _decide(candidate: ModelVersion, production: ModelVersion | None) -> GateDecision:
    """The decision by the gate's rule: a first model against the majority-class
    baseline; else the paired bootstrap on both models' per-image predictions; else, when those cannot be
    had, the point rule on the same test images. The test split is read once per gate."""
    from portal.services.learning.datasets import training_data

    if production is None:
        return first_model_decision(candidate.metrics)
    data = training_data()
    bootstrapped = _bootstrap_gate(candidate, production, data.test_items, data.test_ids)
    if bootstrapped is not None:
        return bootstrapped
    return _point_gate(candidate, production, data.test_items, data.test_ids)


def _point_gate(candidate: ModelVersion, production: ModelVersion, items: list, ids: list) -> GateDecision:
    baseline, why_not = production_metrics_on_current_test_split(production, candidate, items, ids)
    if baseline is None:
        return not_compared(why_not)
    return gate_decision(candidate.metrics, baseline)


def _record_gate(candidate: ModelVersion, decision: GateDecision) -> None:
    """Store the decision as data (`metrics["gate"]`) and in words (`gate_reason`, for the API and clients),
    with the bootstrap's intervals (or the evaluation's own) for the pages."""
    metrics = dict(candidate.metrics or {})
    gate = decision.as_data()
    if "intervals" in gate:
        metrics["intervals"] = gate.pop("intervals")
    else:
        metrics.update(evaluation_intervals(metrics))
    if "intervals" in metrics:
        metrics["interval_level"] = settings.SEM_GATE_CONFIDENCE
    metrics["gate"] = gate
    ModelVersion.objects.filter(pk=candidate.pk).update(
        gate_passed=bool(decision.passed),
        gate_reason=decision.reason,
        metrics=metrics,
        status=ModelVersion.Status.REJECTED if decision.passed is False else ModelVersion.Status.CANDIDATE,
    )
    candidate.refresh_from_db()


def add_gate_note(model: ModelVersion, note: dict, **fields) -> None:
    """Record what happened to a version after its gate decided (`gate_rules.noted`: the gate failing, a
    roll back) as data beside the decision and in its reason's words; `fields`: others to update with it."""
    metrics = dict(model.metrics or {})
    metrics["gate_notes"] = [*metrics.get("gate_notes", []), note]
    ModelVersion.objects.filter(pk=model.pk).update(
        metrics=metrics, gate_reason=noted(model.gate_reason, note), **fields
    )


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


def _bootstrap_gate(candidate: ModelVersion, production: ModelVersion, items: list, ids: list):
    """The bootstrap gate's decision, or None when it cannot run."""
    from classifier.bootstrap import metric_intervals

    if not items or set(production.classes) != set(candidate.classes):
        return None
    try:
        candidate_pred = [p.top_class for p in _predict_test_split(candidate, items, ids)[1]]
        production_pred = [p.top_class for p in _predict_test_split(production, items, ids)[1]]
    except Exception as error:
        logger.warning("no per-image predictions for the gate (%s); using the point rule", error)
        return None
    y_true = [label for _, label in items]
    decision = bootstrap_gate_decision(y_true, candidate_pred, production_pred, list(candidate.classes))
    decision.figures["intervals"] = metric_intervals(
        y_true, candidate_pred, list(candidate.classes), level=settings.SEM_GATE_CONFIDENCE
    )
    return decision


def reevaluate_production() -> ModelVersion | None:
    """Evaluate production again on the current test split (after the split changed: the data migration,
    `manage.py reassign_splits`), with per-class precision/recall intervals for the dashboard."""
    from classifier.bootstrap import metric_intervals
    from portal.services.ingestion.splits import test_split_fingerprint
    from portal.services.learning.datasets import training_data

    production = production_model()
    if production is None:
        return None
    classes = list(production.classes)
    data = training_data()
    kept = [(item, pk) for item, pk in zip(data.test_items, data.test_ids) if item[1] in set(classes)]
    items, ids = [item for item, _ in kept], [pk for _, pk in kept]
    if not items:
        return production
    metrics, top_classes = _evaluate_on(production, items, ids)
    metrics["intervals"] = metric_intervals(
        [label for _, label in items], top_classes, metrics["classes"], level=settings.SEM_GATE_CONFIDENCE
    )
    metrics["interval_level"] = settings.SEM_GATE_CONFIDENCE
    metrics["test_split"] = test_split_fingerprint()
    for key in ("calibration", "gate", "gate_notes"):
        if key in (production.metrics or {}):
            metrics[key] = production.metrics[key]
    ModelVersion.objects.filter(pk=production.pk).update(metrics=metrics, test_image_count=len(items))
    production.refresh_from_db()
    return production


def production_metrics_on_current_test_split(
    production: ModelVersion, candidate: ModelVersion, items: list[tuple[str, str]] | None = None, ids=None
) -> tuple[dict | None, str]:
    """(production's metrics on the candidate's test images, "") so both are compared on the same images,
    or (None, why) when production cannot be evaluated there: its stored metrics come from another test
    split and would compare different things. `items`: the current test split (read here when not given)."""
    from portal.services.learning.datasets import training_data

    if items is None:
        data = training_data()
        items, ids = data.test_items, data.test_ids
    if not items:
        return None, "the current test split has no curated images"
    if set(production.classes) != set(candidate.classes):
        return None, f"production v{production.version} offers other categories than this candidate"
    try:
        return _evaluate_on(production, items, ids)[0], ""
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
    note = {"note": "rolled_back", "to": previous.version, "by": who, "at": f"{timezone.now():%Y-%m-%d %H:%M}"}
    add_gate_note(current, note, status=ModelVersion.Status.REJECTED)
    ModelVersion.objects.filter(pk=previous.pk).update(
        status=ModelVersion.Status.PRODUCTION, promoted_at=timezone.now(), promoted_by=user
    )
    _after_promotion(previous.pk, current.version)
    previous.refresh_from_db()
    return previous


def _after_promotion(model_version_id: int, previous_version: int | None) -> None:
    from portal.services.delivery.queueing import enqueue_backlog

    transaction.on_commit(
        lambda: events.emit("model.promoted", model_version_id=model_version_id, previous_version=previous_version)
    )
    transaction.on_commit(lambda: enqueue_backlog(model_version_id))
