"""Training runs: when to train, and requesting a run under the training lock. Running one:
training_run.py; watching it: training_monitor.py; the sweeper's part: training_sweep.py; the gate and
promotion: promotion.py.

The lock is the TrainingRun.active column (True while queued or running, NULL afterwards) with a
unique constraint: a second simultaneous request fails in the database, and the lock survives
restarts of the web and worker processes. A run whose worker died stops sending heartbeats; the
sweeper fails it and so releases the lock.

Nothing changes for the production model until a run has produced a complete, verified artifact:
a failed, cancelled, killed or timed-out run leaves production and its predictions untouched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from portal import events
from portal.models import ModelVersion, SEMImage, TrainingRun
from portal.services.learning.artifacts import read_label_set
from portal.services.learning.classification import production_model
from portal.services.learning.datasets import TrainingData, class_readiness, training_data  # noqa: F401  (callers import them from here)

logger = logging.getLogger(__name__)

LABEL_SET_FILE = "train_labels.json"  # {image sha256: label} the model was trained on


# --- Deciding and requesting -----------------------------------------------------------------------


def current_train_labels() -> dict[str, str]:
    """{sha256: category name} of every train-split image with a current curated label."""
    rows = SEMImage.objects.filter(
        split=SEMImage.Split.TRAIN, curated_category__isnull=False, curated_category__active=True
    ).values_list("sha256", "curated_category__name")
    return dict(rows)


def baseline_model() -> ModelVersion | None:
    """The model new labels are counted against: production, else the newest trained one."""
    return production_model() or ModelVersion.objects.order_by("-version").first()


def full_training_baseline(model: ModelVersion | None) -> ModelVersion | None:
    """The last fully trained model behind ``model``: itself, or the base its head refits started from."""
    seen = set()
    while model is not None and (model.metadata or {}).get("refit_of") and model.pk not in seen:
        seen.add(model.pk)
        base = (model.metadata["refit_of"] or {}).get("version")
        model = ModelVersion.objects.filter(version=base).first() if base else None
    return model


def new_label_count(baseline: ModelVersion | None = None) -> int:
    """Curated train labels added or changed since ``baseline``'s training data (default: production,
    else the newest model)."""
    current = current_train_labels()
    baseline = baseline or baseline_model()
    if baseline is None:
        return len(current)
    trained_on = load_label_set(baseline)
    if trained_on is None:
        return _labels_created_after(baseline)
    return sum(1 for sha, label in current.items() if trained_on.get(sha) != label)


def load_label_set(model: ModelVersion) -> dict[str, str] | None:
    return read_label_set(model, LABEL_SET_FILE)


def _labels_created_after(model: ModelVersion) -> int:
    """Fallback when the label set file is gone: current train labels newer than the run's start."""
    run = getattr(model, "training_run", None)
    since = (run.started_at if run and run.started_at else None) or model.created_at
    return SEMImage.objects.filter(
        split=SEMImage.Split.TRAIN, labels__is_current=True, labels__created_at__gt=since
    ).count()


def active_run() -> TrainingRun | None:
    return TrainingRun.objects.filter(active=True).first()


@dataclass(frozen=True)
class TrainingRequest:
    """What a request for training did: the run it queued, or why it queued none (another run holds the
    lock: `active`; unforced and too few curated labels changed: `new_labels` of `needed`; a head refit
    that production cannot take: `unavailable`)."""

    run: TrainingRun | None = None
    active: TrainingRun | None = None
    new_labels: int | None = None
    needed: int | None = None
    unavailable: str = ""

    @property
    def refusal(self) -> str:
        """ "" when a run was queued, else the API's error code: "training_active", "no_new_labels" or
        "refit_unavailable"."""
        if self.run is not None:
            return ""
        if self.unavailable:
            return "refit_unavailable"
        return "no_new_labels" if self.new_labels is not None else "training_active"

    @property
    def reason(self) -> str:
        if self.refusal == "training_active" and self.active is None:
            return "Another training run is already queued or running."
        if self.refusal == "training_active":
            return f"Training run {self.active.pk} is already {self.active.status}."
        if self.refusal == "no_new_labels":
            return (
                f"{self.new_labels} new or changed curated labels since the last model; "
                f"{self.needed} needed (force trains anyway)."
            )
        if self.refusal == "refit_unavailable":
            return f"No head refit: {self.unavailable}."
        return ""


def request_training(
    *, trigger: str, user=None, force: bool = False, config: dict | None = None, enqueue: bool = True
) -> TrainingRequest:
    """Queue a full training run; else say why not (one is already active, or unforced and nothing is new).

    New labels are counted against the last fully trained model behind production (a head refit
    already learnt them, but from the views and features the full training recomputes). A scheduled
    check that finds too few records a SKIPPED run, so the admin sees it ran.
    `enqueue=False` leaves the queued run to the caller's process (`train_now --here`).
    """
    active = active_run()
    if active is not None:
        return TrainingRequest(active=active)
    if not force:
        changed, needed = new_label_count(full_training_baseline(baseline_model())), settings.SEM_RETRAIN_MIN_NEW_LABELS
        if changed < needed:
            if trigger == TrainingRun.Trigger.SCHEDULE:
                _record_skipped(trigger, f"{changed} new or changed curated labels; {needed} needed")
            return TrainingRequest(new_labels=changed, needed=needed)
    return _queue_run(trigger, user, force, training_config(config), TrainingRun.Kind.FULL, enqueue)


