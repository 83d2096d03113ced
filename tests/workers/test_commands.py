"""Management commands of the workers: setup_schedules and train_now."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django_celery_beat.models import PeriodicTask

from portal.models import ModelVersion, TrainingRun
from portal.services.learning import training


def test_setup_schedules_creates_both_tasks_and_keeps_admin_edits(db, settings):
    settings.SEM_RETRAIN_CRON = "30 3 * * 1-5"

    call_command("setup_schedules", stdout=None)
    retrain = PeriodicTask.objects.get(task="workers.maybe_retrain")
    sweep = PeriodicTask.objects.get(task="workers.sweep")
    assert (retrain.crontab.minute, retrain.crontab.hour, retrain.crontab.day_of_week) == ("30", "3", "1-5")
    assert (sweep.interval.every, sweep.interval.period) == (60, "seconds")

    retrain.enabled = False
    retrain.save()
    call_command("setup_schedules")
    assert PeriodicTask.objects.get(pk=retrain.pk).enabled is False and PeriodicTask.objects.count() == 2

    call_command("setup_schedules", "--reset")
    assert PeriodicTask.objects.get(pk=retrain.pk).enabled is True


def test_setup_schedules_rejects_a_bad_cron(db, settings):
    settings.SEM_RETRAIN_CRON = "every night"
    with pytest.raises(CommandError, match="5 cron fields"):
        call_command("setup_schedules")


def test_train_now_refuses_without_new_labels_unless_forced(db, settings):
    settings.SEM_RETRAIN_MIN_NEW_LABELS = 5
    with pytest.raises(CommandError, match="Nothing to do: 0 new"):
        call_command("train_now")
    assert not TrainingRun.objects.exists()


def test_train_now_refuses_while_a_run_is_active(db):
    TrainingRun.objects.create(trigger=TrainingRun.Trigger.MANUAL)
    with pytest.raises(CommandError, match="already queued"):
        call_command("train_now", "--force")


@pytest.mark.slow
def test_train_now_here_trains_in_process(sample, user, upload_images, settings, capsys):
    settings.SEM_TRAIN_ARCH, settings.SEM_TRAIN_SIZES, settings.SEM_TRAIN_EPOCHS = "resnet18", [32], [1]
    upload_images(sample, user, 12, labelled=True)

    call_command("train_now", "--force", "--here")

    run = TrainingRun.objects.get()
    assert run.trigger == TrainingRun.Trigger.COMMAND and run.status == TrainingRun.Status.SUCCEEDED
    assert run.model_version.status == ModelVersion.Status.PRODUCTION
    assert "v1: macro-F1" in capsys.readouterr().out
    assert training.active_run() is None
