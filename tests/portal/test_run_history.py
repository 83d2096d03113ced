"""Issue 26, item 1: a TrainingRun keeps its epoch events (`history`) and the trainer's stage summaries
(`stages`) apart, one shape each; stored runs of both old shapes are converted; the monitor records only
the events the trainer sends; the stage table reads both fields without guessing their shape."""

from __future__ import annotations

import copy
import importlib

import pytest
from django.apps import apps

from portal.models import TrainingRun
from portal.services.learning.training_monitor import RunMonitor
from portal.web.run_display import stage_rows

migration = importlib.import_module("portal.migrations.0013_issue26_training_run_stages")


def epoch(index: int, train_loss: float, valid_loss: float) -> dict:
    return {"epoch": index, "train_loss": train_loss, "valid_loss": valid_loss, "metrics": {}, "duration_s": 2.0}


def event(stage: int, size: int, epochs: int, result: dict) -> dict:
    return {"event": "epoch_end", "stage": stage, "stages": 2, "size": size, "epochs": epochs, **result}


# A succeeded run as the trainer used to leave it: per-stage records whose `epochs` was a list.
OLD_SUCCEEDED = [
    {
        "stage": 0,
        "size": 32,
        "lr": 0.003,
        "batch_size": 8,
        "epochs": [epoch(0, 2.0, 1.9), epoch(1, 1.5, 1.7)],
        "best_epoch": 1,
        "best_valid_loss": 1.7,
        "duration_s": 4.5,
        "input_shape": [8, 3, 32, 32],
    },
    {
        "stage": 1,
        "size": 48,
        "lr": 0.001,
        "batch_size": 8,
        "epochs": [epoch(0, 1.2, 1.4)],
        "best_epoch": 0,
        "best_valid_loss": 1.4,
        "duration_s": 3.0,
        "input_shape": [8, 3, 48, 48],
    },
]
# The frozen-feature recipe's one record: no epochs at all.
OLD_FEATURE_HEAD = [
    {
        "stage": 0,
        "size": 224,
        "kind": "frozen features: logistic regression and class means",
        "views": 8,
        "epochs": [],
        "best_epoch": None,
        "best_valid_loss": 0.4,
        "duration_s": 80.0,
        "fit_s": 3.0,
        "input_shape": [32, 3, 224, 224],
    }
]
# A failed run: the epoch events the monitor had appended, `epochs` the stage's planned count.
OLD_FAILED = [event(0, 32, 3, epoch(0, 2.0, 1.9)), event(0, 32, 3, epoch(1, 1.8, 1.6))]


def test_a_succeeded_run_gets_its_events_back_and_summaries_whose_epochs_is_a_count():
    events, stages = migration.split_history(copy.deepcopy(OLD_SUCCEEDED))
    assert [(e["event"], e["stage"], e["size"], e["epoch"], e["epochs"]) for e in events] == [
        ("epoch_end", 0, 32, 0, 2),
        ("epoch_end", 0, 32, 1, 2),
        ("epoch_end", 1, 48, 0, 1),
    ]
    assert [e["train_loss"] for e in events] == [2.0, 1.5, 1.2] and all(e["stages"] == 2 for e in events)
    assert [(s["stage"], s["epochs"], s["best_epoch"], s["lr"], s["batch_size"]) for s in stages] == [
        (0, 2, 1, 0.003, 8),
        (1, 1, 0, 0.001, 8),
    ]
    assert stages[0]["epoch_results"] == OLD_SUCCEEDED[0]["epochs"]


def test_the_feature_head_record_keeps_what_it_says_and_gets_the_missing_fields():
    events, stages = migration.split_history(copy.deepcopy(OLD_FEATURE_HEAD))
    assert events == []
    (summary,) = stages
    assert (summary["epochs"], summary["epoch_results"], summary["views"], summary["kind"]) == (
        0,
        [],
        8,
        OLD_FEATURE_HEAD[0]["kind"],
    )
    assert summary["lr"] is None and summary["batch_size"] is None and summary["best_valid_loss"] == 0.4


