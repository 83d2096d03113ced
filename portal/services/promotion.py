"""The promotion gate, promote and roll back: which model version is production.

A candidate becomes production only when, on the same test images, its macro-F1 is not below
production's (minus a tolerance) and no class's recall fell by more than a set number of points.
Admins may promote any candidate or roll back by hand. A promotion starts the background
re-classification of existing images and announces `model.promoted`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from portal import events
from portal.models import ModelVersion
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
        return False, (f"Macro-F1 {f1:.3f} is below production's {production_f1:.3f}"
                       f" (tolerance {tolerance:.3f})")
    drops = _recall_drops(candidate, production)
    worst = [f"{name} {drop * 100:.1f} points" for name, drop in drops if drop > max_drop + 1e-9]
    if worst:
        return False, f"Recall dropped by more than {max_drop * 100:.1f} points: " + ", ".join(worst)
    return True, f"Macro-F1 {f1:.3f} vs production {production_f1:.3f}; no class recall dropped more than " \
                 f"{max_drop * 100:.1f} points"


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
        return False, (f"First model: accuracy {accuracy:.3f} does not beat the majority-class baseline "
                       f"(always '{name}': {baseline:.3f}) by the required {margin:.3f}")
    if f1 < floor:
        return False, f"First model: macro-F1 {f1:.3f} is below the floor {floor:.3f}"
    return True, (f"First model: accuracy {accuracy:.3f} beats the majority-class baseline "
                  f"(always '{name}': {baseline:.3f}) by more than {margin:.3f}; macro-F1 {f1:.3f}")


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


def apply_gate(candidate: ModelVersion) -> bool:
    """Promote the candidate if it passes the gate; else record why it stays out."""
    production = production_model()
    baseline = production_metrics_on_current_test_split(production, candidate) if production else None
    passed, reason = gate_decision(candidate.metrics, baseline)
    ModelVersion.objects.filter(pk=candidate.pk).update(
        gate_passed=passed, gate_reason=reason,
        status=ModelVersion.Status.CANDIDATE if passed else ModelVersion.Status.REJECTED,
    )
    candidate.refresh_from_db()
    if passed:
        promote(candidate, None)
    return passed


def production_metrics_on_current_test_split(production: ModelVersion, candidate: ModelVersion) -> dict:
    """Production evaluated on the candidate's test images, so both are compared on the same images.

    Falls back to production's stored metrics when it cannot be re-evaluated (artifact gone,
    classes changed since).
    """
    from portal.services.training import training_data  # training imports this module

    data = training_data()
    items = data.test_items
    if not items or set(production.classes) != set(candidate.classes):
        return production.metrics
    try:
        from classifier.engine import Engine
        from classifier.metrics import evaluate

        engine = Engine.from_artifact(production.artifact_path, expected_sha256=production.artifact_sha256 or None)
        predictions = engine.predict_paths([path for path, _ in items])
        return evaluate([label for _, label in items], [p.probabilities for p in predictions], engine.classes)
    except Exception as error:
        logger.warning("could not re-evaluate v%s for the gate (%s); using its stored metrics",
                       production.version, error)
        return production.metrics


@transaction.atomic
def promote(model: ModelVersion, user=None) -> ModelVersion:
    """Make `model` the production model (the previous one is retired); used by the gate, UI and API."""
    locked = {m.pk: m for m in ModelVersion.objects.select_for_update().filter(
        Q(pk=model.pk) | Q(status=ModelVersion.Status.PRODUCTION))}
    target = locked.get(model.pk)
    if target is None:
        raise ModelActionError("This model version no longer exists")
    if target.status == ModelVersion.Status.PRODUCTION:
        return target
    if not Path(target.artifact_path).is_file():
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


@transaction.atomic
def rollback(user=None) -> ModelVersion:
    """Re-promote the model that was in production before the current one; the current one is rejected."""
    current = ModelVersion.objects.select_for_update().filter(status=ModelVersion.Status.PRODUCTION).first()
    if current is None:
        raise ModelActionError("There is no production model to roll back")
    previous = (ModelVersion.objects.select_for_update()
                .filter(status=ModelVersion.Status.RETIRED, promoted_at__isnull=False)
                .exclude(pk=current.pk).order_by("-promoted_at").first())
    if previous is None:
        raise ModelActionError("No earlier production model to roll back to")
    if not Path(previous.artifact_path).is_file():
        raise ModelActionError(f"v{previous.version}'s artifact file is missing: {previous.artifact_path}")
    who = getattr(user, "username", None) or "the system"
    reason = (current.gate_reason + "\n" if current.gate_reason else "") + \
        f"Rolled back to v{previous.version} by {who} on {timezone.now():%Y-%m-%d %H:%M}"
    ModelVersion.objects.filter(pk=current.pk).update(status=ModelVersion.Status.REJECTED, gate_reason=reason)
    ModelVersion.objects.filter(pk=previous.pk).update(
        status=ModelVersion.Status.PRODUCTION, promoted_at=timezone.now(), promoted_by=user
    )
    _after_promotion(previous.pk, current.version)
    previous.refresh_from_db()
    return previous


def _after_promotion(model_version_id: int, previous_version: int | None) -> None:
    from portal.services.queueing import enqueue_backlog

    transaction.on_commit(lambda: events.emit(
        "model.promoted", model_version_id=model_version_id, previous_version=previous_version))
    transaction.on_commit(lambda: enqueue_backlog(model_version_id))
