"""TrainingRun.history had two shapes (issue 26): a running or failed run held the trainer's "epoch_end"
progress events, a succeeded one the trainer's per-stage records, whose `epochs` was the list of epoch
results where an event's is a count. Now `history` always holds the events and `stages` the per-stage
summaries (classifier/run_records.py).

Stored runs are converted here, not by importing the app's code, so that the conversion stays what it was
when the app changes. A succeeded run's events are rebuilt from its records' epoch results (without the
progress fraction they were sent with, which nothing reads from history). The reverse puts the old shape
back: a run with stages gets its stage records as history (its events are dropped, as they were then).
"""

from django.db import migrations, models

BATCH = 500


def split_history(history) -> tuple[list, list]:
    """(events, stage summaries) of one run's old `history`."""
    records = [record for record in history or [] if isinstance(record, dict)]
    old_stages = [record for record in records if isinstance(record.get("epochs"), list)]
    if not old_stages:
        return records, []  # already events: a run that did not succeed, or one still going
    events, stages = [], []
    for index, record in enumerate(old_stages):
        stage = {**record, "stage": record.get("stage", index)}
        events += [_epoch_event(stage, result, len(old_stages)) for result in record["epochs"]]
        stages.append(_summary(stage))
    return events, stages


def _epoch_event(stage: dict, result: dict, stage_count: int) -> dict:
    return {
        "event": "epoch_end",
        "stage": stage["stage"],
        "stages": stage_count,
        "size": stage.get("size"),
        "epochs": len(stage["epochs"]),
        **result,
    }


def _summary(stage: dict) -> dict:
    """The old record with `epochs` a count and the results under their own name."""
    summary = {key: stage.get(key) for key in ("lr", "batch_size", "best_epoch", "best_valid_loss", "input_shape")}
    summary.update({key: value for key, value in stage.items() if key != "epochs"})
    summary["epochs"] = len(stage["epochs"])
    summary["epoch_results"] = list(stage["epochs"])
    summary.setdefault("duration_s", 0.0)
    return summary


def join_history(history, stages) -> list:
    """The old `history` of a run: its stage records when it has stages, else its events."""
    if not stages:
        return list(history or [])
    records = []
    for summary in stages:
        record = {key: value for key, value in summary.items() if key != "epoch_results"}
        record["epochs"] = list(summary.get("epoch_results") or [])
        records.append(record)
    return records


def forward(apps, schema_editor):
    def convert(run):
        run.history, run.stages = split_history(run.history)

    _rewrite(apps, convert)


def backward(apps, schema_editor):
    def convert(run):
        run.history = join_history(run.history, run.stages)

    _rewrite(apps, convert)


def _rewrite(apps, convert) -> None:
    TrainingRun = apps.get_model("portal", "TrainingRun")
    runs = []
    for run in TrainingRun.objects.only("pk", "history", "stages").iterator(chunk_size=BATCH):
        convert(run)
        runs.append(run)
        if len(runs) == BATCH:
            TrainingRun.objects.bulk_update(runs, ["history", "stages"])
            runs = []
    TrainingRun.objects.bulk_update(runs, ["history", "stages"])


HISTORY_HELP = (
    'The "epoch_end" progress events, in order: stage, stages, size, epoch, epochs (the '
    "stage's epoch count), train_loss, valid_loss, metrics, duration_s, fraction"
)
STAGES_HELP = (
    "The trainer's summary of each stage of a succeeded run: stage, size, lr, batch_size, epochs "
    "(the count it ran), epoch_results, best_epoch, best_valid_loss, duration_s, input_shape"
)


def _json_list(help_text: str) -> models.JSONField:
    return models.JSONField(blank=True, default=list, help_text=help_text)


class Migration(migrations.Migration):
    dependencies = [
        ("portal", "0012_issue24_heatmaps"),
    ]

    operations = [
        migrations.AlterField(model_name="trainingrun", name="history", field=_json_list(HISTORY_HELP)),
        migrations.AddField(model_name="trainingrun", name="stages", field=_json_list(STAGES_HELP)),
        migrations.RunPython(forward, backward),
    ]
