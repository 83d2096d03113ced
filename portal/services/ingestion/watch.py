"""Watch folders (issue 16): images saved by the microscope PC into a share are ingested by themselves.

A plain polling scan (os.scandir; inotify does not fire on SMB/NFS mounts). Per scan of a folder:

1. walk the share: every image file (by extension) that is not hidden, temporary (`~$…`, `.tmp`, …) or under
   `processed/`, with its size and mtime;
2. compare with the folder's WatchedFile rows: a new path gets a row (status seen), a path whose size or mtime
   changed starts settling again (a file still being written, or replaced), a settling path that vanished loses
   its row;
3. a path whose size and mtime stayed the same for the folder's settle time (over at least two scans) is
   claimed with a conditional UPDATE (seen -> ingesting, same size and mtime) and ingested through
   `ingest_file`, like an upload: the sha256 makes the same bytes one image, validation refuses a file that
   does not decode. The file is read from an open handle whose size and mtime are checked again after the last
   byte, so a file that changed while being read settles again instead of being stored half.
4. the outcome (stored / duplicate / refused with the reason) stays on the row until the file changes: a refused
   file is reported once, not at every poll; a restarted or second scanner finds the rows and ingests nothing
   twice. A claim whose scanner died is released after CLAIM_TIMEOUT_S.

The share is only read, unless the folder's `move_to_processed` option is on. JEOL/Hitachi `.txt` sidecars next
to an image are parsed with the existing metadata parsers and attached to the new image.

The share is walked by watch_share, a file's sample found by watch_samples, its sidecar read by
watch_sidecars, and the beat task that scans due folders is watch_schedule's.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from django.utils import timezone

from portal.models import WatchedFile, WatchFolder
from portal.services.ingestion.ingest import ingest_file
from portal.services.ingestion.ingest_errors import IngestError, StorageFull
from portal.services.ingestion.watch_samples import FolderContext, resolve_sample
from portal.services.ingestion.watch_share import move_to_processed, walk
from portal.services.ingestion.watch_sidecars import attach_sidecar

logger = logging.getLogger(__name__)

CLAIM_TIMEOUT_S = 30 * 60  # an ingestion takes seconds; a claim this old belongs to a dead scanner

Status = WatchedFile.Status
FINAL = (Status.STORED, Status.DUPLICATE, Status.REFUSED)


class FileChanged(Exception):
    """The file's size or mtime changed while it was being read: it is still being written."""


@dataclass
class ScanReport:
    files: int = 0  # image files found
    new: int = 0  # paths seen for the first time
    changed: int = 0  # paths whose size or mtime changed (settling again)
    vanished: int = 0  # settling paths that disappeared
    settling: int = 0  # paths not yet settled after this scan
    stored: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (relpath, reason)
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"{self.files} image files: {len(self.stored)} stored, {len(self.duplicates)} duplicates, "
            f"{len(self.refused)} refused, {self.settling} settling ({self.seconds:.2f} s)"
        )


# Scanning
# ---------------------------------------------------------------------------------------------


def scan_folder(
    folder: WatchFolder,
    *,
    clock=time.time,
    ingest: bool = True,
    ingest_budget_s: float | None = None,
    scanner_id: str | None = None,
) -> ScanReport:
    """One scan of a watch folder (see the module docstring). Safe to run in several processes at once."""
    started = time.monotonic()
    now = clock()
    report = ScanReport()
    if not os.path.isdir(folder.path):
        _record_scan(folder, report, started, error=f"Folder not found or not a folder: {folder.path}")
        return report
    found = walk(folder.path)
    report.files = len(found)
    rows = {
        row[1]: row
        for row in WatchedFile.objects.filter(folder=folder).values_list(
            "pk", "relpath", "size", "mtime_ns", "status", "stable_since"
        )
    }
    _add_new_paths(folder, found, rows, now, report)
    due = _settled_paths(folder, found, rows, now, report)
    _forget_vanished_paths(found, rows, report)
    release_stale_claims(folder)
    if ingest:
        token = scanner_id or f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        _claim_and_ingest(folder, due, token, clock, ingest_budget_s, report)
    else:
        report.settling += len(due)
    _record_scan(folder, report, started)
    return report


