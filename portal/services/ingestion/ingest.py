"""The one ingestion path for SEM images: web upload, REST API, `import_folder` and the watch folders all
call `ingest_file`, which carries the upload (`Upload`) through STEPS, in this order:

1. `check_idempotency_key`: a retry with the same key gets the image the first try stored;
2. `spool_to_temporary_file`: stream to local disk, hashing and enforcing the byte limit (ingest_spool);
3. `find_same_bytes`: known bytes (sha256) are the image already stored, before anything is decoded;
4. `examine_in_capped_child`: validate (magic bytes, header limits, full decode), read the instrument
   metadata, crop the data bar and make the derivative, thumbnail and perceptual hashes, in a child
   process that may die without taking this one along (ingest_examine, decode_guard);
5. `take_turn_on_these_bytes`: uploads of the same bytes take turns, with a marker for the sweeper
   (ingest_recovery); the one that waited finds the first one's row;
6. `store_in_one_transaction`: files, row, split and near-duplicate group, label; classification is queued
   on commit (ingest_store.STORE_STEPS);
7. `restore_vanished_files`: after the commit, a reused file a racing upload removed is written again.

A step returns None to go on, or the image already stored for this upload, which ends the ingestion
(`IngestResult.created` is False); a refusal raises IngestError, a full disk StorageFull (ingest_errors).

A process killed between writing the files and the commit cannot clean up. The files' names are
content-addressed and idempotent (the retry of the same bytes reuses them, see
`MediaStorage.save_content_addressed`), and a marker in `.ingesting/` of the media storage written before
the files lets the sweeper find what such a process left behind (`portal.services.ingestion.ingest_recovery`): after
a grace period, files of that sha256 that no row points to are removed.

Callers should not wrap `ingest_file` in their own transaction: if an outer transaction rolls back
after a successful call, the row disappears but the content-addressed files stay behind as orphans.
"""

from __future__ import annotations

import os
from typing import BinaryIO

from portal.models import Category, Label, Sample, SEMImage
from portal.services.ingestion.decode_guard import run_guarded
from portal.services.ingestion.ingest_errors import IngestError, disk_full_as_storage_full
from portal.services.ingestion.ingest_examine import examine
from portal.services.ingestion.ingest_recovery import ingesting
from portal.services.ingestion.ingest_spool import spooled
from portal.services.ingestion.ingest_store import restore_vanished_files, store_in_one_transaction
from portal.services.ingestion.ingest_upload import IngestResult, Upload, already_stored
from portal.services.ingestion.validation_errors import ValidationError

MAX_IDEMPOTENCY_KEY_LENGTH = SEMImage._meta.get_field("idempotency_key").max_length
MAX_FILENAME_LENGTH = SEMImage._meta.get_field("original_filename").max_length


def ingest_file(
    fileobj: BinaryIO,
    *,
    filename: str,
    sample: Sample,
    uploaded_by,
    label: Category | None = None,
    label_source: str = Label.Source.UPLOAD,
    idempotency_key: str | None = None,
) -> IngestResult:
    """Store one SEM image (or return the existing one); raises IngestError when refused and
    StorageFull when the disk is full."""
    upload = Upload(fileobj, clean_filename(filename), sample, uploaded_by, label, label_source, idempotency_key)
    with disk_full_as_storage_full(upload.filename), upload.held:
        for step in STEPS:
            existing = step(upload)
            if existing is not None:
                return IngestResult(existing, created=False)
    return IngestResult(upload.image, created=True)


def clean_filename(filename: str) -> str:
    """The base name only (browsers and clients sometimes send paths), without control characters."""
    name = os.path.basename(str(filename or "").replace("\\", "/"))
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    if name in (".", ".."):  # path syntax, not a name (e.g. "../.." or "a/..")
        name = ""
    return (name or "upload")[-MAX_FILENAME_LENGTH:]


def check_idempotency_key(upload: Upload) -> SEMImage | None:
    key = str(upload.idempotency_key).strip() if upload.idempotency_key is not None else ""
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or not key.isprintable():
        raise IngestError(
            "invalid_idempotency_key",
            f"The idempotency key must be printable and at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters.",
            upload.filename,
        )
    upload.idempotency_key = key or None
    return SEMImage.objects.filter(idempotency_key=key).first() if key else None


def spool_to_temporary_file(upload: Upload) -> None:
    """Held until the ingestion ends, then removed."""
    upload.spooled = upload.held.enter_context(spooled(upload.fileobj, upload.filename))


def find_same_bytes(upload: Upload) -> SEMImage | None:
    return already_stored(upload.sha256)


def examine_in_capped_child(upload: Upload) -> None:
    """Whatever the decoders do with this file, this process lives on (decode_guard.run_guarded)."""
    try:
        upload.info, upload.metadata, upload.derived = run_guarded(
            examine, upload.spooled.path, upload.spooled.head, upload.filename
        )
    except ValidationError as error:
        raise IngestError(error.code, error.message, upload.filename) from error


def take_turn_on_these_bytes(upload: Upload) -> SEMImage | None:
    """Uploads of the same bytes take turns here, until the ingestion ends: the one that waited finds the
    first one's row."""
    upload.held.enter_context(ingesting(upload.sha256))
    return already_stored(upload.sha256, upload.idempotency_key)


STEPS = (
    check_idempotency_key,
    spool_to_temporary_file,
    find_same_bytes,
    examine_in_capped_child,
    take_turn_on_these_bytes,
    store_in_one_transaction,
    restore_vanished_files,
)
