"""Running a queued training: claim it once, train on the curated data within its budget, register the
artifact as a new ModelVersion, apply the promotion gate (portal.services.learning.promotion), then close the run;
or record why it failed. Nothing changes for production until a run has produced a complete, verified
artifact. Monitoring: portal.services.learning.training_monitor."""

from __future__ import annotations

import logging
import shutil
import traceback
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from portal.models import ModelVersion, TrainingRun
from portal.services.delivery import file_cache
from portal.services.learning.artifacts import ensure_current_format, local_artifact, store_artifact
from portal.services.learning.classification import production_model
from portal.services.learning.datasets import TrainingData, training_data
from portal.services.learning.promotion import add_gate_note, apply_gate
from portal.services.learning.training import LABEL_SET_FILE, announce_finished
from portal.services.learning.training_monitor import RunMonitor

logger = logging.getLogger(__name__)

MIN_TRAINER_BUDGET_SHARE = 0.1  # a trainer left less than this of its budget still plans with this much


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
    train_and_register = _refit_and_register if run.kind == TrainingRun.Kind.HEAD_REFIT else _train_and_register
    try:
        with monitor:
            model = train_and_register(run, monitor, work_dir)
    except BaseException as error:  # record why, whatever it was, then let Celery see it
        _record_failure(run, monitor, error)
        if not isinstance(error, Exception):
            raise
        return TrainingRun.objects.get(pk=run.pk)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
        file_cache.cache().release()  # the data set's cached derivatives may be evicted again
    announce_finished(run.pk)
    return TrainingRun.objects.select_related("model_version").get(pk=run.pk) if model else None


def _train_and_register(run: TrainingRun, monitor: RunMonitor, work_dir: Path) -> ModelVersion:
    from classifier.config import TrainConfig
    from classifier.fingerprint import data_fingerprint
    from classifier.train import train

    monitor.progress({"event": "phase", "phase": "reading the training set", "fraction": 0.0})
    data = _checked_training_data(run, monitor)
    fingerprint = data_fingerprint(data.train_labels.items())
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
        outliers=data.outliers,
    )
    monitor.stages = list(result.stages)
    return register_model(run, result, data, fingerprint, work_dir, monitor)


def _checked_training_data(run: TrainingRun, monitor: RunMonitor) -> TrainingData:
    """The curated data (datasets.training_data), refused below two categories, logged and counted on the run."""
    from classifier.fingerprint import data_fingerprint

    data = training_data()
    if len(data.classes) < 2:
        raise ValueError(
            f"Training needs at least two categories with {settings.SEM_MIN_IMAGES_PER_CLASS} or more "
            "curated train-split images each"
        )
    monitor.log(
        f"{len(data.train_items)} train and {len(data.test_items)} test images in "
        f"{len(data.classes)} classes; {data.skipped} curated images without a derivative skipped; "
        f"{len(data.outliers)} marked not SEM / not classifiable, for the out-of-scope detector"
    )
    if data.too_few:
        too_few = ", ".join(f"{name} ({n})" for name, n in data.too_few.items())
        monitor.log(f"Not offered (fewer than {settings.SEM_MIN_IMAGES_PER_CLASS} curated training images): {too_few}")
    TrainingRun.objects.filter(pk=run.pk).update(
        train_image_count=len(data.train_items),
        test_image_count=len(data.test_items),
        data_fingerprint=data_fingerprint(data.train_labels.items()),
    )
    return data


def _refit_and_register(run: TrainingRun, monitor: RunMonitor, work_dir: Path) -> ModelVersion | None:
    """A head refit: production's body, a head fitted on the embeddings production stored for the curated
    images (those it has not embedded yet are computed from their derivatives), through the same gate."""
    from classifier.config import TrainConfig
    from classifier.fingerprint import data_fingerprint
    from classifier.head_refit import refit_head

    base = production_model()
    if base is None:
        raise ValueError("There is no production model to refit")
    base = ensure_current_format(base)  # a format version 1 file is rewritten once, never unpickled
    monitor.progress({"event": "phase", "phase": "reading the stored embeddings", "fraction": 0.0})
    data = _checked_training_data(run, monitor)
    fingerprint = data_fingerprint(data.train_labels.items())
    train, test = embedded_items(base, data)
    stored = sum(item.embedding is not None for item in train + test)
    monitor.log(f"Head refit of v{base.version}: {stored} of {len(train) + len(test)} embeddings stored")
    work_dir.mkdir(parents=True, exist_ok=True)
    result = refit_head(
        local_artifact(base),
        base.artifact_sha256 or None,
        train,
        test,
        data.classes,
        data.train_groups,
        work_dir / "model.safetensors",
        config=TrainConfig.from_dict(run.config),
        fingerprint=fingerprint,
        progress=monitor.progress,
    )
    result.metadata["refit_of"]["version"] = base.version
    monitor.stages = list(result.stages)
    return register_model(run, result, data, fingerprint, work_dir, monitor)


def embedded_items(base: ModelVersion, data: TrainingData):
    """(train, test) EmbeddedItems of ``data`` in its order, with the embeddings ``base`` stored (None
    where it stored none)."""
    from classifier.head_refit import EmbeddedItem
    from portal.models import Embedding
    from portal.services.curation.similar import decode

    ids = data.train_ids + data.test_ids
    vectors = dict(Embedding.objects.filter(model_version=base, image_id__in=ids).values_list("image_id", "vector"))
    embedded = [
        EmbeddedItem(path, label, decode(vectors[pk]) if pk in vectors else None)
        for (path, label), pk in zip(data.train_items + data.test_items, ids)
    ]
    return embedded[: len(data.train_items)], embedded[len(data.train_items) :]


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
        add_gate_note(model, {"note": "failed", "error": str(error)}, gate_passed=False)
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
        announce_finished(run.pk)


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
        stages=monitor.stages,
        progress=monitor.last_event,
        progress_fraction=1.0 if status == TrainingRun.Status.SUCCEEDED else monitor.fraction,
        **fields,
    )
