"""Training page: runs, live progress, loss curves, evaluation and the promotion gate.

Everyone signed in may look; only admins may start a run, promote or roll back (POST + CSRF).
The actions delegate to portal.services.learning.training, which holds the TrainingRun.active lock.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from portal.durations import parse_duration
from portal.models import ModelVersion, TrainingRun
from portal.permissions import is_admin
from portal.web.access import admin_required, member_required, member_required_json
from portal.web.dashboard_data import gate_reason, gate_summary, per_class_rows, readiness_context
from portal.web.run_display import (
    LOG_TAIL_CHARS,
    elapsed_text,
    phase_text,
    pretrained_fact,
    stage_rows,
    trust_facts,
)

RECENT_RUNS = 20


@member_required
def training(request):
    return training_page(request)


def training_page(request, *, budget_value: str = "", budget_error: str = "", status: int = 200):
    """The Training page; after a refused budget, with what was typed and why it was refused."""
    runs = TrainingRun.objects.select_related("model_version", "requested_by")[:RECENT_RUNS]
    active = TrainingRun.objects.filter(active=True).first()
    context = {
        "runs": runs,
        "active_run": active,
        "phase": phase_text(active.progress) if active else "",
        "elapsed": elapsed_text(active) if active else "",
        "models": _with_gate(ModelVersion.objects.select_related("promoted_by").defer("metadata")),
        **rollback_context(),
        "default_budget": f"{settings.SEM_TRAIN_BUDGET_S / 60:g}min",
        "budget_value": budget_value,
        "budget_error": budget_error,
        "budget_estimate": estimate_text() if is_admin(request.user) else "",
        **readiness_context(),
        **refit_context(),
    }
    return render(request, "portal/training.html", context, status=status)


def refit_context() -> dict:
    """Whether production's head can be refitted on its stored embeddings, and when that happens by itself."""
    from portal.services.learning.training import refit_unavailable

    return {
        "refit_unavailable": refit_unavailable(),
        "refit_min_labels": settings.SEM_REFIT_MIN_NEW_LABELS,
        "refit_quiet_min": f"{settings.SEM_REFIT_QUIET_S / 60:g}",
    }


def estimate_text() -> str:
    """What the training set needs, from an earlier run's measured cost (services.learning.training_estimate)."""
    from portal.services.learning.training_estimate import duration, estimate

    found = estimate()
    if found is None:
        return ""
    return (
        f"This training set ({found.n_train} training, {found.n_eval} evaluation images) needs a budget of about "
        f"{duration(found.needed_s(8))} for all 8 views of each training image, at least {duration(found.needed_s(1))} "
        f"(measured by run {found.source_run})."
    )


def _with_gate(models) -> list[ModelVersion]:
    """The models, each with `gate_view`: the gate's decision and interval (templates/portal/_gate_interval.html),
    and `reason`: its reason in words."""
    models = list(models)
    for model in models:
        model.gate_view, model.reason = gate_summary(model), gate_reason(model)
    return models


def rollback_context() -> dict:
    """Production and the version a roll back would restore (as services.learning.promotion.rollback picks it):
    the Roll back button is disabled without one, and its confirmation names both."""
    from portal.services.learning import promotion

    production = ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION).only("version").first()
    target = promotion.rollback_targets(production).only("version").first() if production else None
    return {"production_model": production, "rollback_target": target}


@member_required
def training_run(request, pk: int):
    run = get_object_or_404(TrainingRun.objects.select_related("model_version", "requested_by"), pk=pk)
    model = run.model_version
    context = {
        "run": run,
        "model": model,
        "per_class": per_class_rows(model),
        "gate": gate_summary(model),
        "reason": gate_reason(model),
        "config_rows": sorted((run.config or {}).items()),
        "stage_rows": stage_rows(run.history, run.stages),
        "elapsed": elapsed_text(run),
        "phase": phase_text(run.progress),
        "pretrained": pretrained_fact(run),
        "trust_facts": trust_facts(run),
    }
    return render(request, "portal/training_run.html", context)


@member_required_json
@require_GET
def training_progress(request, pk: int):
    """Polled by the progress bar: stage size, epoch, loss, and the run's status."""
    run = get_object_or_404(TrainingRun, pk=pk)
    return JsonResponse(progress_payload(run))


def progress_payload(run: TrainingRun) -> dict:
    return {
        "id": run.pk,
        "status": run.status,
        "status_display": run.get_status_display(),
        "active": bool(run.active),
        "fraction": run.progress_fraction,
        "progress": run.progress,
        "history": run.history,
        "error": run.error,
        "model_version": run.model_version.version if run.model_version_id else None,
        "stages": stage_rows(run.history, run.stages),
        "elapsed": elapsed_text(run),
        "phase": phase_text(run.progress),
        "log_tail": run.log[-LOG_TAIL_CHARS:],
    }


@admin_required
@require_POST
def training_start(request):
    from portal.services.learning import training as service

    budget = request.POST.get("budget", "").strip()
    try:
        config = {"budget_s": parse_duration(budget)} if budget else None
    except ValueError as error:
        # The page again, with what was typed kept and the reason next to the field (not a cleared field).
        return training_page(request, budget_value=budget[:32], budget_error=str(error), status=400)
    requested = service.request_training(
        trigger=TrainingRun.Trigger.MANUAL, user=request.user, force=True, config=config
    )
    run = requested.run
    if run is None:
        messages.warning(request, "A training run is already queued or running.")  # forced: only the lock refuses
    else:
        messages.success(request, f"Training run {run.pk} queued.")
        if service.request_warning(run):
            messages.warning(request, service.request_warning(run))
    return redirect("web:training")


@admin_required
@require_POST
def training_refit(request):
    """Refit production's head on its stored embeddings now (forced: the lock or the model may refuse)."""
    from portal.services.learning import training as service

    requested = service.request_head_refit(trigger=TrainingRun.Trigger.MANUAL, user=request.user, force=True)
    if requested.run is None:
        messages.warning(request, requested.reason)
    else:
        messages.success(request, f"Head refit {requested.run.pk} queued: it takes seconds, then the gate decides.")
    return redirect("web:training")


@admin_required
@require_POST
def training_cancel(request, pk: int):
    """A queued run is cancelled at once; a running one stops at its next batch (the worker checks)."""
    from portal.services.learning import training as service

    run = get_object_or_404(TrainingRun, pk=pk)
    if service.request_cancel(run):
        messages.success(request, f"Cancel requested for training run {run.pk}: it stops at its next batch.")
    else:
        messages.warning(request, f"Training run {run.pk} is not queued or running any more.")
    return redirect("web:training_run", pk=run.pk)


@admin_required
@require_POST
def model_promote(request, version: int):
    from portal.services.learning import promotion

    model = get_object_or_404(ModelVersion, version=version)
    try:
        promoted = promotion.promote(model, request.user)
    except promotion.ModelActionError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Model v{promoted.version} is now in production.")
    return redirect("web:training")


@admin_required
@require_POST
def model_rollback(request):
    from portal.services.learning import promotion

    try:
        restored = promotion.rollback(request.user)
    except promotion.ModelActionError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Rolled back: v{restored.version} is in production again.")
    return redirect("web:training")
