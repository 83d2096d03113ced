"""manage.py import_folder PATH --sample LAB_ID [--project NAME --create-sample] [--user USERNAME] [--strict]"""

from __future__ import annotations

import sys
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from tqdm import tqdm

from portal.models import Membership, Project, Sample
from portal.services.folder_import import ImportProblem, format_summary, import_tree, plan_import


class Command(BaseCommand):
    help = (
        "Import a folder-per-category tree (NFFA-EUROPE layout: one folder per category, named like the "
        "category's folder name, name or slug) as curated labels. Resumable: files already stored are skipped."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", help="Root folder holding one sub-folder per category")
        parser.add_argument("--sample", required=True, metavar="LAB_ID", help="Lab sample ID the images belong to")
        parser.add_argument("--project", metavar="NAME", help="Project of the sample (needed with --create-sample)")
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
        try:
            plan_import(root)  # fail before touching the database when the tree is wrong
        except ImportProblem as problem:
            raise CommandError(str(problem)) from problem
        user = resolve_user(options["user"])
        sample = resolve_sample(
            options["sample"], project_name=options["project"], create=options["create_sample"], user=user
        )
        user = user or sample.owner
        with tqdm(unit="file", desc="Importing", file=sys.stderr, disable=options["no_progress"] or None) as bar:
            summary = import_tree(
                root, sample=sample, user=user, progress=bar.update, on_total=lambda total: setattr(bar, "total", total)
            )
        self.stdout.write(format_summary(summary, root))
        if options["strict"] and summary.rejected:
            raise CommandError(f"{len(summary.rejected)} files were refused (listed above)", returncode=1)
        return None


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
        project, _ = Project.objects.get_or_create(name=project_name)
        Membership.objects.get_or_create(project=project, user=owner, defaults={"role": Membership.Role.CURATOR})
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
