"""The one ingestion path for SEM images: web upload, REST API and `import_folder` all call `ingest_file`.

Pipeline: stream to a temporary file while hashing and enforcing the byte limit -> return the
existing image for known bytes or idempotency key -> validate (magic bytes, header pixel limit,
full decode) -> instrument metadata -> data-bar crop, model-input derivative and thumbnail ->
one transaction that writes the files, the SEMImage row (its perceptual hashes, near-duplicate group and
side of the split: `_place`) and the optional curated label.

Atomicity: any failure deletes the files written so far and rolls the row back, so nothing is
half-stored. Classification is queued only once the transaction has committed.

A process killed between writing the files and the commit cannot clean up. The files' names are
content-addressed and idempotent (the retry of the same bytes reuses them, see
`MediaStorage.save_content_addressed`), and a marker in `.ingesting/` of the media storage written before
the files lets the sweeper find what such a process left behind (`portal.services.ingest_recovery`): after
a grace period, files of that sha256 that no row points to are removed.

Callers should not wrap `ingest_file` in their own transaction: if an outer transaction rolls back
after a successful call, the row disappears but the content-addressed files stay behind as orphans.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO

from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.db import IntegrityError, connection, transaction
from PIL import Image, ImageStat

from classifier.databar import crop_databar
from classifier.perceptual import window_hashes
from classifier.preprocess import DERIVATIVE_SHORT_SIDE, make_derivative
from portal.models import Category, Label, Sample, SEMImage, split_for_sha256
from portal.services import queueing
from portal.services.decode_guard import run_guarded
from portal.services.ingest_recovery import INGESTING_DIR, reconcile_interrupted  # noqa: F401  (callers import them from here)
from portal.services.ingest_recovery import ingesting as _ingesting
from portal.services.labels import set_label
from portal.services.metadata import extract_metadata
from portal.services.validation import SNIFF_BYTES, ImageInfo, ValidationError, inspect_image, sniff_format

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
THUMBNAIL_MAX_SIDE = 256
# The model-input derivative has a short side of DERIVATIVE_SHORT_SIDE (256) px and a long side of at most
# this: 32 times the short side, more than any accepted aspect ratio (SEM_MAX_ASPECT_RATIO) after a data bar
# is cropped off. At most 256 x 8192 px = 2 MiB, whatever the upload.
DERIVATIVE_MAX_LONG_SIDE = 32 * DERIVATIVE_SHORT_SIDE
THUMBNAIL_JPEG_QUALITY = 85
# A derivative whose grey levels vary less than this (standard deviation, 0-255) shows nothing: an all-black
# or empty frame, the beam off. The model still answers for it, so the image is flagged as blank.
BLANK_STDDEV = 2.0
MAX_IDEMPOTENCY_KEY_LENGTH = SEMImage._meta.get_field("idempotency_key").max_length
MAX_FILENAME_LENGTH = SEMImage._meta.get_field("original_filename").max_length


class IngestError(Exception):
    """An upload that was refused. Nothing was stored.

    ``code`` is a short machine code: empty, too_large, not_an_image, disguised, unsupported_format,
    corrupt, truncated, too_many_pixels, extreme_aspect_ratio, too_many_bytes, too_many_samples,
    malformed_structure, decoding_limit (the capped decoding process ran out of memory or time),
    invalid_idempotency_key.
    ``message`` is for humans.
    """

    def __init__(self, code: str, message: str, filename: str = "") -> None:
        super().__init__(f"{filename}: {message}" if filename else message)
        self.code = code
        self.message = message
        self.filename = filename


class StorageFull(Exception):
    """The media (or upload temporary) directory has no space left. Nothing was stored; the same
    upload succeeds once space is freed. Not an IngestError: the file is fine, the server is not."""

    code = "insufficient_storage"
    message = "The server has no storage space left for uploads. Nothing was stored; try again later."

    def __init__(self, filename: str = "") -> None:
        super().__init__(f"{filename}: {self.message}" if filename else self.message)
        self.filename = filename


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


@contextmanager
def _disk_full_as_storage_full(filename: str) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        if error.errno in DISK_FULL_ERRNOS:
            raise StorageFull(filename) from error
        raise


@dataclass
class IngestResult:
    image: SEMImage
    created: bool  # False when the same bytes (sha256) or the same idempotency key already existed

    @property
    def near_duplicate_of(self) -> int | None:
        """Id of the closest earlier near-duplicate (portal.services.near_duplicates), if any."""
        return self.image.near_duplicate_of_id


@dataclass
class _Upload:
    path: str
    sha256: str
    size: int
    head: bytes


@dataclass
class _Derived:
    derivative_png: bytes
    thumbnail_jpeg: bytes
    databar_rows: int
    hashes: dict = field(default_factory=dict)  # {window: perceptual hash} (classifier.perceptual)
    blank: bool = False


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
    filename = clean_filename(filename)
    idempotency_key = _check_idempotency_key(idempotency_key, filename)
    if idempotency_key:
        existing = SEMImage.objects.filter(idempotency_key=idempotency_key).first()
        if existing:
            return IngestResult(existing, created=False)
    with _disk_full_as_storage_full(filename), _spooled(fileobj, filename) as upload:
        existing = find_by_sha256(upload.sha256)
        if existing:
            return IngestResult(existing, created=False)
        try:
            # In a capped child process: whatever the decoders do with this file, this process lives on.
            info, metadata, derived = run_guarded(examine, upload.path, upload.head, filename)
        except ValidationError as error:
            raise IngestError(error.code, error.message, filename) from error
        return _store(
            upload,
            info,
            metadata,
            derived,
            filename=filename,
            sample=sample,
            uploaded_by=uploaded_by,
            label=label,
            label_source=label_source,
            idempotency_key=idempotency_key,
        )


def examine(path: str, head: bytes, filename: str) -> tuple[ImageInfo, dict, _Derived]:
    """Everything between spooling and storing: sniff, check the header, decode, read the instrument
    metadata, make the derivative and the thumbnail. Raises ValidationError for a refused file.

    This is where one upload's memory goes; tests/security/memory_probe.py measures its peak."""
    image_format = sniff_format(head, filename)
    info, grey = inspect_image(path, image_format)
    metadata = extract_metadata(path, image_width=info.width)
    return info, metadata, make_derived_files(grey)


