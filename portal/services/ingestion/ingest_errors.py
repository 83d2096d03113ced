"""How an ingestion says no: the upload was refused (IngestError) or the server's disk is full (StorageFull).

Every caller of `portal.services.ingestion.ingest.ingest_file` (the web form, the REST API, `import_folder`, the watch
folders) turns these into its own answer; nothing is stored in either case.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager


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
def disk_full_as_storage_full(filename: str) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        if error.errno in DISK_FULL_ERRNOS:
            raise StorageFull(filename) from error
        raise
