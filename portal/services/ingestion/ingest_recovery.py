"""Uploads killed between writing their files and committing their row (portal.services.ingestion.ingest).

Such a process cannot clean up. Its files have content-addressed names, so the retry of the same bytes
reuses them; and a marker `.ingesting/<sha256>.<pid>.<random>`, stored through the media storage (a file
under MEDIA_ROOT, or an object in the bucket: the sweeper may run on another host) before the files and
removed after the commit, tells the sweeper which files to look at once it outlives its grace period
(`reconcile_interrupted`): files of that sha256 that no row points to are removed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.core.files.base import ContentFile
from django.db import DatabaseError, connection
from django.utils import timezone

from portal.models import SEMImage
from portal.storage import media_storage

logger = logging.getLogger(__name__)

INGESTING_DIR = ".ingesting"
CONTENT_FOLDERS = ("originals", "derivatives", "thumbnails")


@contextmanager
def sha_lock(sha256: str, *, wait: bool = True) -> Iterator[bool]:
    """A PostgreSQL advisory lock per sha256, held (by this database session) while the files of those
    bytes are written and committed or cleaned up, or while the sweeper removes them; PostgreSQL
    releases it when the process dies. Yields False when `wait` is False and another session holds it.
    SQLite (the single-host quick start) has no such lock: the content-addressed reuse still applies."""
    if connection.vendor != "postgresql":
        yield True
        return
    key = int(sha256[:15], 16)  # 60 bits: a positive bigint
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)" if wait else "SELECT pg_try_advisory_lock(%s)", [key])
        locked = wait or bool(cursor.fetchone()[0])
    try:
        yield locked
    finally:
        if locked:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
            except DatabaseError as error:  # the connection is gone, and its locks with it
                logger.warning("could not release the ingestion lock of %s: %s", sha256, error)


@contextmanager
def ingesting(sha256: str) -> Iterator[None]:
    """Hold the lock of `sha256`, with a marker that says these bytes are being stored: a marker that
    outlives its grace period belongs to a killed process (`reconcile_interrupted`)."""
    with sha_lock(sha256):
        storage = media_storage()
        marker = storage.save(f"{INGESTING_DIR}/{sha256}.{os.getpid()}.{os.urandom(4).hex()}", ContentFile(b""))
        try:
            yield
        finally:
            _delete_quietly(storage, marker)


def reconcile_interrupted(grace_s: float) -> int:
    """Remove what uploads killed between their files and their commit left behind; returns how many
    files were removed.

    A marker older than `grace_s` belongs to a process that died. The files of its sha256 that no row
    points to (and that were not touched within `grace_s`, so no upload is reusing them right now) are
    removed, then the marker. Markers of a sha256 that is being ingested right now wait.
    """
    storage = media_storage()
    try:
        _folders, names = storage.listdir(INGESTING_DIR)
    except FileNotFoundError:
        return 0
    cutoff = timezone.now() - timedelta(seconds=grace_s)
    ages: dict[str, list[tuple[str, datetime]]] = {}
    for name in names:
        modified = _modified(storage, f"{INGESTING_DIR}/{name}")
        if modified is not None:  # else that upload finished meanwhile
            ages.setdefault(name.split(".", 1)[0], []).append((f"{INGESTING_DIR}/{name}", modified))
    removed = 0
    for sha256, found in ages.items():
        if any(modified >= cutoff for _name, modified in found) or not _is_sha256(sha256):
            continue  # an upload of these bytes may be in progress (or not a marker of ours)
        with sha_lock(sha256, wait=False) as locked:
            if not locked:
                continue  # being stored right now; next sweep
            removed += _remove_unreferenced_files(storage, sha256, cutoff)
            for name, _modified_at in found:
                _delete_quietly(storage, name)
    return removed


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(ch in "0123456789abcdef" for ch in text)


def _remove_unreferenced_files(storage, sha256: str, cutoff: datetime) -> int:
    referenced = set()
    for names in SEMImage.objects.filter(sha256=sha256).values_list("original", "derivative", "thumbnail"):
        referenced.update(names)
    removed = 0
    for content_folder in CONTENT_FOLDERS:
        directory = f"{content_folder}/{sha256[:2]}"
        try:
            _folders, entries = storage.listdir(directory)
        except FileNotFoundError:
            continue
        for entry in entries:
            name = f"{directory}/{entry}"
            if not entry.startswith(sha256) or name in referenced:
                continue
            modified = _modified(storage, name)
            if modified is not None and modified < cutoff:
                storage.delete(name)
                removed += 1
                logger.info("removed %s: left by an upload killed before its commit", name)
    return removed


def _modified(storage, name: str) -> datetime | None:
    try:
        modified = storage.get_modified_time(name)
    except FileNotFoundError:
        return None
    return modified if timezone.is_aware(modified) else timezone.make_aware(modified)


def _delete_quietly(storage, name: str) -> None:
    try:
        storage.delete(name)
    except FileNotFoundError:
        pass
