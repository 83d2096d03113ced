"""Create the periodic tasks run by the beat scheduler (django-celery-beat, editable in the admin).

Idempotent: an existing schedule is left as the admin edited it, unless --reset.
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

RETRAIN_TASK_NAME = "Retrain when enough curated labels changed"
SWEEP_TASK_NAME = "Re-queue stuck images, release lost trainings"


class Command(BaseCommand):
    help = "Create the nightly retrain check (SEM_RETRAIN_CRON) and the one-minute sweeper."

    def add_arguments(self, parser):
        parser.add_argument("--reset", action="store_true", help="Restore the default schedules over admin edits")

    @transaction.atomic
    def handle(self, *args, reset: bool, **options):
        self._schedule(RETRAIN_TASK_NAME, "workers.maybe_retrain", reset, crontab=self._retrain_crontab())
        every_minute, _ = IntervalSchedule.objects.get_or_create(every=60, period=IntervalSchedule.SECONDS)
        # A sweep still queued when the next one is due is dropped: sweeps never pile up behind a backlog.
        self._schedule(SWEEP_TASK_NAME, "workers.sweep", reset, interval=every_minute, expire_seconds=55)

    def _retrain_crontab(self) -> CrontabSchedule:
        fields = settings.SEM_RETRAIN_CRON.split()
        if len(fields) != 5:
            raise CommandError(f"SEM_RETRAIN_CRON={settings.SEM_RETRAIN_CRON!r}: expected 5 cron fields")
        minute, hour, day_of_month, month_of_year, day_of_week = fields
        crontab, _ = CrontabSchedule.objects.get_or_create(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month_of_year,
            day_of_week=day_of_week,
            timezone=settings.TIME_ZONE,
        )
        return crontab

    def _schedule(self, name: str, task: str, reset: bool, **schedule) -> None:
        existing = PeriodicTask.objects.filter(name=name).first()
        if existing and not reset:
            self.stdout.write(f"Kept: {name} ({existing.crontab or existing.interval})")
            return
        fields = {"task": task, "crontab": None, "interval": None, "enabled": True, **schedule}
        PeriodicTask.objects.update_or_create(name=name, defaults=fields)
        self.stdout.write(f"Scheduled: {name} ({schedule.get('crontab') or schedule.get('interval')})")
