"""Watch folders (issue 16): a share the microscope PC saves into, polled by portal.services.ingestion.watch.

Imported at the end of portal.models (portal/models/__init__.py), so these are models of the `portal` app like
the others; import them from portal.models.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models


class WatchFolder(models.Model):
    class SampleRule(models.TextChoices):
        SUBFOLDER = "subfolder", "A sub-folder per sample (<share>/<LAB-SAMPLE-ID>/image.tif)"
        PATTERN = "pattern", "A filename pattern with a named group (?P<sample>...)"
        FIXED = "fixed", "One fixed sample"

    path = models.CharField(
        max_length=500,
        unique=True,
        help_text="Absolute path of the share as the worker sees it (e.g. /mnt/sem-pc/export)",
    )
    project = models.ForeignKey("portal.Project", on_delete=models.PROTECT, related_name="watch_folders")
    sample_rule = models.CharField(max_length=10, choices=SampleRule.choices, default=SampleRule.SUBFOLDER)
    create_missing_samples = models.BooleanField(
        default=False,
        help_text="Sub-folder and pattern rules: create a sample (in this project) the first time its "
        "lab sample ID is seen; otherwise such files are refused with the reason.",
    )
    filename_pattern = models.CharField(
        max_length=300,
        blank=True,
        help_text=r"Pattern rule: a regular expression searched in the file name, with a group named sample, "
        r"e.g. ^(?P<sample>LAB-\d+)_",
    )
    fixed_sample = models.ForeignKey(
        "portal.Sample",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="Fixed rule: every image goes to this sample",
    )
    uploader = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="Recorded as the images' uploader and new samples' owner (default: the first superuser)",
    )
    enabled = models.BooleanField(default=True, help_text="Untick (or Pause on the Inbox page) to stop scanning")
    poll_interval_s = models.PositiveIntegerField("poll interval (s)", default=60)
    settle_s = models.PositiveIntegerField(
        "settle time (s)",
        default=10,
        help_text="A file is ingested only once its size and modification time stayed the same this long",
    )
    move_to_processed = models.BooleanField(
        default=False,
        help_text="Move stored files (and their .txt sidecars) to processed/ in the share. "
        "Off by default: nothing on the share is modified.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Written by the scanner.
    last_scan_at = models.DateTimeField(null=True, blank=True)
    last_scan_seconds = models.FloatField(null=True, blank=True)
    last_scan_files = models.PositiveIntegerField(default=0, help_text="Image files found by the last scan")
    last_error = models.TextField(blank=True)
    scan_lease_until = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Set while a scheduled scan runs (one at a time per folder)"
    )

    class Meta:
        ordering = ["path"]

    def __str__(self) -> str:
        return self.path

    def clean(self):
        errors = {}
        if self.path and not self.path.startswith("/"):
            errors["path"] = "Give an absolute path."
        if self.sample_rule == self.SampleRule.PATTERN:
            try:
                compiled = re.compile(self.filename_pattern or "")
            except re.error as error:
                errors["filename_pattern"] = f"Not a regular expression: {error}"
            else:
                if "sample" not in compiled.groupindex:
                    errors["filename_pattern"] = "The pattern needs a group named sample: (?P<sample>...)"
        if self.sample_rule == self.SampleRule.FIXED:
            if not self.fixed_sample_id:
                errors["fixed_sample"] = "The fixed rule needs a sample."
            elif self.project_id and self.fixed_sample.project_id != self.project_id:
                errors["fixed_sample"] = "The sample belongs to another project."
        if errors:
            raise ValidationError(errors)

    # Saving or deleting a folder enables or disables the beat task: signal receivers in
    # portal.services.ingestion.watch_schedule (connected in PortalConfig.ready), so models never import the services.


class WatchedFile(models.Model):
    """What the scanner knows about one file of a watch folder (one row per relative path).

    A file is claimed for ingestion with a conditional UPDATE (status seen -> ingesting, same size and
    mtime), so two scanners, or a scanner restarted mid-file, never ingest it twice; a finished file keeps
    its outcome until its size or mtime change (then it is a new version and settles again)."""

    class Status(models.TextChoices):
        SEEN = "seen", "Settling"
        INGESTING = "ingesting", "Being ingested"
        STORED = "stored", "Stored"
        DUPLICATE = "duplicate", "Duplicate (same bytes already stored)"
        REFUSED = "refused", "Refused"

    folder = models.ForeignKey(WatchFolder, on_delete=models.CASCADE, related_name="files")
    relpath = models.CharField(max_length=1000, help_text="Path relative to the watch folder")
    size = models.BigIntegerField()
    mtime_ns = models.BigIntegerField()
    stable_since = models.FloatField(help_text="Unix time the current size and mtime were first seen")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SEEN, db_index=True)
    code = models.CharField(max_length=40, blank=True, help_text="Machine code of a refusal")
    reason = models.TextField(blank=True)
    image = models.ForeignKey("portal.SEMImage", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    claimed_by = models.CharField(max_length=64, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    first_seen_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    moved_to = models.CharField(max_length=1000, blank=True)

    class Meta:
        ordering = ["folder", "relpath"]
        constraints = [models.UniqueConstraint(fields=["folder", "relpath"], name="watchedfile_unique_path")]
        indexes = [models.Index(fields=["folder", "status"], name="watchedfile_folder_status_idx")]

    def __str__(self) -> str:
        return f"{self.relpath} ({self.status})"
