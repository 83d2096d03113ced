"""fastai callbacks of a training run: best-epoch weights, and progress events with cancellation.

Imported by classifier.train only (fastai is imported when this module is).
"""

from __future__ import annotations

import copy
import math
import time

from .run_records import EpochResult

# Share of the progress bar given to training; the rest is calibration/evaluation.
TRAINING_SHARE = 0.97


class TrainingCancelled(Exception):
    """Raised when ``should_stop()`` returned True between batches."""


def finite(value):
    return float(value) if value is not None and math.isfinite(value) else None


def callback_base():
    from fastai.callback.core import Callback

    return Callback


class BestWeights(callback_base()):
    """Keep the weights of the epoch with the lowest validation loss (in memory;
    SaveModelCallback would write a file per improvement)."""

    order = 61  # after Recorder (50), so this epoch's values are recorded

    def __init__(self, restore: bool = True):
        self.restore = restore

    def before_fit(self):
        self.best_loss, self.best_epoch, self.best_state = math.inf, None, None

    def after_epoch(self):
        valid_loss = float(self.learn.recorder.values[-1][1])
        if math.isfinite(valid_loss) and valid_loss < self.best_loss:
            self.best_loss, self.best_epoch = valid_loss, self.epoch
            if self.restore:
                self.best_state = copy.deepcopy(self.learn.model.state_dict())

    def after_fit(self):
        if self.restore and self.best_state is not None:
            self.learn.model.load_state_dict(self.best_state)


class ProgressTracker:
    """Turns fastai events into the progress dicts of the public contract."""

    def __init__(self, emit, should_stop, config, stage_batch_sizes, n_train):
        self.emit, self.should_stop, self.config = emit, should_stop, config
        # Expected work per stage ~ batches x pixels: gives a fraction that moves evenly in time.
        batches = [max(1, n_train // bs) * e for bs, e in zip(stage_batch_sizes, config.epochs)]
        weights = [b * bs * s * s for b, bs, s in zip(batches, stage_batch_sizes, config.sizes)]
        total = float(sum(weights))
        self.stage_offsets = [sum(weights[:i]) / total for i in range(len(weights))]
        self.stage_shares = [w / total for w in weights]
        self.stage, self.size, self.batches, self.done_in_stage = 0, 0, 1, 0
        self.epoch_results: list[EpochResult] = []  # of the current stage
        self.stage_input_shape = None
        self.fraction = 0.0

    def _base(self) -> dict:
        return {"stage": self.stage, "stages": self.config.stages, "size": self.size}

    def _fraction(self) -> float:
        total = self.batches * self.config.epochs[self.stage]
        within = min(1.0, self.done_in_stage / max(1, total))
        value = TRAINING_SHARE * (self.stage_offsets[self.stage] + self.stage_shares[self.stage] * within)
        self.fraction = max(self.fraction, value)
        return self.fraction

    def start_stage(self, stage, size, batches):
        self.stage, self.size, self.batches, self.done_in_stage = stage, size, max(1, batches), 0
        self.epoch_results, self.stage_input_shape = [], None
        self.emit(
            {
                **self._base(),
                "event": "stage_start",
                "epochs": self.config.epochs[stage],
                "batches": self.batches,
                "fraction": self._fraction(),
            }
        )

    def check_stop(self):
        if self.should_stop():
            raise TrainingCancelled(f"cancelled during stage {self.stage} ({self.size} px)")

    def batch(self, epoch, index, loss, shape):
        self.done_in_stage += 1
        self.stage_input_shape = list(shape)
        self.emit(
            {
                **self._base(),
                "event": "batch",
                "epoch": epoch,
                "epochs": self.config.epochs[self.stage],
                "batch": index,
                "batches": self.batches,
                "train_loss": loss,
                "input_shape": list(shape),
                "fraction": self._fraction(),
            }
        )

    def epoch_end(self, epoch, names, values, duration):
        record = dict(zip(names, values))
        metrics = {k: v for k, v in record.items() if k not in ("train_loss", "valid_loss")}
        entry = EpochResult(
            epoch=epoch,
            train_loss=record.get("train_loss"),
            valid_loss=record.get("valid_loss"),
            metrics=metrics,
            duration_s=duration,
        )
        self.epoch_results.append(entry)
        self.emit(
            {
                **self._base(),
                "event": "epoch_end",
                "epochs": self.config.epochs[self.stage],  # the stage's planned count (run_records.py)
                **entry,
                "fraction": self._fraction(),
            }
        )

    def end_stage(self, record):
        self.emit(
            {
                **self._base(),
                "event": "stage_end",
                "best_epoch": record["best_epoch"],
                "best_valid_loss": record["best_valid_loss"],
                "fraction": self._fraction(),
            }
        )

    def emit_simple(self, event, fraction, **extra):
        self.fraction = max(self.fraction, fraction)
        self.emit({"event": event, "stages": self.config.stages, "fraction": self.fraction, **extra})


class ProgressEventsCallback(callback_base()):
    """Feeds a ProgressTracker from fastai's events (not fastai's ProgressCallback, the terminal bars,
    which the trainer removes)."""

    order = 60  # after Recorder, so epoch values are available

    def __init__(self, tracker: ProgressTracker):
        self.tracker = tracker

    def before_epoch(self):
        self.epoch_started = time.monotonic()

    def before_batch(self):
        self.tracker.check_stop()

    def after_batch(self):
        if self.training:
            self.tracker.batch(self.epoch, self.iter, finite(self.learn.loss.item()), tuple(self.learn.xb[0].shape))

    def after_epoch(self):
        recorder = self.learn.recorder
        names = [n for n in recorder.metric_names[1:] if n != "time"]
        values = [finite(float(v)) if v is not None else None for v in recorder.values[-1][: len(names)]]
        self.tracker.epoch_end(self.epoch, names, values, time.monotonic() - self.epoch_started)
