"""manage.py watch_folder PATH --project NAME [--sample-rule subfolder|pattern:REGEX|fixed:LAB_ID] [--once]

Registers PATH as a watch folder (or updates the existing one) and scans it: with --once until the files present
have settled and been ingested, else forever at the folder's poll interval (a long-running `watcher` service).
`manage.py watch_folder --all` runs every configured, enabled folder in that loop instead of the beat task.
"""

from __future__ import annotations

import os
import re
import time

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from portal.management.commands.import_folder import resolve_user
from portal.models import Project, Sample, WatchFolder
from portal.services.ingestion import watch, watch_schedule


class Command(BaseCommand):
    help = "Watch a folder (e.g. the microscope PC's share) and ingest the images saved into it."

    def add_arguments(self, parser):
        parser.add_argument("path", nargs="?", help="Folder to watch (absolute, as this host sees it)")
        parser.add_argument("--all", action="store_true", help="Scan every enabled watch folder in a loop")
        parser.add_argument("--project", metavar="NAME", help="Project of the images (created when missing)")
        parser.add_argument(
            "--sample-rule",
            default=None,
            metavar="RULE",
            help="subfolder (default: <share>/<LAB-ID>/image.tif), pattern:REGEX (with a group "
            "(?P<sample>...)), or fixed:LAB_ID",
        )
        parser.add_argument("--create-samples", action="store_true", help="Create samples that do not exist yet")
        parser.add_argument("--settle", type=int, metavar="S", help="Settle time in seconds (default 10)")
        parser.add_argument("--interval", type=int, metavar="S", help="Poll interval in seconds (default 60)")
        parser.add_argument(
            "--move-to-processed",
            action="store_true",
            help="Move stored files to processed/ (off: the share is never modified)",
        )
        parser.add_argument("--user", metavar="USERNAME", help="Uploader of the images and owner of new samples")
        parser.add_argument(
            "--once",
            action="store_true",
            help="Ingest what is there once it has settled, then exit (status 1 if any was refused)",
        )
        parser.add_argument(
            "--max-wait",
            type=float,
            default=600.0,
            metavar="S",
            help="--once: stop waiting for files that keep changing after this long",
        )

    def handle(self, *args, **options):
        if options["all"]:
            return self._loop(None, options)
        if not options["path"]:
            raise CommandError("Give a PATH, or --all")
        folder = self._configure(options)
        if options["once"]:
            refused = self._once(folder, options["max_wait"])
            if refused:
                raise CommandError(f"{refused} files were refused (listed above)", returncode=1)
            return None
        return self._loop(folder, options)

    def _configure(self, options) -> WatchFolder:
        path = os.path.abspath(os.path.expanduser(options["path"]))
        if not os.path.isdir(path):
            raise CommandError(f"Folder not found: {path}")
        folder = WatchFolder.objects.filter(path=path).first() or WatchFolder(path=path)
        if options["project"]:
            folder.project, _ = Project.objects.get_or_create(name=options["project"])
        elif folder.pk is None:
            raise CommandError("A new watch folder needs --project NAME")
        rule = options["sample_rule"]
        if rule is not None or folder.pk is None:
            self._apply_rule(folder, rule or "subfolder")
        if options["create_samples"]:
            folder.create_missing_samples = True
        if options["settle"] is not None:
            folder.settle_s = options["settle"]
        if options["interval"] is not None:
            folder.poll_interval_s = options["interval"]
        if options["move_to_processed"]:
            folder.move_to_processed = True
        if options["user"]:
            folder.uploader = resolve_user(options["user"])
        try:
            folder.full_clean()
        except ValidationError as error:
            raise CommandError(
                "; ".join(f"{key}: {' '.join(messages)}" for key, messages in error.message_dict.items())
            ) from error
        folder.save()
        return folder

    def _apply_rule(self, folder: WatchFolder, rule: str) -> None:
        kind, _, argument = rule.partition(":")
        if kind == "subfolder":
            folder.sample_rule = WatchFolder.SampleRule.SUBFOLDER
        elif kind == "pattern":
            try:
                re.compile(argument)
            except re.error as error:
                raise CommandError(f"--sample-rule pattern: {error}") from error
            folder.sample_rule, folder.filename_pattern = WatchFolder.SampleRule.PATTERN, argument
        elif kind == "fixed":
            sample = Sample.objects.filter(lab_sample_id=argument).first()
            if sample is None:
                raise CommandError(f"No sample {argument!r}")
            folder.sample_rule, folder.fixed_sample = WatchFolder.SampleRule.FIXED, sample
        else:
            raise CommandError("--sample-rule: subfolder, pattern:REGEX or fixed:LAB_ID")

    def _once(self, folder: WatchFolder, max_wait: float) -> int:
        """Scan until nothing is settling (files still being written are waited for, up to max_wait)."""
        deadline = time.monotonic() + max_wait
        stored = duplicates = 0
        refused: list[tuple[str, str]] = []
        while True:
            report = watch.scan_folder(folder)
            stored += len(report.stored)
            duplicates += len(report.duplicates)
            refused += report.refused
            if report.settling == 0 or time.monotonic() > deadline:
                break
            time.sleep(max(0.2, min(folder.settle_s / 2, 5.0)))
        self.stdout.write(
            f"{folder.path}: {stored} stored, {duplicates} duplicates, {len(refused)} refused, "
            f"{report.settling} still settling"
        )
        for relpath, reason in refused:
            self.stdout.write(f"  refused {relpath}: {reason}")
        return len(refused)

    def _loop(self, folder: WatchFolder | None, options) -> None:
        self.stdout.write(f"Watching {folder.path if folder else 'every enabled watch folder'} (Ctrl-C stops)")
        try:
            while True:
                if folder is None:
                    for path, summary in watch_schedule.scan_due_folders().items():
                        self.stdout.write(f"{path}: {summary}")
                    time.sleep(watch_schedule.SCAN_TASK_INTERVAL_S)
                    continue
                folder.refresh_from_db()
                if folder.enabled:
                    report = watch.scan_folder(folder)
                    if report.stored or report.refused or report.duplicates:
                        self.stdout.write(report.summary())
                time.sleep(min(folder.poll_interval_s, max(1, folder.settle_s)))
        except KeyboardInterrupt:
            return