def find_by_sha256(sha256: str) -> SEMImage | None:
    return SEMImage.objects.filter(sha256=sha256).first()


def clean_filename(filename: str) -> str:
    """The base name only (browsers and clients sometimes send paths), without control characters."""
    name = os.path.basename(str(filename or "").replace("\\", "/"))
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    if name in (".", ".."):  # path syntax, not a name (e.g. "../.." or "a/..")
        name = ""
    return (name or "upload")[-MAX_FILENAME_LENGTH:]


def make_derived_files(grey: Image.Image) -> _Derived:
    """Data bar cropped off for the model-input derivative; the thumbnail shows the whole image."""
    cropped, databar_rows = crop_databar(grey)
    derivative = make_derivative(cropped, derivative_short_side(*cropped.size))
    thumbnail = grey.copy()
    thumbnail.thumbnail((THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return _Derived(
        _encode(derivative, "PNG", optimize=False),
        _encode(thumbnail, "JPEG", quality=THUMBNAIL_JPEG_QUALITY),
        databar_rows,
        window_hashes(derivative),
        is_blank(derivative),
    )


def is_blank(grey: Image.Image) -> bool:
    """A near-constant 8-bit greyscale image (BLANK_STDDEV)."""
    return ImageStat.Stat(grey).stddev[0] < BLANK_STDDEV


def derivative_short_side(width: int, height: int) -> int:
    """The derivative's short side: DERIVATIVE_SHORT_SIDE, unless its long side would then pass
    DERIVATIVE_MAX_LONG_SIDE. A narrow image (a 1-pixel-high strip, or a wide image whose data bar took
    most of its height) is never scaled up into a giant derivative: its long side is capped instead."""
    short, long = min(width, height), max(width, height)
    if long * DERIVATIVE_SHORT_SIDE <= DERIVATIVE_MAX_LONG_SIDE * short:
        return DERIVATIVE_SHORT_SIDE
    return max(1, DERIVATIVE_MAX_LONG_SIDE * short // long)


def _encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _check_idempotency_key(key: str | None, filename: str) -> str | None:
    if key is None:
        return None
    key = str(key).strip()
    if not key:
        return None
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or not key.isprintable():
        raise IngestError(
            "invalid_idempotency_key",
            f"The idempotency key must be printable and at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters.",
            filename,
        )
    return key


# ---------------------------------------------------------------------------------------------
# Streaming to a temporary file
# ---------------------------------------------------------------------------------------------


@contextmanager
def _spooled(fileobj: BinaryIO, filename: str) -> Iterator[_Upload]:
    """Copy the upload to a temporary file, hashing as we go and stopping at the byte limit."""
    limit = settings.SEM_MAX_UPLOAD_BYTES
    handle = tempfile.NamedTemporaryFile(
        prefix="sem-upload-", suffix=".bin", delete=False, dir=getattr(settings, "FILE_UPLOAD_TEMP_DIR", None)
    )
    try:
        digest, size, head = hashlib.sha256(), 0, b""
        with handle:
            for chunk in _chunks(fileobj):
                size += len(chunk)
                if size > limit:
                    raise IngestError(
                        "too_large", f"The file is larger than the limit of {_human_bytes(limit)}.", filename
                    )
                if len(head) < SNIFF_BYTES:
                    head += chunk[: SNIFF_BYTES - len(head)]
                digest.update(chunk)
                handle.write(chunk)
        if size == 0:
            raise IngestError("empty", "The file is empty (0 bytes).", filename)
        yield _Upload(handle.name, digest.hexdigest(), size, head)
    finally:
        _remove_quietly(handle.name)


def _chunks(fileobj) -> Iterator[bytes]:
    if hasattr(fileobj, "chunks"):  # Django UploadedFile: works for in-memory and temporary uploads
        if hasattr(fileobj, "seek"):
            fileobj.seek(0)
        yield from fileobj.chunks(CHUNK_BYTES)
        return
    while True:
        chunk = fileobj.read(CHUNK_BYTES)
        if not chunk:
            return
        yield bytes(chunk)


def _human_bytes(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} bytes"


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------------------------------------
# Storing: files + row + label in one transaction
# ---------------------------------------------------------------------------------------------


def _store(
    upload: _Upload,
    info: ImageInfo,
    metadata: dict,
    derived: _Derived,
    *,
    filename: str,
    sample: Sample,
    uploaded_by,
    label: Category | None,
    label_source: str,
    idempotency_key: str | None,
) -> IngestResult:
    with _ingesting(upload.sha256):
        # Uploads of the same bytes take turns here: the one that waited finds the first one's row.
        existing = _existing_image(upload.sha256, idempotency_key)
        if existing:
            return IngestResult(existing, created=False)
        return _store_files_and_row(
            upload,
            info,
            metadata,
            derived,
            filename=filename,
            sample=sample,
            uploaded_by=uploaded_by,
            label=label,
            label_source=label_source,
            idempotency_key=idempotency_key,
        )


def _existing_image(sha256: str, idempotency_key: str | None) -> SEMImage | None:
    """The image already stored for these bytes, or for this idempotency key."""
    return find_by_sha256(sha256) or (
        SEMImage.objects.filter(idempotency_key=idempotency_key).first() if idempotency_key else None
    )


def _store_files_and_row(
    upload: _Upload,
    info: ImageInfo,
    metadata: dict,
    derived: _Derived,
    *,
    filename: str,
    sample: Sample,
    uploaded_by,
    label: Category | None,
    label_source: str,
    idempotency_key: str | None,
) -> IngestResult:
    written: list[tuple[object, str]] = []  # (storage, name) of every file this ingestion created
    try:
        with transaction.atomic():
            image = _new_image(
                upload,
                info,
                metadata,
                derived,
                filename=filename,
                sample=sample,
                uploaded_by=uploaded_by,
                idempotency_key=idempotency_key,
            )
            _save_files(image, upload, derived, written)
            _place(image, derived)
            if label is not None:
                set_label(image, label, source=label_source, user=uploaded_by)
            image_id = image.pk
            transaction.on_commit(lambda: _enqueue_classification(image_id))
    except IntegrityError:
        # A concurrent upload of the same bytes (or key) committed first: that one is the image. Its
        # row may point to files this one wrote (same bytes, same names): those stay.
        existing = None
        try:
            existing = _existing_image(upload.sha256, idempotency_key)
        finally:
            kept = {existing.original.name, existing.derivative.name, existing.thumbnail.name} if existing else set()
            _delete_files([(storage, name) for storage, name in written if name not in kept])
        if existing:
            return IngestResult(existing, created=False)
        raise
    except BaseException:
        _delete_files(written)
        raise
    _restore_vanished_files(image, upload, derived)
    return IngestResult(image, created=True)


# Uploads take turns (from their near-duplicate look-up to their commit) so that two near-duplicates
# stored at once still find each other; an arbitrary constant advisory-lock key.
NEAR_DUPLICATE_LOCK_KEY = 0x5E4D0D0B


def _place(image: SEMImage, derived: _Derived) -> None:
    """Save the row with its side of the split, its perceptual hashes and its near-duplicate group
    (inside the ingestion transaction)."""
    from portal.models import PerceptualHash
    from portal.services import near_duplicates, splits

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [NEAR_DUPLICATE_LOCK_KEY])
    matches = near_duplicates.find_matches(derived.hashes) if derived.hashes else []
    side, others = splits.split_for_new_image(SEMImage, image.sample, image.sha256, [m.image_id for m in matches])
    image.split = side
    image.save()
    splits.move(SEMImage, others, side)
    PerceptualHash.objects.bulk_create(near_duplicates.hash_rows(PerceptualHash, image.pk, derived.hashes))
    near_duplicates.join_groups(SEMImage, image, matches)


def _new_image(
    upload: _Upload,
    info: ImageInfo,
    metadata: dict,
    derived: _Derived,
    *,
    filename: str,
    sample: Sample,
    uploaded_by,
    idempotency_key: str | None,
) -> SEMImage:
    return SEMImage(
        sample=sample,
        sha256=upload.sha256,
        original_filename=filename,
        extension=info.extension,
        format=info.format,
        file_size=upload.size,
        width=info.width,
        height=info.height,
        bit_depth=info.bit_depth,
        mode=info.mode,
        page_count=min(info.page_count, 32767),
        uploaded_by=uploaded_by,
        idempotency_key=idempotency_key,
        metadata=metadata["raw"],
        vendor=metadata["vendor"],
        instrument_model=metadata["instrument_model"],
        accelerating_voltage_kv=metadata["accelerating_voltage_kv"],
        working_distance_mm=metadata["working_distance_mm"],
        magnification=metadata["magnification"],
        pixel_size_nm=metadata["pixel_size_nm"],
        detector=metadata["detector"],
        acquired_at=metadata["acquired_at"],
        databar_rows=derived.databar_rows,
        blank=derived.blank,
        split=split_for_sha256(upload.sha256),
        status=SEMImage.Status.PENDING,
    )


def _save_files(image: SEMImage, upload: _Upload, derived: _Derived, written: list) -> None:
    """Original byte-for-byte at its content-addressed path, then the two derived files."""
    for field_file, name, content in _content_addressed_files(image, upload, derived):
        with content() as opened:
            _save_one(field_file, name, opened, written)


def _content_addressed_files(image: SEMImage, upload: _Upload, derived: _Derived):
    """(field file, name, opener of its content) of the three files of an image."""
    sha = upload.sha256
    return [
        (image.original, f"{sha}{image.extension}", lambda: File(open(upload.path, "rb"))),
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


def _restore_vanished_files(image: SEMImage, upload: _Upload, derived: _Derived) -> None:
    """After the commit: a reused file could have been removed meanwhile by the failing upload that
    wrote it (same bytes, racing this one). Write such a file again; the bytes are still at hand."""
    for field_file, _name, content in _content_addressed_files(image, upload, derived):
        stored = field_file.name
        if not hasattr(field_file.storage, "save_content_addressed") or field_file.storage.exists(stored):
            continue
        logger.warning("stored file %s vanished before image %s committed; writing it again", stored, image.pk)
        with content() as opened:
            again, _created = field_file.storage.save_content_addressed(stored, opened)
        if again != stored:
            SEMImage.objects.filter(pk=image.pk).update(**{field_file.field.attname: again})
            setattr(image, field_file.field.attname, again)


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
