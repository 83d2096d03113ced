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
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from portal.models import Sample, SEMImage
from portal.services.ingest import ingest_file
from portal.services.ingest_errors import IngestError, StorageFull
from portal.services.metadata import TYPED_FIELDS, parse_sidecar
from portal.watch_models import WatchedFile, WatchFolder

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp"})
TEMP_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".crdownload", ".download", ".filepart", ".swp", "~")
PROCESSED_DIR = "processed"
CLAIM_TIMEOUT_S = 30 * 60  # an ingestion takes seconds; a claim this old belongs to a dead scanner
MAX_SIDECAR_BYTES = 1024 * 1024
SCAN_TASK_NAME = "Scan watch folders"
SCAN_TASK_INTERVAL_S = 15  # the beat task looks for due folders this often; each has its own poll interval
SCAN_LEASE_S = 15 * 60
DEFAULT_INGEST_BUDGET_S = 120.0  # a scheduled scan stops claiming after this; the rest is due next poll

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


# ---------------------------------------------------------------------------------------------
# Walking the share
# ---------------------------------------------------------------------------------------------


def is_candidate(name: str) -> bool:
    """An image file name that is neither hidden nor temporary (Office/instrument lock files, partial copies)."""
    lowered = name.lower()
    if name.startswith((".", "~$", "~")) or lowered.endswith(TEMP_SUFFIXES):
        return False
    return os.path.splitext(lowered)[1] in IMAGE_EXTENSIONS


