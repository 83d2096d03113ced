"""`manage.py quickstart`, the first half of `make run`: login, demo data, schedules, first training."""

from __future__ import annotations

from io import StringIO

from django.core.management import call_command
from django_celery_beat.models import PeriodicTask

from portal.models import Label, SEMImage, TrainingRun


def run_quickstart() -> str:
    out = StringIO()
    call_command("quickstart", "--per-class", "2", stdout=out)
    return out.getvalue()


def test_first_run_prepares_everything_and_a_second_run_changes_nothing(db, settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.MEDIA_ROOT = tmp_path / "media"

    first = run_quickstart()
    credentials = tmp_path / "admin-credentials.txt"
    login = credentials.read_text().strip()
    assert f"Login: {login}" in first and login.startswith("admin / ")
    assert credentials.stat().st_mode & 0o077 == 0  # the password file is private
    assert SEMImage.objects.count() == 20 and Label.objects.filter(is_current=True).count() == 20
    assert PeriodicTask.objects.filter(task__in=["workers.maybe_retrain", "workers.sweep"]).count() == 2
    run = TrainingRun.objects.get()
    assert run.trigger == TrainingRun.Trigger.BOOTSTRAP and run.status == TrainingRun.Status.QUEUED
    # The first demo model starts from ImageNet too: the default pretrained backbone, not a scratch profile.
    assert run.config["arch"] == "efficientnet_lite0" and run.config["pretrained"] is True

    second = run_quickstart()
    assert f"Login: {login}" in second  # same password, not a new one each start
    assert SEMImage.objects.count() == 20 and TrainingRun.objects.count() == 1
