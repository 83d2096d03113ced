"""Training runs: when to train, the training lock, running a run (the gate and promotion: promotion.py).

The lock is the TrainingRun.active column (True while queued or running, NULL afterwards) with a
unique constraint: a second simultaneous request fails in the database, and the lock survives
restarts of the web and worker processes. A run whose worker died stops sending heartbeats; the
sweeper fails it and so releases the lock.

Nothing changes for the production model until a run has produced a complete, verified artifact:
a failed, cancelled, killed or timed-out run leaves production and its predictions untouched.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import traceback
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Max
from django.utils import timezone

from classifier.feature_budget import KIND as FEATURE_PLAN_KIND
from portal import events
from portal.models import ModelVersion, SEMImage, TrainingRun
from portal.services import file_cache
from portal.services.artifacts import ensure_current_format, read_label_set, store_artifact
from portal.services.classification import production_model
from portal.services.datasets import TrainingData, class_readiness, training_data  # noqa: F401  (callers import them from here)
from portal.services.promotion import apply_gate

logger = logging.getLogger(__name__)

LABEL_SET_FILE = "train_labels.json"  # {image sha256: label} the model was trained on
PROGRESS_WRITE_INTERVAL_S = 1.0
HEARTBEAT_INTERVAL_S = 10.0
LOG_LIMIT_CHARS = 200_000
MIN_TRAINER_BUDGET_SHARE = 0.1  # a trainer left less than this of its budget still plans with this much


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


def new_label_count() -> int:
    """Curated train labels added or changed since the baseline model's training data."""
    current = current_train_labels()
    baseline = baseline_model()
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


def request_training(
    *, trigger: str, user=None, force: bool = False, config: dict | None = None, enqueue: bool = True
) -> TrainingRun | None:
    """Queue a training run, or return None when one is already active or (unforced) nothing is new.

    A scheduled check that finds too few new labels records a SKIPPED run, so the admin sees it ran.
    `enqueue=False` leaves the queued run to the caller's process (`train_now --here`).
    """
    if active_run() is not None:
        return None
    if not force:
        changed, needed = new_label_count(), settings.SEM_RETRAIN_MIN_NEW_LABELS
        if changed < needed:
            if trigger == TrainingRun.Trigger.SCHEDULE:
                _record_skipped(trigger, f"{changed} new or changed curated labels; {needed} needed")
            return None
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(
                trigger=trigger, requested_by=user, forced=force, config=training_config(config)
            )
    except IntegrityError:
        return None  # another trigger won the race for the lock
    _record_request_estimate(run)
    if enqueue:
        from portal.services.queueing import enqueue_training

        transaction.on_commit(lambda: enqueue_training(run.pk))
    return run


def _record_request_estimate(run: TrainingRun) -> None:
    """Say at request time whether the budget fits the training set (portal.services.training_estimate):
    kept in the run's plan (the run page, the API's budget_warning) and its log."""
    from portal.services.training_estimate import budget_warning

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
        _announce_finished(run.pk)
        return True
    return bool(TrainingRun.objects.filter(pk=run.pk, active=True).update(cancel_requested=True))


# --- Running ---------------------------------------------------------------------------------------


def claim_run(run_id: int) -> TrainingRun | None:
    """QUEUED -> RUNNING exactly once, however many times the task is delivered."""
    now = timezone.now()
    claimed = TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.QUEUED, active=True).update(
        status=TrainingRun.Status.RUNNING, started_at=now, heartbeat_at=now
    )
    return TrainingRun.objects.get(pk=run_id) if claimed else None


def run_training(run_id: int, *, celery_task_id: str = "") -> TrainingRun | None:
    """Run a queued training to the end: a new ModelVersion through the gate, or a recorded failure."""
    run = claim_run(run_id)
    if run is None:
        return None  # deleted, cancelled, already run, or taken by another delivery of the same message
    return execute_run(run, celery_task_id=celery_task_id)


