"""Watching one running training: progress and plan events, the heartbeat, the captured log, cancellation
and the time limit (`RunMonitor`). The run itself: portal.services.learning.training_run."""

from __future__ import annotations

import json
import logging
import threading
import time

from django.conf import settings
from django.db import connection
from django.utils import timezone

from classifier.feature_budget import KIND as FEATURE_PLAN_KIND
from portal.models import TrainingRun

logger = logging.getLogger(__name__)

PROGRESS_WRITE_INTERVAL_S = 1.0
HEARTBEAT_INTERVAL_S = 10.0
LOG_LIMIT_CHARS = 200_000


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
        self.history: list[dict] = []  # the "epoch_end" events (TrainingRun.history)
        self.stages: list[dict] = []  # the trainer's stage summaries, once it has succeeded (TrainingRun.stages)
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
        data = event_dict(event)
        if data.get("event") == "plan":
            self._record_plan(data)
            return
        new_phase = data.get("phase") != self.last_event.get("phase")
        self.last_event = data
        self.fraction = float(data.get("fraction", self.fraction) or 0.0)
        if data.get("event") == "epoch_end":
            self.history.append(data)
            self.log(_describe(data))
        # A new phase is written at once: the page must not name the previous one through a long phase.
        if new_phase or time.monotonic() - self._last_write >= PROGRESS_WRITE_INTERVAL_S:
            self.write()

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

    def write(self) -> None:
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


def event_dict(event) -> dict:
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
