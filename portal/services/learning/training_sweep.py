"""The sweeper's part in training: fail runs whose worker died (no heartbeat), so the lock is released;
remove the working folders such workers left; re-send queued runs whose message was lost."""

from __future__ import annotations

import logging
import shutil
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from portal.models import TrainingRun
from portal.services.learning.training import announce_finished

logger = logging.getLogger(__name__)


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
        announce_finished(run.pk)
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
    from portal.services.delivery.queueing import enqueue_training

    waiting = now - timedelta(seconds=settings.SEM_PENDING_SWEEP_AFTER_S)
    for run_id in TrainingRun.objects.filter(status=TrainingRun.Status.QUEUED, created_at__lt=waiting).values_list(
        "pk", flat=True
    ):
        transaction.on_commit(lambda run_id=run_id: enqueue_training(run_id))
