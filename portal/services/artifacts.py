"""Model artifacts on disk: the one-time upgrade of format version 1 files (a torch pickle container)
to the safetensors format (classifier.artifact).

A version 1 artifact is read once, after its sha256 matched the one its ModelVersion recorded (so a
file swapped in since is never unpickled), rewritten as `<name>.safetensors` next to it, and the row
points at the new file; the old file is removed. The workers upgrade the production model before
loading it; `manage.py upgrade_artifacts` upgrades every version at once.
"""

from __future__ import annotations

import logging
from pathlib import Path

from django.db import transaction

from classifier.artifact import LEGACY_FORMAT_VERSION, format_version, upgrade_artifact
from portal.models import ModelVersion

logger = logging.getLogger(__name__)


def is_legacy(model: ModelVersion) -> bool:
    try:
        return format_version(model.artifact_path) == LEGACY_FORMAT_VERSION
    except OSError:  # missing or unreadable: the loader reports it
        return False


def upgraded_path(path: Path) -> Path:
    new_path = path.with_suffix(".safetensors")
    return new_path if new_path != path else path.with_name(f"{path.stem}.v2.safetensors")


def ensure_current_format(model: ModelVersion) -> ModelVersion:
    """The model with a current-format artifact: a version 1 file is upgraded (once) first.
    Raises classifier.artifact.ArtifactError when the old file cannot be upgraded (checksum mismatch)."""
    if not is_legacy(model):
        return model
    old_path = Path(model.artifact_path)
    new_path = upgraded_path(old_path)
    new_sha256 = upgrade_artifact(old_path, new_path, model.artifact_sha256)
    with transaction.atomic():
        # Only if nobody upgraded it meanwhile (the bytes are the same either way: the format is deterministic).
        updated = ModelVersion.objects.filter(
            pk=model.pk, artifact_path=str(old_path), artifact_sha256=model.artifact_sha256
        ).update(artifact_path=str(new_path), artifact_sha256=new_sha256)
        if updated:
            transaction.on_commit(lambda: old_path.unlink(missing_ok=True))
    if updated:
        logger.warning(
            "model v%s: artifact upgraded to the safetensors format: %s (sha256 %s)",
            model.version,
            new_path,
            new_sha256,
        )
    model.refresh_from_db()
    return model


def upgrade_all() -> list[ModelVersion]:
    """Upgrade every model version whose artifact is a version 1 file; return those upgraded."""
    upgraded = []
    for model in ModelVersion.objects.order_by("version"):
        if is_legacy(model):
            upgraded.append(ensure_current_format(model))
    return upgraded
