"""A training worker killed mid-run never runs its own clean-up: once the sweeper has failed the run
(no heartbeat), its working folder MODEL_DIR/run-<id>/ goes too. The real kill -9 of a training
worker is in tests/workers/test_worker_processes.py; this is the sweeper's side, fast."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from portal.models import TrainingRun
from portal.services.learning import training_sweep

pytestmark = pytest.mark.django_db


def _run(status: str, **fields) -> TrainingRun:
    return TrainingRun.objects.create(status=status, trigger=TrainingRun.Trigger.MANUAL, **fields)


def test_the_sweeper_removes_the_working_folder_of_a_run_whose_worker_was_killed(settings):
    now = timezone.now()
    lost = _run(TrainingRun.Status.RUNNING, started_at=now - timedelta(hours=2), heartbeat_at=now - timedelta(hours=1))
    finished = _run(TrainingRun.Status.FAILED, active=None, finished_at=now)  # failed before this clean-up existed
    root = Path(settings.MODEL_DIR)
    lost_dir, old_dir = root / f"run-{lost.pk}", root / f"run-{finished.pk}"
    lost_dir.mkdir(parents=True)  # what the killed worker left: empty
    old_dir.mkdir()
    (old_dir / "model.pth.partial").write_bytes(b"half a model")
    version_dir, other = root / "v1", root / "run-notes"
    version_dir.mkdir()
    other.mkdir()

    from workers.tasks import sweep

    assert sweep()["failed_runs"] == 1
    assert not lost_dir.exists() and not old_dir.exists()
    assert version_dir.exists() and other.exists()  # model versions and unknown folders stay


def test_the_working_folder_of_a_live_run_stays(settings):
    now = timezone.now()
    running = _run(TrainingRun.Status.RUNNING, started_at=now, heartbeat_at=now)
    work_dir = Path(settings.MODEL_DIR) / f"run-{running.pk}"
    work_dir.mkdir(parents=True)

    assert training_sweep.fail_stale_runs() == 0
    assert work_dir.exists()
