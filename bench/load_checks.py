"""The checks bench_load.py runs after its load: drained queue, every upload stored and classified once,
no orphan file, every webhook delivered. They run in bench_load's process (Django set up)."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from pathlib import Path

DRAIN_TIMEOUT_S = 900


def wait_for_orphans_reconciled(rows_media: Path, timeout: float) -> float | None:
    """Seconds until the sweeper removed what killed uploads left (nothing under MEDIA_ROOT without a row)."""
    from django.db import connection

    from portal.models import SEMImage

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        rows = list(SEMImage.objects.values("sha256", "original", "derivative", "thumbnail"))
        connection.close()
        if not check_files(rows, rows_media):
            return time.monotonic() - started
        time.sleep(5)
    return None


def wait_for_webhooks(timeout: float = 300) -> int:
    """Pending deliveries left after waiting (0 when all were sent)."""
    from django.db import connection

    from portal.models import WebhookDelivery

    deadline = time.monotonic() + timeout
    while True:
        pending = WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING).count()
        connection.close()
        if not pending or time.monotonic() > deadline:
            return pending
        time.sleep(2)


def wait_for_drain(timeout: float) -> float | None:
    """Seconds until no image waits for classification (None on timeout)."""
    from django.db import close_old_connections, connection

    from portal.models import SEMImage

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            waiting = SEMImage.objects.exclude(status=SEMImage.Status.CLASSIFIED).count()
        except Exception:  # the database restarting under us: try again
            waiting = -1
        connection.close()  # a fresh connection each poll survives a PostgreSQL restart
        close_old_connections()
        if waiting == 0:
            return time.monotonic() - started
        time.sleep(1)
    return None


def check_outcome(record, media_root: Path, model_before: tuple) -> list[str]:
    """Every check the run must pass; returns the failures (empty when all passed)."""
    from django.db.models import Count

    from portal.models import ModelVersion, Prediction, SEMImage

    failures = []
    succeeded = [upload for upload in record.uploads if upload.image_id is not None]
    given_up = [upload.key for upload in record.uploads if upload.image_id is None]
    rows = {
        row["pk"]: row
        for row in SEMImage.objects.values(
            "pk", "sha256", "status", "predicted_by", "original", "derivative", "thumbnail"
        )
    }
    expect(failures, not given_up, f"{len(given_up)} uploads never succeeded: {given_up[:5]}")
    expect(failures, len(rows) == len(succeeded), f"{len(rows)} rows for {len(succeeded)} successful uploads")
    expect(
        failures,
        len({upload.image_id for upload in succeeded}) == len(succeeded),
        "two uploads were answered with the same image",
    )
    mismatched = [
        upload.key
        for upload in succeeded
        if upload.image_id not in rows or rows[upload.image_id]["sha256"] != upload.sha256
    ]
    expect(failures, not mismatched, f"uploads missing or with other bytes: {mismatched[:5]}")
    expect(failures, len({row["sha256"] for row in rows.values()}) == len(rows), "duplicate sha256 rows")
    failures += check_files(rows.values(), media_root)
    per_image = Counter(Prediction.objects.values_list("image_id", flat=True))
    production = ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION)
    expect(failures, [(m.pk, m.artifact_sha256) for m in production] == [model_before], "the production model changed")
    expect(
        failures,
        all(per_image.get(pk) == 1 for pk in rows) and set(per_image) <= set(rows),
        f"predictions per image: {Counter(per_image.get(pk, 0) for pk in rows)}",
    )
    unclassified = [
        pk
        for pk, row in rows.items()
        if row["status"] != SEMImage.Status.CLASSIFIED or row["predicted_by"] != model_before[0]
    ]
    expect(failures, not unclassified, f"{len(unclassified)} images not classified by production")
    by_model = Prediction.objects.values("model_version").annotate(n=Count("pk"))
    expect(
        failures, [row["model_version"] for row in by_model] in ([model_before[0]], []), "predictions by another model"
    )
    return failures


def check_files(rows, media_root: Path) -> list[str]:
    """Stored files are exactly the rows' files; every original has its row's sha256 (none half-stored).
    Listed through the media storage, so the same check holds on the local disk and on S3 (`--s3`)."""
    from portal.storage import media_storage

    storage = media_storage()
    on_disk = set(stored_files(storage))
    referenced = {row[name] for row in rows for name in ("original", "derivative", "thumbnail")}
    failures = []
    expect(
        failures,
        on_disk == referenced,
        f"files without rows: {sorted(on_disk - referenced)[:5]}; rows without files: "
        f"{sorted(referenced - on_disk)[:5]}",
    )
    corrupt = [
        row["original"]
        for row in rows
        if row["original"] in on_disk and _sha256(storage, row["original"]) != row["sha256"]
    ]
    expect(failures, not corrupt, f"originals whose bytes differ from their sha256: {corrupt[:5]}")
    return failures


def stored_files(storage, folder: str = ""):
    """Every file name in the storage below `folder` (hidden folders such as .partial/ and .ingesting/ too)."""
    try:
        folders, files = storage.listdir(folder)
    except FileNotFoundError:
        return
    for name in files:
        yield f"{folder}/{name}" if folder else name
    for name in folders:
        yield from stored_files(storage, f"{folder}/{name}" if folder else name)


def _sha256(storage, name: str) -> str:
    digest = hashlib.sha256()
    with storage.open(name, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def expect(failures: list[str], condition: bool, message: str) -> None:
    if not condition:
        failures.append(message)
