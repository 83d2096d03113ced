"""Model artifacts: where they are stored, how a worker gets a local copy, and the one-time upgrade of
format version 1 files (a torch pickle container) to the safetensors format (classifier.artifact).

Artifacts are stored through the "models" storage (settings.STORAGES): MODEL_DIR on the file system, or
a bucket. `ModelVersion.artifact_path` is the file's absolute path on the file-system backend (as before
object storage) and the storage name (`v3/model.safetensors`) on object storage, where a worker loads it
through its cache (portal.services.delivery.file_cache), checked against `artifact_sha256`.

A version 1 artifact is read once, after its sha256 matched the one its ModelVersion recorded (so a
file swapped in since is never unpickled), rewritten as `<name>.safetensors` next to it, and the row
points at the new file; the old file is removed. The workers upgrade the production model before
loading it; `manage.py upgrade_artifacts` upgrades every version at once.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
from pathlib import Path

from django.core.files import File
from django.core.files.base import ContentFile
from django.db import transaction

from classifier.artifact import LEGACY_FORMAT_VERSION, format_version, upgrade_artifact
from portal.models import ModelVersion
from portal.storage import local_path, model_storage

logger = logging.getLogger(__name__)


def store_artifact(version: int, artifact: Path, label_set: dict[str, str], label_set_file: str) -> str:
    """Store a trained artifact and the label set it learnt from as version `version`; returns the value
    for ModelVersion.artifact_path. What an unregistered earlier attempt left under those names is replaced."""
    storage = model_storage()
    name = f"v{version}/{artifact.name}"
    labels_name = f"v{version}/{label_set_file}"
    for leftover in (name, labels_name):
        storage.delete(leftover)
    storage.save(labels_name, ContentFile(json.dumps(label_set).encode()))
    with open(artifact, "rb") as handle:
        stored = storage.save(name, File(handle, name))
    return local_path(storage, stored) or stored


def _storage_name(model: ModelVersion) -> str | None:
    """The artifact's name in the models storage; None for an absolute path (a file on this host)."""
    return None if os.path.isabs(model.artifact_path) else model.artifact_path


def load_engine(model: ModelVersion, *, shared: bool = True):
    """`model`'s inference engine: its artifact upgraded once from format version 1, read from the local
    copy and checked against its sha256. shared: the process-wide engine, replaced when another model is
    asked for (a worker classifying with production); False: a private one, so the gate can compare two
    models without evicting the worker's."""
    from classifier.engine import Engine, get_engine

    model = ensure_current_format(model)  # a format version 1 artifact is rewritten once, never unpickled again
    path, sha256 = local_artifact(model), model.artifact_sha256 or None
    return get_engine(path, sha256=sha256) if shared else Engine.from_artifact(path, expected_sha256=sha256)


def local_artifact(model: ModelVersion) -> Path:
    """A local path of the model's artifact (a cached copy checked against artifact_sha256 on object storage)."""
    from portal.services.delivery.file_cache import local_copy

    name = _storage_name(model)
    if name is None:
        return Path(model.artifact_path)
    sha256 = model.artifact_sha256
    return local_copy(
        model_storage(), name, key=sha256 or name.replace("/", "-"), suffix=Path(name).suffix, expected_sha256=sha256
    )


def artifact_exists(model: ModelVersion) -> bool:
    name = _storage_name(model)
    return Path(model.artifact_path).is_file() if name is None else bool(name) and model_storage().exists(name)


def read_label_set(model: ModelVersion, label_set_file: str) -> dict[str, str] | None:
    """The {sha256: label} set stored beside the model's artifact, or None when it is gone or unreadable."""
    name = _storage_name(model)
    try:
        if name is None:
            return json.loads((Path(model.artifact_path).parent / label_set_file).read_text())
        with model_storage().open(posixpath.join(posixpath.dirname(name), label_set_file), "rb") as handle:
            return json.loads(handle.read())
    except (OSError, ValueError):
        return None


def is_legacy(model: ModelVersion) -> bool:
    if _storage_name(model) is not None:
        return False  # object storage came after format version 2: nothing there to upgrade
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
