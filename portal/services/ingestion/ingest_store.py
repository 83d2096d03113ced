"""Storing one examined upload in one transaction (STORE_STEPS): its three files, its row, its side of the
split and its near-duplicate group, and its curated label; classification is queued once it commits.

Atomicity: any failure deletes the files written so far and rolls the row back, so nothing is
half-stored. A process killed before the commit cannot clean up: its files have content-addressed names,
and the marker of portal.services.ingestion.ingest_recovery lets the sweeper remove them later.
"""

from __future__ import annotations

import logging

from django.core.files import File
from django.core.files.base import ContentFile
from django.db import IntegrityError, connection, transaction

from portal.models import PerceptualHash, SEMImage, split_for_sha256
from portal.services.curation.labels import set_label
from portal.services.delivery import queueing
from portal.services.ingestion import near_duplicates, splits
from portal.services.ingestion.ingest_upload import Upload, already_stored
from portal.services.ingestion.metadata import TYPED_FIELDS

logger = logging.getLogger(__name__)

# Uploads take turns (from their near-duplicate look-up to their commit) so that two near-duplicates
# stored at once still find each other; an arbitrary constant advisory-lock key.
NEAR_DUPLICATE_LOCK_KEY = 0x5E4D0D0B


def build_row(upload: Upload) -> None:
    """The SEMImage row from the header facts, the instrument metadata and the derived files (unsaved)."""
    info, metadata, derived = upload.info, upload.metadata, upload.derived
    upload.image = SEMImage(
        sample=upload.sample,
        sha256=upload.sha256,
        original_filename=upload.filename,
        extension=info.extension,
        format=info.format,
        file_size=upload.spooled.size,
        width=info.width,
        height=info.height,
        bit_depth=info.bit_depth,
        mode=info.mode,
        page_count=min(info.page_count, 32767),
        uploaded_by=upload.uploaded_by,
        idempotency_key=upload.idempotency_key,
        metadata=metadata["raw"],
        **{field: metadata[field] for field in TYPED_FIELDS},  # the typed instrument metadata
        databar_rows=derived.databar_rows,
        blank=derived.blank,
        colourfulness=info.colourfulness,
        split=split_for_sha256(upload.sha256),
        status=SEMImage.Status.PENDING,
    )


def save_content_addressed_files(upload: Upload) -> None:
    """Original byte-for-byte at its content-addressed path, then the two derived files."""
    for field_file, name, content in _content_addressed_files(upload):
        with content() as opened:
            _save_one(field_file, name, opened, upload.written)


def take_near_duplicate_turn(upload: Upload) -> None:
    """Held until the commit (NEAR_DUPLICATE_LOCK_KEY). SQLite, one process, needs no turn."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [NEAR_DUPLICATE_LOCK_KEY])


def match_near_duplicates(upload: Upload) -> None:
    hashes = upload.derived.hashes
    upload.matches = near_duplicates.find_matches(hashes) if hashes else []


def decide_split(upload: Upload) -> None:
    """The new image's side, and the stored images that must follow it to keep a merged group whole."""
    image = upload.image
    image.split, upload.regrouped = splits.split_for_new_image(
        SEMImage, image.sample, image.sha256, [match.image_id for match in upload.matches]
    )


def save_row(upload: Upload) -> None:
    upload.image.save()


def move_regrouped_images(upload: Upload) -> None:
    splits.move(SEMImage, upload.regrouped, upload.image.split)


def write_perceptual_hashes(upload: Upload) -> None:
    rows = near_duplicates.hash_rows(PerceptualHash, upload.image.pk, upload.derived.hashes)
    PerceptualHash.objects.bulk_create(rows)


def join_near_duplicate_groups(upload: Upload) -> None:
    near_duplicates.join_groups(SEMImage, upload.image, upload.matches)


def set_curated_label(upload: Upload) -> None:
    if upload.label is not None:
        set_label(upload.image, upload.label, source=upload.label_source, user=upload.uploaded_by)


