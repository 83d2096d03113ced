"""manage.py import_folder PATH (--sample LAB_ID [--project NAME --create-sample] | --project NAME [--manifest FILE])
[--user USERNAME] [--strict]

Which sample an image belongs to decides its side of the train/test split, so the series matter:
--sample puts the whole tree in one sample (a collection, split per near-duplicate group: images of
one series land on both sides); --manifest, or a `category/SAMPLE/file` tree without either option,
makes one sample per series.
"""

from __future__ import annotations

import sys
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from tqdm import tqdm

from portal.models import Membership, Project, Sample
from portal.services.ingestion.folder_import import (
    ImportProblem,
    format_summary,
    import_tree,
    plan_files,
    samples_for_series,
    series_from_folders,
    series_from_manifest,
)


class Command(BaseCommand):
    help = (
        "Import a folder-per-category tree (NFFA-EUROPE layout: one folder per category, named like the "
        "category's folder name, name or slug) as curated labels. Each series becomes a sample (--manifest, or "
        "a category/SAMPLE/file tree), so the train/test split keeps a series on one side; --sample puts the whole "
        "tree in one sample. Resumable: files already stored are skipped."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", help="Root folder holding one sub-folder per category")
        series = parser.add_mutually_exclusive_group()
        series.add_argument(
            "--sample", metavar="LAB_ID", help="One lab sample ID for every image of the tree (subfolders ignored)"
        )
        series.add_argument(
            "--manifest",
            metavar="FILE",
            help="CSV naming each file's series: columns file,sample (file relative to PATH), or the sem-real "
            "manifests' file,repo,path. One sample per series is created in --project",
        )
        parser.add_argument(
            "--project",
            metavar="NAME",
            help="Project of the sample(s): needed with --create-sample, --manifest and the category/SAMPLE/file "
            "layout (used when neither --sample nor --manifest is given); created when missing",
        )
        parser.add_argument(
            "--create-sample", action="store_true", help="Create the sample (and the project) when it does not exist"
        )
        parser.add_argument(
            "--user", metavar="USERNAME", help="Uploader recorded on the images (default: the sample's owner)"
        )
        parser.add_argument("--no-progress", action="store_true", help="No progress bar")
        parser.add_argument(
            "--strict",
            action="store_true",
            help="Exit with status 1 when any file was refused (for scripts); the others are stored either way",
        )

    def handle(self, *args, **options):
        root = Path(options["path"]).expanduser()
        user = resolve_user(options["user"])
        try:
            # Fail before touching the database when the tree (or its series) is wrong.
            files = [path for path, _category in plan_files(root)]
            targets = self.resolve_targets(root, files, options, user)
        except ImportProblem as problem:
            raise CommandError(str(problem)) from problem
        with tqdm(unit="file", desc="Importing", file=sys.stderr, disable=options["no_progress"] or None) as bar:
            summary = import_tree(
                root, **targets, progress=bar.update, on_total=lambda total: setattr(bar, "total", total)
            )
        self.stdout.write(format_summary(summary, root))
        if options["strict"] and summary.rejected:
            raise CommandError(f"{len(summary.rejected)} files were refused (listed above)", returncode=1)
        return None

    def resolve_targets(self, root: Path, files: list[Path], options, user) -> dict:
        """import_tree's sample(s) and user: one sample (--sample), or one per series."""
        if options["sample"]:
            sample = resolve_sample(
                options["sample"], project_name=options["project"], create=options["create_sample"], user=user
            )
            return {"sample": sample, "user": user or sample.owner}
        if not options["project"]:
            raise CommandError("Pass --project NAME (the project of the series' samples), or --sample LAB_ID")
        if options["manifest"]:
            series = series_from_manifest(root, files, Path(options["manifest"]).expanduser())
        else:
            series = series_from_folders(root, files)
        owner = user or default_owner()
        with transaction.atomic():
            project = ensure_project(options["project"], owner)
            by_series = samples_for_series(set(series.values()), project=project, owner=owner)
        return {"samples": {path: by_series[name] for path, name in series.items()}, "user": owner}


def ensure_project(name: str, owner) -> Project:
    project, _ = Project.objects.get_or_create(name=name)
    Membership.objects.get_or_create(project=project, user=owner, defaults={"role": Membership.Role.CURATOR})
    return project


def resolve_user(username: str | None):
    if not username:
        return None
    User = get_user_model()
    try:
        return User.objects.get(**{User.USERNAME_FIELD: username})
    except User.DoesNotExist as error:
        raise CommandError(f"No user {username!r}") from error


def resolve_sample(lab_sample_id: str, *, project_name: str | None, create: bool, user) -> Sample:
    sample = Sample.objects.filter(lab_sample_id=lab_sample_id).select_related("project", "owner").first()
    if sample:
        if project_name and sample.project.name != project_name:
            raise CommandError(
                f"Sample {lab_sample_id} belongs to project {sample.project.name!r}, not {project_name!r}"
            )
        return sample
    if not create:
        raise CommandError(f"No sample {lab_sample_id!r}; pass --create-sample --project NAME to create it")
    if not project_name:
        raise CommandError("--create-sample needs --project NAME")
    owner = user or default_owner()
    with transaction.atomic():
        project = ensure_project(project_name, owner)
        # A folder of a dataset holds many samples: a collection, split per near-duplicate group.
        return Sample.objects.create(
            project=project, lab_sample_id=lab_sample_id, name=lab_sample_id, owner=owner, split=""
        )


def default_owner():
    """A new sample needs an owner: the first superuser when no --user is given."""
    User = get_user_model()
    owner = User.objects.filter(is_superuser=True, is_active=True).order_by("pk").first()
    if owner is None:
        raise CommandError("No --user given and no superuser exists to own the new sample")
    return owner