def _add_new_paths(folder: WatchFolder, found: dict, rows: dict, now: float, report: ScanReport) -> None:
    new_rows = [
        WatchedFile(folder=folder, relpath=relpath, size=size, mtime_ns=mtime, stable_since=now)
        for relpath, (size, mtime) in found.items()
        if relpath not in rows
    ]
    if new_rows:
        WatchedFile.objects.bulk_create(new_rows, batch_size=1000, ignore_conflicts=True)
        report.new = len(new_rows)


def _settled_paths(folder: WatchFolder, found: dict, rows: dict, now: float, report: ScanReport) -> list:
    """(pk, relpath, size, mtime) of the paths due for ingestion; a changed path starts settling again."""
    due: list[tuple[int, str, int, int]] = []
    for relpath, (size, mtime) in found.items():
        row = rows.get(relpath)
        if row is None:
            report.settling += 1
            continue
        pk, _, old_size, old_mtime, status, stable_since = row
        if (size, mtime) != (old_size, old_mtime):
            if status != Status.INGESTING:  # a new version (still growing, or replaced): settles again
                _settle_again(pk, (old_size, old_mtime), (size, mtime), now)
                report.changed += 1
            report.settling += 1
        elif status == Status.SEEN:
            if now - stable_since >= folder.settle_s and now > stable_since:
                due.append((pk, relpath, size, mtime))
            else:
                report.settling += 1
    return due


def _settle_again(pk: int, old: tuple[int, int], new: tuple[int, int], now: float) -> None:
    """The outcome of the old version is forgotten; unless a scanner claimed it meanwhile."""
    WatchedFile.objects.filter(pk=pk, size=old[0], mtime_ns=old[1]).exclude(status=Status.INGESTING).update(
        size=new[0],
        mtime_ns=new[1],
        stable_since=now,
        status=Status.SEEN,
        code="",
        reason="",
        image=None,
        finished_at=None,
        moved_to="",
    )


def _forget_vanished_paths(found: dict, rows: dict, report: ScanReport) -> None:
    gone = [row[0] for relpath, row in rows.items() if relpath not in found and row[4] == Status.SEEN]
    if gone:
        report.vanished = WatchedFile.objects.filter(pk__in=gone, status=Status.SEEN).delete()[0]


def _claim_and_ingest(
    folder: WatchFolder, due: list, token: str, clock, ingest_budget_s: float | None, report: ScanReport
) -> None:
    """Claim each due path (seen -> ingesting, unless another scanner was faster) and ingest it, in path
    order, until the budget is spent; the rest stays due for the next scan."""
    if not due:
        return
    deadline = time.monotonic() + ingest_budget_s if ingest_budget_s else None
    context = FolderContext(folder)
    for pk, relpath, size, mtime in sorted(due, key=lambda item: item[1]):
        if deadline and time.monotonic() > deadline:
            report.settling += 1
            continue
        claimed = WatchedFile.objects.filter(pk=pk, status=Status.SEEN, size=size, mtime_ns=mtime).update(
            status=Status.INGESTING, claimed_by=token, claimed_at=timezone.now()
        )
        if claimed:
            _process(context, pk, relpath, size, mtime, token, clock, report)


def release_stale_claims(folder: WatchFolder) -> int:
    """Claims of a scanner that died mid-file: the file settles again and is ingested by the next scan."""
    cutoff = timezone.now() - timedelta(seconds=CLAIM_TIMEOUT_S)
    return WatchedFile.objects.filter(folder=folder, status=Status.INGESTING, claimed_at__lt=cutoff).update(
        status=Status.SEEN, claimed_by="", claimed_at=None
    )