def execute_run(run: TrainingRun, *, celery_task_id: str = "") -> TrainingRun | None:
    """The body of run_training, for a run already claimed (RUNNING)."""
    if celery_task_id:
        TrainingRun.objects.filter(pk=run.pk).update(celery_task_id=celery_task_id)
    monitor = RunMonitor(run)
    work_dir = Path(settings.MODEL_DIR) / f"run-{run.pk}"
    try:
        with monitor:
            model = _train_and_register(run, monitor, work_dir)
    except BaseException as error:  # record why, whatever it was, then let Celery see it
        _record_failure(run, monitor, error)
        if not isinstance(error, Exception):
            raise
        return TrainingRun.objects.get(pk=run.pk)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
        file_cache.cache().release()  # the data set's cached derivatives may be evicted again
    _announce_finished(run.pk)
    return TrainingRun.objects.select_related("model_version").get(pk=run.pk) if model else None


def _train_and_register(run: TrainingRun, monitor: RunMonitor, work_dir: Path) -> ModelVersion:
    from classifier.config import TrainConfig
    from classifier.fingerprint import data_fingerprint
    from classifier.train import train

    monitor.progress({"event": "phase", "phase": "reading the training set", "fraction": 0.0})
    data = training_data()
    if len(data.classes) < 2:
        raise ValueError(
            f"Training needs at least two categories with {settings.SEM_MIN_IMAGES_PER_CLASS} or more "
            "curated train-split images each"
        )
    fingerprint = data_fingerprint(data.train_labels.items())
    monitor.log(
        f"{len(data.train_items)} train and {len(data.test_items)} test images in "
        f"{len(data.classes)} classes; {data.skipped} curated images without a derivative skipped"
    )
    if data.too_few:
        too_few = ", ".join(f"{name} ({n})" for name, n in data.too_few.items())
        monitor.log(f"Not offered (fewer than {settings.SEM_MIN_IMAGES_PER_CLASS} curated training images): {too_few}")
    TrainingRun.objects.filter(pk=run.pk).update(
        train_image_count=len(data.train_items), test_image_count=len(data.test_items), data_fingerprint=fingerprint
    )
    work_dir.mkdir(parents=True, exist_ok=True)
    result = train(
        data.train_items,
        _config_within_budget(TrainConfig.from_dict(run.config), run, monitor),
        work_dir / "model.safetensors",
        test_items=data.test_items or None,
        classes=data.classes,
        groups=data.train_groups,
        fingerprint=fingerprint,
        progress=monitor.progress,
        should_stop=monitor.should_stop,
    )
    monitor.history = list(result.history or monitor.history)
    return register_model(run, result, data, fingerprint, work_dir, monitor)


def _config_within_budget(config, run: TrainingRun, monitor: RunMonitor):
    """The budget counts from the run's start: what reading the training set took (copies from object
    storage, say) is no longer the trainer's."""
    if config.budget_s and run.started_at:
        spent = (timezone.now() - run.started_at).total_seconds()
        if spent >= 1:
            config.budget_s = max(config.budget_s * MIN_TRAINER_BUDGET_SHARE, config.budget_s - spent)
            monitor.log(f"Reading the training set took {spent:.0f} s of the budget; {config.budget_s:.0f} s left")
    return config


