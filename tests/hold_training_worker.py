"""The workers' Celery app for a test that must catch a training mid-run (`celery -A tests.hold_training_worker`).

With SEM_TEST_HOLD_TRAINING_FILE naming a file, a run stops at its first batch once its progress is written,
creates the file and waits while the file exists (the test kills the worker, or removes the file). The hook
lives here, with the tests that own it: the portal's training code has no test-only branch.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from celery.signals import worker_process_init

from workers.celery import app

__all__ = ["app"]

HOLD_ENV = "SEM_TEST_HOLD_TRAINING_FILE"


@worker_process_init.connect
def hold_trainings_at_their_first_batch(**_) -> None:
    """In each pool process (Django is set up by then): wrap RunMonitor.progress."""
    from portal.services.learning.training_monitor import RunMonitor, event_dict

    progress = RunMonitor.progress

    def progress_then_hold(monitor, event) -> None:
        progress(monitor, event)
        if event_dict(event).get("event") == "batch":
            monitor.write()  # durable before holding: the test waits for this row, not for a passing event
            _hold(Path(os.environ[HOLD_ENV]))

    RunMonitor.progress = progress_then_hold


def _hold(marker: Path) -> None:
    marker.touch()
    while marker.exists():
        time.sleep(0.1)
