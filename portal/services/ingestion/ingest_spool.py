"""Ingestion's first contact with the bytes: stream the upload to a temporary file, hashing as it goes and
stopping at the byte limit, before anything looks at what the bytes are."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from django.conf import settings

from portal.byte_sizes import human_bytes
from portal.services.ingestion.ingest_errors import IngestError
from portal.services.ingestion.validation_sniff import SNIFF_BYTES

CHUNK_BYTES = 1024 * 1024


@dataclass
class Spooled:
    """The upload's bytes on local disk: where, their sha256 and size, and the first bytes for sniffing."""

    path: str
    sha256: str
    size: int
    head: bytes


@contextmanager
def spooled(fileobj: BinaryIO, filename: str) -> Iterator[Spooled]:
    """Copy the upload to a temporary file, hashing as we go and stopping at the byte limit. The file is
    removed when the block ends, whatever happened."""
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
                        "too_large", f"The file is larger than the limit of {human_bytes(limit)}.", filename
                    )
                if len(head) < SNIFF_BYTES:
                    head += chunk[: SNIFF_BYTES - len(head)]
                digest.update(chunk)
                handle.write(chunk)
        if size == 0:
            raise IngestError("empty", "The file is empty (0 bytes).", filename)
        yield Spooled(handle.name, digest.hexdigest(), size, head)
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


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