def register_model(run, result, data: TrainingData, fingerprint: str, work_dir: Path, monitor) -> ModelVersion | None:
    """Store the artifact as v{n}/ (MODEL_DIR or the models bucket) and create the ModelVersion in one
    transaction, then apply the gate and close the run as succeeded."""
    from classifier.fingerprint import file_sha256

    with transaction.atomic():
        # The run may have been failed by the sweeper (no heartbeat) while this worker was busy.
        if not TrainingRun.objects.select_for_update().filter(pk=run.pk, status=TrainingRun.Status.RUNNING).exists():
            monitor.log("The run was closed while training (declared lost); its model is discarded")
            return None
        version = (ModelVersion.objects.aggregate(Max("version"))["version__max"] or 0) + 1
        artifact = work_dir / Path(result.artifact_path).name
        model = ModelVersion.objects.create(
            version=version,
            artifact_path=store_artifact(version, artifact, data.train_labels, LABEL_SET_FILE),
            artifact_sha256=file_sha256(artifact),
            arch=result.metadata.get("arch", run.config.get("arch", "")),
            classes=list(data.classes),
            data_fingerprint=fingerprint,
            train_image_count=len(data.train_items),
            test_image_count=len(data.test_items),
            metrics=result.evaluation or {},
            metadata=_model_metadata(result.metadata),
        )
        TrainingRun.objects.filter(pk=run.pk).update(model_version=model)
        monitor.log(f"Trained v{version} in {result.duration_s:.0f} s on {result.device}; applying the gate")
    # Outside the transaction (the gate may evaluate the production model on the test split), but
    # before the run is closed: a run reads "succeeded" only once the gate has decided, so pages and
    # clients that wait for the run see the model's final status.
    try:
        current = production_model()
        if current is not None:  # the gate re-evaluates production: a format version 1 file is upgraded first
            ensure_current_format(current)
        apply_gate(model)
    except Exception as error:  # the run did succeed; the admin can still promote by hand
        logger.exception("promotion gate failed for v%s", model.version)
        ModelVersion.objects.filter(pk=model.pk).update(gate_passed=False, gate_reason=f"Gate failed: {error}")
    _finish(
        run,
        monitor,
        TrainingRun.Status.SUCCEEDED,
        model_version=model,
        device=str(result.device),
        duration_s=result.duration_s,
    )
    return model


def _model_metadata(metadata: dict) -> dict:
    """The artifact metadata minus what ModelVersion stores in its own columns."""
    return {key: value for key, value in (metadata or {}).items() if key not in {"evaluation"}}


def _record_failure(run: TrainingRun, monitor: RunMonitor, error: BaseException) -> None:
    from classifier.train import TrainingCancelled

    if isinstance(error, TrainingCancelled) and monitor.stop_reason == "cancel":
        status, message = TrainingRun.Status.CANCELLED, "Cancelled by an admin"
    elif monitor.stop_reason == "timeout" or type(error).__name__ in {"SoftTimeLimitExceeded", "TimeLimitExceeded"}:
        status, message = TrainingRun.Status.FAILED, f"Timed out after {settings.SEM_TRAINING_TIMEOUT_S} s"
    else:
        status, message = TrainingRun.Status.FAILED, f"{type(error).__name__}: {error}"
        monitor.log(traceback.format_exc())
    logger.warning("training run %s: %s", run.pk, message)
    try:
        _finish(run, monitor, status, error=message)
    finally:
        _announce_finished(run.pk)


def _finish(run: TrainingRun, monitor: RunMonitor, status: str, **fields) -> None:
    now = timezone.now()
    started = run.started_at or now
    fields.setdefault("duration_s", (now - started).total_seconds())
    TrainingRun.objects.filter(pk=run.pk).update(
        status=status,
        active=None,
        finished_at=now,
        heartbeat_at=now,
        log=monitor.log_text(),
        history=monitor.history,
        progress=monitor.last_event,
        progress_fraction=1.0 if status == TrainingRun.Status.SUCCEEDED else monitor.fraction,
        **fields,
    )


def _announce_finished(run_id: int) -> None:
    transaction.on_commit(lambda: events.emit("training.finished", run_id=run_id))


# Tests only: with this environment variable naming a file, a training stops at its first batch, once its
# progress is written, creates the file and waits while the file exists (a test kills or releases it).
TEST_HOLD_ENV = "SEM_TEST_HOLD_TRAINING_FILE"


def _hold_for_test(marker: Path) -> None:
    marker.touch()
    while marker.exists():
        time.sleep(0.1)


