import logging
import os

from django.apps import AppConfig

logger = logging.getLogger(__name__)


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "SEM lab portal"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Webhook listeners (REST API issue): registered once per process, at start-up.
        from portal.services.delivery.webhooks import register_listeners

        register_listeners()
        # Watch folders: the scan schedule follows the folders (signal receivers).
        from portal.services.ingestion.watch_schedule import connect_signals

        connect_signals()
        _ensure_upload_spool()


def _ensure_upload_spool() -> None:
    """The folder for spooled upload bodies (FILE_UPLOAD_TEMP_DIR), which the sweeper cleans. When it
    cannot be made, uploads spool to the system's temporary folder (not cleaned) rather than fail."""
    from django.conf import settings

    folder = getattr(settings, "FILE_UPLOAD_TEMP_DIR", None)
    if not folder:
        return
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        logger.warning(
            "cannot create the upload spool folder %s (%s); using the system temporary folder", folder, error
        )
        settings.FILE_UPLOAD_TEMP_DIR = None