def queue_classification_on_commit(upload: Upload) -> None:
    image_id = upload.image.pk
    transaction.on_commit(lambda: _enqueue_classification(image_id))


# In this order, in one transaction. The near-duplicate turn comes after the files are written, so that
# uploads wait for each other only for the few queries from the look-up to the commit.
STORE_STEPS = (
    build_row,
    save_content_addressed_files,
    take_near_duplicate_turn,
    match_near_duplicates,
    decide_split,
    save_row,
    move_regrouped_images,
    write_perceptual_hashes,
    join_near_duplicate_groups,
    set_curated_label,
    queue_classification_on_commit,
)


def store_in_one_transaction(upload: Upload) -> SEMImage | None:
    """Run STORE_STEPS in one transaction. Returns the image of a concurrent upload of the same bytes (or
    key) that committed first, else None (the new image is `upload.image`)."""
    try:
        with transaction.atomic():
            for step in STORE_STEPS:
                step(upload)
    except IntegrityError:
        # A concurrent upload of the same bytes (or key) committed first: that one is the image. Its
        # row may point to files this one wrote (same bytes, same names): those stay.
        existing = None
        try:
            existing = already_stored(upload.sha256, upload.idempotency_key)
        finally:
            kept = {existing.original.name, existing.derivative.name, existing.thumbnail.name} if existing else set()
            _delete_files([(storage, name) for storage, name in upload.written if name not in kept])
        if existing:
            return existing
        raise
    except BaseException:
        _delete_files(upload.written)
        raise
    return None


def restore_vanished_files(upload: Upload) -> None:
    """After the commit: a reused file could have been removed meanwhile by the failing upload that
    wrote it (same bytes, racing this one). Write such a file again; the bytes are still at hand."""
    image = upload.image
    for field_file, _name, content in _content_addressed_files(upload):
        stored = field_file.name
        if not hasattr(field_file.storage, "save_content_addressed") or field_file.storage.exists(stored):
            continue
        logger.warning("stored file %s vanished before image %s committed; writing it again", stored, image.pk)
        with content() as opened:
            again, _created = field_file.storage.save_content_addressed(stored, opened)
        if again != stored:
            SEMImage.objects.filter(pk=image.pk).update(**{field_file.field.attname: again})
            setattr(image, field_file.field.attname, again)


def _content_addressed_files(upload: Upload):
    """(field file, name, opener of its content) of the three files of an image."""
    image, sha, derived = upload.image, upload.sha256, upload.derived
    return [
        (image.original, f"{sha}{image.extension}", lambda: File(open(upload.spooled.path, "rb"))),
        (image.derivative, f"{sha[:2]}/{sha}.png", lambda: ContentFile(derived.derivative_png)),
        (image.thumbnail, f"{sha[:2]}/{sha}.jpg", lambda: ContentFile(derived.thumbnail_jpeg)),
    ]


def _save_one(field_file, name: str, content, written: list) -> None:
    """Save under the content-addressed name. The storage never overwrites; a file with the same
    bytes already there (left by a killed upload, or a concurrent upload's) is reused and is not
    ours to delete, so a failure here never removes a file that another upload owns."""
    storage = field_file.storage
    if not hasattr(storage, "save_content_addressed"):  # another storage backend: Django's way
        field_file.save(name, content, save=False)
        written.append((storage, field_file.name))
        return
    name = field_file.field.generate_filename(field_file.instance, name)
    stored, created = storage.save_content_addressed(name, content, max_length=field_file.field.max_length)
    setattr(field_file.instance, field_file.field.attname, stored)
    if created:
        written.append((storage, stored))


def _delete_files(written: list) -> None:
    for storage, name in written:
        try:
            storage.delete(name)
        except Exception:  # never mask the original error
            logger.exception("could not delete %s after a failed ingestion", name)


def _enqueue_classification(image_id: int) -> None:
    """After commit: the image is stored whatever happens here; the pending sweep retries later."""
    try:
        queueing.enqueue_classification([image_id])
    except Exception:
        logger.exception("could not queue classification of image %s; the pending sweep will pick it up", image_id)
