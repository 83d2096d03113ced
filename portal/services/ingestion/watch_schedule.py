"""Scheduling the watch folders: the beat task that scans every due folder, kept in step with the folders
configured (enabled while one is enabled)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from portal.models import WatchFolder
from portal.services.ingestion.watch import scan_folder

SCAN_TASK_NAME = "Scan watch folders"
SCAN_TASK_INTERVAL_S = 15  # the beat task looks for due folders this often; each has its own poll interval
SCAN_LEASE_S = 15 * 60
DEFAULT_INGEST_BUDGET_S = 120.0  # a scheduled scan stops claiming after this; the rest is due next poll


def scan_due_folders(*, ingest_budget_s: float = DEFAULT_INGEST_BUDGET_S) -> dict[str, str]:
    """The beat task: scan every enabled folder whose poll interval has passed (one scan per folder at a time)."""
    results = {}
    now = timezone.now()
    for folder in WatchFolder.objects.filter(enabled=True).select_related("project", "fixed_sample", "uploader"):
        if folder.last_scan_at and folder.last_scan_at + timedelta(seconds=folder.poll_interval_s) > now:
            continue
        leased = (
            WatchFolder.objects.filter(pk=folder.pk)
            .exclude(scan_lease_until__gt=now)
            .update(scan_lease_until=now + timedelta(seconds=SCAN_LEASE_S))
        )
        if not leased:
            continue  # another worker scans it right now
        try:
            results[folder.path] = scan_folder(folder, ingest_budget_s=ingest_budget_s).summary()
        finally:
            WatchFolder.objects.filter(pk=folder.pk).update(scan_lease_until=None)
    return results


def connect_signals() -> None:
    """Saving or deleting a watch folder (admin, shell, queryset deletes too) keeps the beat task in step."""
    from django.db.models.signals import post_delete, post_save

    post_save.connect(_folders_changed, sender=WatchFolder, dispatch_uid="watch-folder-saved")
    post_delete.connect(_folders_changed, sender=WatchFolder, dispatch_uid="watch-folder-deleted")


def _folders_changed(**_ignored) -> None:
    ensure_schedule()


def ensure_schedule() -> None:
    """The beat task exists once a folder is configured, and is enabled only while one is enabled."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    wanted = WatchFolder.objects.filter(enabled=True).exists()
    task = PeriodicTask.objects.filter(name=SCAN_TASK_NAME).first()
    if task is None:
        if not wanted:
            return
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=SCAN_TASK_INTERVAL_S, period=IntervalSchedule.SECONDS
        )
        PeriodicTask.objects.create(
            name=SCAN_TASK_NAME, task="workers.scan_watch_folders", interval=interval, enabled=True
        )
    elif task.enabled != wanted:
        task.enabled = wanted
        task.save(update_fields=["enabled"])
