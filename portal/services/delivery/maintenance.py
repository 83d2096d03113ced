"""The minutely sweep: nothing stays stuck after a lost message, a dead worker or a broker restart.

`workers.sweep` (beat, every minute) is one call to `sweep()`.
"""

from __future__ import annotations

from django.conf import settings

from portal.services.delivery import webhooks
from portal.services.delivery.queueing import enqueue_backlog
from portal.services.ingestion.ingest_recovery import reconcile_interrupted
from portal.services.learning import classification, classification_sweep, training, training_sweep
from portal.storage import media_storage, model_storage, remove_stale_files

# A partial media file (on object storage: an unfinished multipart upload) older than this belongs to a
# process that died mid-write (uploads take seconds).
PARTIAL_FILE_MAX_AGE_S = 3600
# The same for spooled upload bodies (FILE_UPLOAD_TEMP_DIR). The files of an upload killed between
# writing them and committing its row wait SEM_INTERRUPTED_UPLOAD_GRACE_S (ingest_recovery.reconcile_interrupted).
SPOOL_FILE_MAX_AGE_S = 3600


def sweep() -> dict:
    """Re-queue overdue pending images, restart a stalled re-classification backlog, fail trainings
    whose heartbeat stopped, queue a head refit once a review session is over, re-send webhook deliveries never attempted, and remove stale partial,
    orphaned and spooled files. Returns what it did, by kind."""
    requeued = classification_sweep.sweep_stale_images()
    model = classification.production_model()
    backlog_restarted = bool(model and classification_sweep.backlog_stalled(model))
    if backlog_restarted:
        enqueue_backlog(model.pk)
    failed_runs = training_sweep.fail_stale_runs()
    refit = training.refit_after_review()
    webhooks_requeued = webhooks.sweep_unsent_deliveries()
    partials_removed = sum(
        storage.remove_stale_partials(PARTIAL_FILE_MAX_AGE_S) for storage in _distinct(media_storage(), model_storage())
    )
    orphans_removed = reconcile_interrupted(settings.SEM_INTERRUPTED_UPLOAD_GRACE_S)
    spool_removed = (
        remove_stale_files(settings.FILE_UPLOAD_TEMP_DIR, SPOOL_FILE_MAX_AGE_S) if settings.FILE_UPLOAD_TEMP_DIR else 0
    )
    return {
        "requeued": requeued,
        "backlog_restarted": backlog_restarted,
        "failed_runs": failed_runs,
        "head_refit_queued": bool(refit and refit.run),
        "webhooks_requeued": webhooks_requeued,
        "partial_files_removed": partials_removed,
        "orphan_files_removed": orphans_removed,
        "spool_files_removed": spool_removed,
    }


def _distinct(*storages) -> list:
    """Media and models may share a folder or bucket: sweep each place once."""
    seen, unique = set(), []
    for storage in storages:
        place = (getattr(storage, "bucket_name", None), getattr(storage, "location", None))
        if place not in seen:
            seen.add(place)
            unique.append(storage)
    return unique