class RunMonitor:
    """Progress, heartbeat, log, cancellation and the time limit of one running training.

    The trainer calls `progress(event)` and `should_stop()` between batches; database writes are
    throttled to one a second. A background thread keeps the heartbeat fresh through long phases
    without progress events (evaluation, saving), so "no heartbeat" really means "worker gone".
    """

    def __init__(self, run: TrainingRun) -> None:
        self.run_id = run.pk
        self.deadline = time.monotonic() + settings.SEM_TRAINING_TIMEOUT_S
        self.stop_reason: str | None = None
        self.last_event: dict = {}
        self.fraction = 0.0
        self.history: list = []
        self._lines: list[str] = run.log.splitlines() if run.log else []  # the request's budget warning
        self._request_plan = (run.plan or {}).get("request")
        self._last_write = 0.0
        self._last_cancel_check = 0.0
        self._stop_heartbeat = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name=f"training-{run.pk}-heartbeat", daemon=True)
        self._log_handler = _ListHandler(self._lines)

    def __enter__(self) -> RunMonitor:
        logging.getLogger("classifier").addHandler(self._log_handler)
        self._heartbeat.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop_heartbeat.set()
        self._heartbeat.join(timeout=HEARTBEAT_INTERVAL_S * 2)
        logging.getLogger("classifier").removeHandler(self._log_handler)

    def log(self, message: str) -> None:
        self._lines.append(f"{timezone.now():%Y-%m-%d %H:%M:%S} {message}")

    def log_text(self) -> str:
        return "\n".join(self._lines)[-LOG_LIMIT_CHARS:]

    def progress(self, event) -> None:
        data = _event_dict(event)
        if data.get("event") == "plan":
            self._record_plan(data)
            return
        new_phase = data.get("phase") != self.last_event.get("phase")
        self.last_event = data
        self.fraction = float(data.get("fraction", self.fraction) or 0.0)
        if data.get("kind") in {"epoch_end", "epoch"} or data.get("event") in {"epoch_end", "epoch"}:
            self.history.append(data)
            self.log(_describe(data))
        if data.get("event") == "batch" and os.environ.get(TEST_HOLD_ENV):
            self._write()  # durable before holding: the test waits for this row, not for a passing event
            _hold_for_test(Path(os.environ[TEST_HOLD_ENV]))
        # A new phase is written at once: the page must not name the previous one through a long phase.
        if new_phase or time.monotonic() - self._last_write >= PROGRESS_WRITE_INTERVAL_S:
            self._write()

    def _record_plan(self, plan: dict) -> None:
        if plan.get("kind") == FEATURE_PLAN_KIND:
            self.log(_describe_feature_plan(plan))
        else:
            epochs = "/".join(str(e) for e in plan.get("epochs", []))
            self.log(
                f"Budget {plan['budget_s']:.0f} s: {epochs} epochs planned ({plan['planned_s']:.0f} s) from measured "
                f"step times "
                + ", ".join(f"{s['size']} px {s['step_s']:.2f} s" for s in plan.get("stages", []))
                + (f"; {plan['note']}" if plan.get("note") else "")
            )
        if self._request_plan:
            plan = {**plan, "request": self._request_plan}
        TrainingRun.objects.filter(pk=self.run_id).update(plan=plan)

    def should_stop(self) -> bool:
        if time.monotonic() > self.deadline:
            self.stop_reason = "timeout"
            return True
        if time.monotonic() - self._last_cancel_check >= PROGRESS_WRITE_INTERVAL_S:
            self._last_cancel_check = time.monotonic()
            if TrainingRun.objects.filter(pk=self.run_id, cancel_requested=True).exists():
                self.stop_reason = "cancel"
        return self.stop_reason is not None

    def _write(self) -> None:
        self._last_write = time.monotonic()
        TrainingRun.objects.filter(pk=self.run_id, status=TrainingRun.Status.RUNNING).update(
            progress=self.last_event,
            progress_fraction=self.fraction,
            history=self.history,
            heartbeat_at=timezone.now(),
            log=self.log_text(),
        )

    def _beat(self) -> None:
        try:
            while not self._stop_heartbeat.wait(HEARTBEAT_INTERVAL_S):
                TrainingRun.objects.filter(pk=self.run_id, status=TrainingRun.Status.RUNNING).update(
                    heartbeat_at=timezone.now()
                )
        except Exception:
            logger.exception("training heartbeat failed")
        finally:
            connection.close()  # this thread's own connection


