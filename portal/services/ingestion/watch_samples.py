"""Which sample a watched file belongs to, by its folder's rule (a fixed sample, the first subfolder's lab
sample ID, or a pattern on the file name); a missing sample is created when the folder allows it."""

from __future__ import annotations

import os
import re

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from portal.models import Sample, WatchFolder
from portal.services.ingestion.ingest_errors import IngestError


class FolderContext:
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


def resolve_sample(context: FolderContext, relpath: str) -> Sample:
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


def _sample_by_lab_id(context: FolderContext, lab_id: str) -> Sample:
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