def walk(root: str) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of every candidate file under root (plain os.scandir, no symlinks)."""
    found: dict[str, tuple[int, int]] = {}
    stack = [("", root)]
    while stack:
        prefix, directory = stack.pop()
        try:
            entries = os.scandir(directory)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue  # removed mid-scan, or not ours to read
        with entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if not entry.name.startswith((".", "~")) and not (prefix == "" and entry.name == PROCESSED_DIR):
                            stack.append((prefix + entry.name + "/", entry.path))
                    elif is_candidate(entry.name) and entry.is_file(follow_symlinks=False):
                        relpath = prefix + entry.name
                        if not _storable(relpath):
                            continue
                        stat = entry.stat(follow_symlinks=False)
                        found[relpath] = (stat.st_size, stat.st_mtime_ns)
                except FileNotFoundError:
                    continue  # deleted between the listing and the stat
    return found


MAX_RELPATH = WatchedFile._meta.get_field("relpath").max_length


def _storable(relpath: str) -> bool:
    """A path the database can hold: not over-long, and valid text (a name in another encoding than the
    file system's comes back from os.scandir with surrogate escapes, which PostgreSQL refuses)."""
    if len(relpath) > MAX_RELPATH or "\x00" in relpath:
        logger.warning("watch folder: skipped a path longer than %s characters: %.200s…", MAX_RELPATH, relpath)
        return False
    try:
        relpath.encode("utf-8")
    except UnicodeEncodeError:
        logger.warning("watch folder: skipped %r: its name is not valid UTF-8 (rename it)", relpath)
        return False
    return True


# ---------------------------------------------------------------------------------------------
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
    token = scanner_id or f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    root = folder.path
    if not os.path.isdir(root):
        _record_scan(folder, report, started, error=f"Folder not found or not a folder: {root}")
        return report
    found = walk(root)
    report.files = len(found)
    rows = {
        row[1]: row
        for row in WatchedFile.objects.filter(folder=folder).values_list(
            "pk", "relpath", "size", "mtime_ns", "status", "stable_since"
        )
    }

    new_rows = [
        WatchedFile(folder=folder, relpath=relpath, size=size, mtime_ns=mtime, stable_since=now)
        for relpath, (size, mtime) in found.items()
        if relpath not in rows
    ]
    if new_rows:
        WatchedFile.objects.bulk_create(new_rows, batch_size=1000, ignore_conflicts=True)
        report.new = len(new_rows)

    due: list[tuple[int, str, int, int]] = []
    for relpath, (size, mtime) in found.items():
        row = rows.get(relpath)
        if row is None:
            report.settling += 1
            continue
        pk, _, old_size, old_mtime, status, stable_since = row
        if (size, mtime) != (old_size, old_mtime):
            if status != Status.INGESTING:  # a new version (still growing, or replaced): settles again
                WatchedFile.objects.filter(pk=pk, size=old_size, mtime_ns=old_mtime).exclude(
                    status=Status.INGESTING
                ).update(
                    size=size,
                    mtime_ns=mtime,
                    stable_since=now,
                    status=Status.SEEN,
                    code="",
                    reason="",
                    image=None,
                    finished_at=None,
                    moved_to="",
                )
                report.changed += 1
            report.settling += 1
        elif status == Status.SEEN:
            if now - stable_since >= folder.settle_s and now > stable_since:
                due.append((pk, relpath, size, mtime))
            else:
                report.settling += 1

    gone = [row[0] for relpath, row in rows.items() if relpath not in found and row[4] == Status.SEEN]
    if gone:
        report.vanished = WatchedFile.objects.filter(pk__in=gone, status=Status.SEEN).delete()[0]
    release_stale_claims(folder)

    if ingest and due:
        deadline = time.monotonic() + ingest_budget_s if ingest_budget_s else None
        context = _FolderContext(folder)
        for pk, relpath, size, mtime in sorted(due, key=lambda item: item[1]):
            if deadline and time.monotonic() > deadline:
                report.settling += 1
                continue
            claimed = WatchedFile.objects.filter(pk=pk, status=Status.SEEN, size=size, mtime_ns=mtime).update(
                status=Status.INGESTING, claimed_by=token, claimed_at=timezone.now()
            )
            if claimed:
                _process(context, pk, relpath, size, mtime, token, clock, report)
    elif due:
        report.settling += len(due)
    _record_scan(folder, report, started)
    return report


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


class _FolderContext:
    """Per-scan look-ups: the uploader, the compiled pattern, samples already resolved."""

    def __init__(self, folder: WatchFolder) -> None:
        self.folder = folder
        self.pattern = re.compile(folder.filename_pattern) if folder.sample_rule == folder.SampleRule.PATTERN else None
        self.samples: dict[str, Sample] = {}
        self._uploader = None

    @property
    def uploader(self):
        if self._uploader is None:
            self._uploader = (
                self.folder.uploader
                or get_user_model().objects.filter(is_superuser=True, is_active=True).order_by("pk").first()
            )
            if self._uploader is None:
                raise IngestError("no_uploader", "The watch folder has no uploader and no superuser exists.")
        return self._uploader


def _process(
    context: _FolderContext, pk: int, relpath: str, size: int, mtime: int, token: str, clock, report: ScanReport
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
    moved_to = _move_to_processed(folder, relpath) if folder.move_to_processed else ""
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


# ---------------------------------------------------------------------------------------------
# Samples
# ---------------------------------------------------------------------------------------------


def resolve_sample(context: _FolderContext, relpath: str) -> Sample:
    """The sample of a file by the folder's rule; IngestError (refused, with the reason) when there is none."""
    folder = context.folder
    rule = folder.sample_rule
    if rule == folder.SampleRule.FIXED:
        if folder.fixed_sample_id is None:
            raise IngestError("no_sample", "The watch folder's fixed sample is not set.")
        return folder.fixed_sample
    if rule == folder.SampleRule.SUBFOLDER:
        parts = relpath.split("/")
        if len(parts) < 2:
            raise IngestError("no_sample", "Not in a sample folder: put it in <share>/<lab sample ID>/.")
        lab_id = parts[0].strip()
    else:
        match = context.pattern.search(os.path.basename(relpath)) if context.pattern else None
        lab_id = (match.group("sample") or "").strip() if match else ""
        if not lab_id:
            raise IngestError("no_sample", f"The file name does not match the pattern {folder.filename_pattern}.")
    if lab_id in context.samples:
        return context.samples[lab_id]
    sample = _sample_by_lab_id(context, lab_id)
    context.samples[lab_id] = sample
    return sample


def _sample_by_lab_id(context: _FolderContext, lab_id: str) -> Sample:
    folder = context.folder
    max_length = Sample._meta.get_field("lab_sample_id").max_length
    if len(lab_id) > max_length:
        raise IngestError("no_sample", f"Lab sample ID {lab_id[:40]}… is longer than {max_length} characters.")
    sample = Sample.objects.filter(lab_sample_id=lab_id).first()
    if sample is None and folder.create_missing_samples:
        try:
            with transaction.atomic():
                sample = Sample.objects.create(
                    project_id=folder.project_id,
                    lab_sample_id=lab_id,
                    name=lab_id,
                    owner=context.uploader,
                    description=f"Created by the watch folder {folder.path}",
                )
        except IntegrityError:  # another scanner created it meanwhile
            sample = Sample.objects.filter(lab_sample_id=lab_id).first()
    if sample is None:
        raise IngestError(
            "no_sample", f"No sample {lab_id!r}: create it, or allow the watch folder to create missing samples."
        )
    if sample.project_id != folder.project_id:
        raise IngestError("no_sample", f"Sample {lab_id!r} belongs to another project than the watch folder's.")
    return sample


# ---------------------------------------------------------------------------------------------
# Sidecar metadata (JEOL, Hitachi)
# ---------------------------------------------------------------------------------------------


def sidecar_path(image_path: str) -> str | None:
    """`image.txt` (any case of .txt) next to `image.tif`, if present."""
    directory, name = os.path.split(image_path)
    stem = os.path.splitext(name)[0]
    for candidate in (f"{stem}.txt", f"{stem}.TXT", f"{stem}.Txt"):
        full = os.path.join(directory, candidate)
        if os.path.isfile(full):
            return full
    return None


def read_sidecar(image_path: str) -> tuple[str, dict] | None:
    path = sidecar_path(image_path)
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_SIDECAR_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_SIDECAR_BYTES:
        return None
    text = data.decode("utf-8") if _is_utf8(data) else data.decode("latin-1")
    parsed = parse_sidecar(text.replace("\x00", ""))
    return (os.path.basename(path), parsed) if parsed else None


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def attach_sidecar(image: SEMImage, image_path: str) -> bool:
    """Fill a new image's instrument metadata from its sidecar, unless the file itself carried some."""
    if image.vendor:
        return False  # FEI/Zeiss/TESCAN (or embedded JEOL/Hitachi text): the file's own metadata wins
    found = read_sidecar(image_path)
    if not found:
        return False
    name, parsed = found
    values = {key: parsed[key] for key in TYPED_FIELDS}
    values["metadata"] = {**(image.metadata or {}), **parsed["raw"], "sidecar": name}
    SEMImage.objects.filter(pk=image.pk).update(**values)
    for key, value in values.items():
        setattr(image, key, value)
    return True


# ---------------------------------------------------------------------------------------------
# processed/
# ---------------------------------------------------------------------------------------------


def _move_to_processed(folder: WatchFolder, relpath: str) -> str:
    """Move the file (and its sidecar) to processed/<relpath>; never overwrites. Returns the new relpath."""
    source = os.path.join(folder.path, relpath)
    try:
        target_rel = _free_name(folder.path, f"{PROCESSED_DIR}/{relpath}")
        os.makedirs(os.path.dirname(os.path.join(folder.path, target_rel)), exist_ok=True)
        sidecar = sidecar_path(source)
        shutil.move(source, os.path.join(folder.path, target_rel))
        if sidecar:
            stem = os.path.splitext(target_rel)[0]
            shutil.move(
                sidecar, os.path.join(folder.path, _free_name(folder.path, stem + os.path.splitext(sidecar)[1]))
            )
        return target_rel
    except OSError as error:
        logger.warning("watch folder %s: could not move %s to %s/: %s", folder.path, relpath, PROCESSED_DIR, error)
        return ""


def _free_name(root: str, relpath: str) -> str:
    stem, extension = os.path.splitext(relpath)
    candidate, number = relpath, 1
    while os.path.lexists(os.path.join(root, candidate)):
        candidate = f"{stem}-{number}{extension}"
        number += 1
    return candidate


# ---------------------------------------------------------------------------------------------
# Scheduling (beat) and the Inbox
# ---------------------------------------------------------------------------------------------


def scan_due_folders(*, ingest_budget_s: float = DEFAULT_INGEST_BUDGET_S) -> dict[str, str]:
    """The beat task: scan every enabled folder whose poll interval has passed (one scan per folder at a time)."""
    results = {}
    now = timezone.now()
    for folder in WatchFolder.objects.filter(enabled=True).select_related("project", "fixed_sample", "uploader"):
        if folder.last_scan_at and folder.last_scan_at + timedelta(seconds=folder.poll_interval_s) > now:
            continue
        leased = (
            WatchFolder.objects.filter(pk=folder.pk)
            .exclude(scan_lease_until__gt=now)
            .update(scan_lease_until=now + timedelta(seconds=SCAN_LEASE_S))
        )
        if not leased:
            continue  # another worker scans it right now
        try:
            results[folder.path] = scan_folder(folder, ingest_budget_s=ingest_budget_s).summary()
        finally:
            WatchFolder.objects.filter(pk=folder.pk).update(scan_lease_until=None)
    return results


def connect_signals() -> None:
    """Saving or deleting a watch folder (admin, shell, queryset deletes too) keeps the beat task in step."""
    from django.db.models.signals import post_delete, post_save

    post_save.connect(_folders_changed, sender=WatchFolder, dispatch_uid="watch-folder-saved")
    post_delete.connect(_folders_changed, sender=WatchFolder, dispatch_uid="watch-folder-deleted")


def _folders_changed(**_ignored) -> None:
    ensure_schedule()


def ensure_schedule() -> None:
    """The beat task exists once a folder is configured, and is enabled only while one is enabled."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    wanted = WatchFolder.objects.filter(enabled=True).exists()
    task = PeriodicTask.objects.filter(name=SCAN_TASK_NAME).first()
    if task is None:
        if not wanted:
            return
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=SCAN_TASK_INTERVAL_S, period=IntervalSchedule.SECONDS
        )
        PeriodicTask.objects.create(
            name=SCAN_TASK_NAME, task="workers.scan_watch_folders", interval=interval, enabled=True
        )
    elif task.enabled != wanted:
        task.enabled = wanted
        task.save(update_fields=["enabled"])


def folder_stats(folder: WatchFolder) -> dict:
    """Counts per status, for the Inbox page and the admin."""
    from django.db.models import Count

    counts = {status: 0 for status in Status.values}
    for row in WatchedFile.objects.filter(folder=folder).values("status").annotate(n=Count("pk")):
        counts[row["status"]] = row["n"]
    counts["seen_total"] = sum(counts[status] for status in Status.values)
    return counts