def test_events_stay_events():
    assert migration.split_history(copy.deepcopy(OLD_FAILED)) == (OLD_FAILED, [])
    assert migration.split_history(None) == ([], [])


@pytest.mark.django_db
def test_the_data_migration_converts_stored_runs_and_its_reverse_restores_them():
    def run(status, history):
        return TrainingRun.objects.create(status=status, active=None, trigger="manual", history=history).pk

    succeeded = run(TrainingRun.Status.SUCCEEDED, OLD_SUCCEEDED)
    feature = run(TrainingRun.Status.SUCCEEDED, OLD_FEATURE_HEAD)
    failed = run(TrainingRun.Status.FAILED, OLD_FAILED)
    never = run(TrainingRun.Status.SKIPPED, [])

    migration.forward(apps, None)
    stored = {run.pk: run for run in TrainingRun.objects.all()}
    assert [s["epochs"] for s in stored[succeeded].stages] == [2, 1] and len(stored[succeeded].history) == 3
    assert stored[feature].history == [] and stored[feature].stages[0]["epochs"] == 0
    assert (stored[failed].history, stored[failed].stages) == (OLD_FAILED, [])
    assert (stored[never].history, stored[never].stages) == ([], [])
    # The stage table of the converted runs reads as it did from the old shapes.
    assert [(r["size"], r["epochs_done"], r["best_epoch"], r["finished"]) for r in _rows(stored[succeeded])] == [
        (32, 2, 1, True),
        (48, 1, 0, True),
    ]
    assert [(r["epochs_done"], r["epochs_planned"], r["best_epoch"]) for r in _rows(stored[failed])] == [(2, 3, 1)]

    migration.backward(apps, None)
    restored = {run.pk: run.history for run in TrainingRun.objects.all()}
    feature_record = {**OLD_FEATURE_HEAD[0], "lr": None, "batch_size": None}  # the summary's fields stay, empty
    assert restored == {succeeded: OLD_SUCCEEDED, feature: [feature_record], failed: OLD_FAILED, never: []}


def _rows(run: TrainingRun) -> list[dict]:
    return stage_rows(run.history, run.stages)


def test_a_stage_the_trainer_summarised_replaces_its_events_and_a_running_one_counts_them():
    events = [
        event(0, 32, 2, epoch(0, 2.0, 1.9)),
        event(0, 32, 2, epoch(1, 1.5, 1.7)),
        event(1, 48, 3, epoch(0, 1.2, 1.8)),
    ]
    summary = {**migration.split_history(copy.deepcopy(OLD_SUCCEEDED[:1]))[1][0], "duration_s": 9.0}
    first, second = stage_rows(events, [summary])
    assert (first["finished"], first["duration_s"], first["batch_size"], first["epochs_done"]) == (True, 9.0, 8, 2)
    assert (second["finished"], second["epochs_done"], second["epochs_planned"]) == (False, 1, 3)
    assert (second["best_epoch"], second["best_valid_loss"], second["duration_s"]) == (0, 1.8, 2.0)
    assert stage_rows(None, None) == []


@pytest.mark.django_db
def test_the_monitor_records_the_epoch_end_events_only():
    run = TrainingRun.objects.create(status=TrainingRun.Status.RUNNING, trigger="manual")
    monitor = RunMonitor(run)
    monitor.progress({"event": "stage_start", "stage": 0, "stages": 1, "size": 32, "epochs": 2, "fraction": 0.0})
    monitor.progress({**event(0, 32, 2, epoch(0, 2.0, 1.9)), "fraction": 0.4})
    monitor.progress({"kind": "epoch", "epoch": 1, "fraction": 0.5})  # a name the trainer never sends
    monitor.progress({"event": "epoch", "epoch": 1, "fraction": 0.6})
    monitor.write()
    run.refresh_from_db()
    assert [(e["event"], e["epoch"]) for e in run.history] == [("epoch_end", 0)] and run.stages == []