def _record_scan(folder: WatchFolder, report: ScanReport, started: float, error: str = "") -> None:
    report.seconds = time.monotonic() - started
    WatchFolder.objects.filter(pk=folder.pk).update(
        last_scan_at=timezone.now(), last_scan_seconds=report.seconds, last_scan_files=report.files, last_error=error
    )
    if error:
        logger.warning("watch folder %s: %s", folder.path, error)


def _process(
    context: FolderContext, pk: int, relpath: str, size: int, mtime: int, token: str, clock, report: ScanReport
) -> None:
    folder = context.folder
    path = os.path.join(folder.path, relpath)
    claim = WatchedFile.objects.filter(pk=pk, status=Status.INGESTING, claimed_by=token)
    try:
        sample = resolve_sample(context, relpath)
        with open(path, "rb") as handle:
            result = ingest_file(
                _CheckedReader(handle, size, mtime),
                filename=os.path.basename(relpath),
                sample=sample,
                uploaded_by=context.uploader,
            )
    except FileNotFoundError:
        claim.delete()  # deleted (or moved away) before it was read: nothing to report
        report.vanished += 1
        return
    except FileChanged:
        claim.update(status=Status.SEEN, claimed_by="", claimed_at=None, stable_since=clock())
        report.settling += 1
        return
    except StorageFull as error:
        claim.update(status=Status.SEEN, claimed_by="", claimed_at=None)  # the file is fine: retried later
        WatchFolder.objects.filter(pk=folder.pk).update(last_error=error.message)
        report.settling += 1
        return
    except IngestError as error:
        claim.update(
            status=Status.REFUSED, code=error.code[:40], reason=error.message, claimed_by="", finished_at=timezone.now()
        )
        report.refused.append((relpath, error.message))
        logger.info("watch folder %s: refused %s: %s", folder.path, relpath, error.message)
        return
    except Exception as error:  # a bug or an unreadable share: reported once on the row, not retried every poll
        logger.exception("watch folder %s: could not ingest %s", folder.path, relpath)
        claim.update(
            status=Status.REFUSED,
            code="error",
            reason=f"Could not be ingested: {error!r}"[:2000],
            claimed_by="",
            finished_at=timezone.now(),
        )
        report.refused.append((relpath, repr(error)))
        return
    if result.created:
        attach_sidecar(result.image, path)
    status = Status.STORED if result.created else Status.DUPLICATE
    moved_to = move_to_processed(folder, relpath) if folder.move_to_processed else ""
    claim.update(
        status=status,
        image=result.image,
        code="",
        reason="" if result.created else f"Same bytes as image {result.image.pk} ({result.image.original_filename})",
        claimed_by="",
        finished_at=timezone.now(),
        moved_to=moved_to,
    )
    (report.stored if result.created else report.duplicates).append(relpath)


class _CheckedReader:
    """A read-only file handle for ingest_file that, at the end of the file, checks that the file still has
    the size and mtime it settled with (else FileChanged: the bytes read may mix two versions)."""

    def __init__(self, handle, size: int, mtime_ns: int) -> None:
        self.handle, self.size, self.mtime_ns = handle, size, mtime_ns
        self.read_bytes = 0

    def read(self, count: int = -1) -> bytes:
        chunk = self.handle.read(count)
        self.read_bytes += len(chunk)
        if not chunk or count < 0:
            stat = os.fstat(self.handle.fileno())
            if (stat.st_size, stat.st_mtime_ns) != (self.size, self.mtime_ns) or self.read_bytes != self.size:
                raise FileChanged()
        return chunk


def folder_stats(folder: WatchFolder) -> dict:
    """Counts per status, for the Inbox page and the admin."""
    from django.db.models import Count

    counts = {status: 0 for status in Status.values}
    for row in WatchedFile.objects.filter(folder=folder).values("status").annotate(n=Count("pk")):
        counts[row["status"]] = row["n"]
    counts["seen_total"] = sum(counts[status] for status in Status.values)
    return counts