def request_head_refit(*, trigger: str, user=None, force: bool = False, enqueue: bool = True) -> TrainingRequest:
    """Queue a head refit of the production model on its stored embeddings (classifier/head_refit.py:
    seconds, where a full training computes every image's features again); else say why not: a run holds
    the lock, production cannot be refitted, or (unforced) fewer than SEM_REFIT_MIN_NEW_LABELS curated
    train labels changed since production's label set."""
    active = active_run()
    if active is not None:
        return TrainingRequest(active=active)
    unavailable = refit_unavailable()
    if unavailable:
        return TrainingRequest(unavailable=unavailable)
    if not force:
        changed, needed = new_label_count(), settings.SEM_REFIT_MIN_NEW_LABELS
        if needed == 0 or changed < needed:
            return TrainingRequest(new_labels=changed, needed=needed)
    return _queue_run(trigger, user, force, training_config(), TrainingRun.Kind.HEAD_REFIT, enqueue)


def refit_unavailable() -> str:
    """ "" when production can be refitted head-only, else why not."""
    from classifier.head_refit import can_refit

    production = production_model()
    if production is None:
        return "there is no production model to refit"
    return can_refit(production.metadata, settings.SEM_TRAIN_ARCH)


def refit_after_review() -> TrainingRequest | None:
    """The sweeper's minutely check: a head refit once the review session is over (no curated label for
    SEM_REFIT_QUIET_S seconds) and enough labels changed; None when no session ended since production."""
    from portal.models import Label

    production = production_model()
    if production is None or not settings.SEM_REFIT_MIN_NEW_LABELS:
        return None
    since = Label.objects.filter(created_at__gt=production.created_at)
    newest = since.aggregate(Max("created_at"))["created_at__max"]
    if newest is None or (timezone.now() - newest).total_seconds() < settings.SEM_REFIT_QUIET_S:
        return None
    # Cheap before the exact count (which reads every curated label and the label set): the labels saved
    # since production was registered, a lower bound.
    if since.filter(is_current=True, image__split=SEMImage.Split.TRAIN).count() < settings.SEM_REFIT_MIN_NEW_LABELS:
        return None
    if TrainingRun.objects.filter(kind=TrainingRun.Kind.HEAD_REFIT, created_at__gt=newest).exists():
        return None  # this session was refitted already (or refused at the gate): wait for new labels
    return request_head_refit(trigger=TrainingRun.Trigger.REVIEW)


def _queue_run(trigger: str, user, force: bool, config: dict, kind: str, enqueue: bool) -> TrainingRequest:
    """Create the run under the lock (the unique `active` column) and send it on commit."""
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(trigger=trigger, requested_by=user, forced=force, config=config, kind=kind)
    except IntegrityError:
        return TrainingRequest(active=active_run())  # another trigger won the race for the lock
    if kind == TrainingRun.Kind.FULL:
        _record_request_estimate(run)
    if enqueue:
        from portal.services.delivery.queueing import enqueue_training

        transaction.on_commit(lambda: enqueue_training(run.pk))
    return TrainingRequest(run=run)


def _record_request_estimate(run: TrainingRun) -> None:
    """Say at request time whether the budget fits the training set (portal.services.learning.training_estimate):
    kept in the run's plan (the run page, the API's budget_warning) and its log."""
    from portal.services.learning.training_estimate import budget_warning

    budget_s = run.config.get("budget_s")
    warning = budget_warning(budget_s)
    run.plan = {"request": {"budget_s": budget_s, "warning": warning}}
    if warning:
        run.log = f"{timezone.now():%Y-%m-%d %H:%M:%S} {warning}"
    TrainingRun.objects.filter(pk=run.pk).update(plan=run.plan, log=run.log)


def request_warning(run: TrainingRun) -> str | None:
    return ((run.plan or {}).get("request") or {}).get("warning")


def _record_skipped(trigger: str, reason: str) -> None:
    now = timezone.now()
    TrainingRun.objects.create(
        status=TrainingRun.Status.SKIPPED, active=None, trigger=trigger, log=reason, finished_at=now
    )
    logger.info("retraining skipped: %s", reason)


def training_config(overrides: dict | None = None) -> dict:
    """The TrainConfig from settings (SEM_TRAIN_*), with per-run overrides; validated here, not in the worker.

    Epochs come from the budget (SEM_TRAIN_BUDGET, or a run's `budget_s`) unless SEM_TRAIN_EPOCHS or a
    run's `epochs` fixes them. Per-stage learning rates and batch sizes are the classifier's defaults."""
    from classifier.config import TrainConfig

    overrides = dict(overrides or {})
    config = {
        "arch": settings.SEM_TRAIN_ARCH,
        "sizes": tuple(settings.SEM_TRAIN_SIZES),
        "weights_path": settings.SEM_PRETRAINED_WEIGHTS or None,
    }
    fixed_epochs = overrides.get("epochs") or settings.SEM_TRAIN_EPOCHS
    if "budget_s" in overrides or not fixed_epochs:
        config["budget_s"] = settings.SEM_TRAIN_BUDGET_S
    else:
        config["epochs"] = tuple(fixed_epochs)
    config.update(overrides)
    return TrainConfig.from_dict(config).to_dict()


def request_cancel(run: TrainingRun) -> bool:
    """A queued run is cancelled at once (releasing the lock); a running one stops at its next batch."""
    now = timezone.now()
    if TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.QUEUED).update(
        status=TrainingRun.Status.CANCELLED,
        active=None,
        cancel_requested=True,
        finished_at=now,
        error="Cancelled before it started",
    ):
        announce_finished(run.pk)
        return True
    return bool(TrainingRun.objects.filter(pk=run.pk, active=True).update(cancel_requested=True))


def announce_finished(run_id: int) -> None:
    transaction.on_commit(lambda: events.emit("training.finished", run_id=run_id))
