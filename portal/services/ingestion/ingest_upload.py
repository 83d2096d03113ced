"""The carrier of one upload through the ingestion steps (portal.services.ingestion.ingest.STEPS), the result a caller
gets back, and the look-up of what is already stored for the same bytes or the same idempotency key."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import BinaryIO

from portal.models import Category, Label, Sample, SEMImage
from portal.services.ingestion.ingest_examine import Derived
from portal.services.ingestion.ingest_spool import Spooled
from portal.services.ingestion.near_duplicates import Match
from portal.services.ingestion.validation_limits import ImageInfo


@dataclass
class Upload:
    """One upload on its way in: what the caller gave, then what each step learned or made, in step order."""

    fileobj: BinaryIO
    filename: str  # the base name only (ingest.clean_filename)
    sample: Sample
    uploaded_by: object  # a user
    label: Category | None = None  # a curated label stored with the image (import_folder, the API)
    label_source: str = Label.Source.UPLOAD
    idempotency_key: str | None = None
    # What the ingestion holds until it ends, in order: the temporary file, then the turn on these bytes.
    held: ExitStack = field(default_factory=ExitStack)
    spooled: Spooled | None = None
    info: ImageInfo | None = None  # header facts (validation)
    metadata: dict | None = None  # instrument metadata (metadata.extract_metadata)
    derived: Derived | None = None  # derivative, thumbnail, perceptual hashes, blank flag
    image: SEMImage | None = None  # the new row, unsaved until the split is decided
    matches: list[Match] = field(default_factory=list)  # stored near-duplicates of the new image
    regrouped: list[int] = field(default_factory=list)  # stored images that move to the new image's side
    written: list[tuple[object, str]] = field(default_factory=list)  # (storage, name) of the files it created

    @property
    def sha256(self) -> str:
        return self.spooled.sha256


@dataclass
class IngestResult:
    image: SEMImage
    created: bool  # False when the same bytes (sha256) or the same idempotency key already existed

    @property
    def near_duplicate_of(self) -> int | None:
        """Id of the closest earlier near-duplicate (portal.services.ingestion.near_duplicates), if any."""
        return self.image.near_duplicate_of_id


def already_stored(sha256: str, idempotency_key: str | None = None) -> SEMImage | None:
    """The image already stored for these bytes, or for this idempotency key."""
    return find_by_sha256(sha256) or (
        SEMImage.objects.filter(idempotency_key=idempotency_key).first() if idempotency_key else None
    )


def find_by_sha256(sha256: str) -> SEMImage | None:
    return SEMImage.objects.filter(sha256=sha256).first()