class _ListHandler(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(level=logging.INFO)
        self.lines = lines
        self.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _event_dict(event) -> dict:
    import dataclasses

    if dataclasses.is_dataclass(event):
        data = dataclasses.asdict(event)
    elif isinstance(event, dict):
        data = dict(event)
    else:
        data = dict(vars(event))
    return json.loads(json.dumps(data, default=str))  # JSON-safe (numpy floats, paths)


def _describe_feature_plan(plan: dict) -> str:
    budget = f"Budget {plan['budget_s']:.0f} s: " if plan.get("budget_s") else "No budget: "
    text = (
        f"{budget}{plan['train_views']} views per training image ({plan['n_train']} images), "
        f"{plan['eval_views']} test-time views ({plan['n_eval']} evaluation images)"
    )
    if plan.get("per_view_s"):
        text += f", planned {plan['planned_s']:.0f} s at {plan['per_view_s']:.3f} s measured per image view"
    return text + (f"; {plan['note']}" if plan.get("note") else "")


def _describe(event: dict) -> str:
    return " ".join(
        f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
        for key, value in event.items()
        if not isinstance(value, (dict, list))
    )


# --- Sweeper ---------------------------------------------------------------------------------------


def fail_stale_runs() -> int:
    """Release the lock of runs whose worker died (no heartbeat) and re-send lost queued runs."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.SEM_TRAINING_STALE_AFTER_S)
    lost = TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING, heartbeat_at__lt=stale)
    failed = 0
    for run in lost:
        failed += TrainingRun.objects.filter(
            pk=run.pk, status=TrainingRun.Status.RUNNING, heartbeat_at__lt=stale
        ).update(
            status=TrainingRun.Status.FAILED,
            active=None,
            finished_at=now,
            error=f"Worker lost: no heartbeat since {run.heartbeat_at:%Y-%m-%d %H:%M:%S %Z}",
        )
        _announce_finished(run.pk)
    remove_abandoned_work_dirs()
    _resend_queued(now)
    return failed


def remove_abandoned_work_dirs() -> int:
    """Remove MODEL_DIR/run-<id>/ of runs that are neither queued nor running: what a worker killed
    mid-run leaves (its own clean-up never ran). Returns how many folders were removed."""
    root = Path(settings.MODEL_DIR)
    try:
        folders = {
            int(path.name[4:]): path
            for path in root.iterdir()
            if path.name.startswith("run-") and path.name[4:].isdigit() and path.is_dir()
        }
    except FileNotFoundError:
        return 0
    if not folders:
        return 0
    live = set(
        TrainingRun.objects.filter(
            pk__in=list(folders), status__in=[TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING]
        ).values_list("pk", flat=True)
    )
    removed = 0
    for run_id, folder in folders.items():
        if run_id not in live:
            shutil.rmtree(folder, ignore_errors=True)
            logger.info("removed %s: the working folder of training run %s, which is over", folder, run_id)
            removed += 1
    return removed


def _resend_queued(now) -> None:
    """A queued run whose message was lost (broker restart) would hold the lock forever."""
    from portal.services.queueing import enqueue_training

    waiting = now - timedelta(seconds=settings.SEM_PENDING_SWEEP_AFTER_S)
    for run_id in TrainingRun.objects.filter(status=TrainingRun.Status.QUEUED, created_at__lt=waiting).values_list(
        "pk", flat=True
    ):
        transaction.on_commit(lambda run_id=run_id: enqueue_training(run_id))
