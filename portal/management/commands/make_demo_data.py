"""manage.py make_demo_data [--per-class 24] [--out var/demo] [--import] ...

Writes a synthetic SEM-like data set for all 10 NFFA-EUROPE categories (classifier/synthetic.py)
and, with --import, imports it as curated labels into a "Demo" project through the same code path
as `import_folder`. Deterministic: the same options write the same bytes, so re-running is cheap
(the import skips images it already has).
"""

from __future__ import annotations

import sys
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from tqdm import tqdm

from classifier.synthetic import CATEGORIES, write_dataset
from portal.models import Membership, Project, Sample
from portal.services.ingestion.folder_import import format_summary, import_tree

DEMO_PROJECT = "Demo"
DEMO_SAMPLE = "DEMO-001"
DEMO_USERNAME = "demo-importer"


class Command(BaseCommand):
    help = "Generate a synthetic SEM demo data set (all 10 categories) and optionally import it as curated labels."

    def add_arguments(self, parser):
        parser.add_argument("--per-class", type=int, default=24, help="Images per category (default 24)")
        parser.add_argument("--out", default=None, help="Output folder (default: var/demo under SEM_VAR_DIR)")
        parser.add_argument("--size", default="512x384", help="WIDTHxHEIGHT of the images (default 512x384)")
        parser.add_argument("--seed", type=int, default=0, help="Seed of the data set (default 0)")
        parser.add_argument(
            "--import",
            dest="do_import",
            action="store_true",
            help="Import the images as curated labels into the Demo project",
        )
        parser.add_argument("--project", default=DEMO_PROJECT, help=f"Project for --import (default {DEMO_PROJECT!r})")
        parser.add_argument("--sample", default=DEMO_SAMPLE, help=f"Lab sample ID for --import (default {DEMO_SAMPLE})")
        parser.add_argument(
            "--user",
            metavar="USERNAME",
            help="Uploader for --import (default: the first superuser, else a 'demo-importer' user)",
        )
        parser.add_argument("--no-progress", action="store_true", help="No progress bars")

    def handle(self, *args, **options):
        per_class = options["per_class"]
        if per_class < 1:
            raise CommandError("--per-class must be at least 1")
        size = parse_size(options["size"])
        out = Path(options["out"]) if options["out"] else Path(settings.VAR_DIR) / "demo"
        written = write_demo_images(out, per_class, size, options["seed"], quiet=options["no_progress"])
        self.stdout.write(f"Wrote {written} synthetic images ({per_class} per category, {size[0]}x{size[1]}) to {out}")
        if options["do_import"]:
            sample, user = demo_sample(options["project"], options["sample"], options["user"])
            with tqdm(unit="file", desc="Importing", file=sys.stderr, disable=options["no_progress"] or None) as bar:
                summary = import_tree(
                    out,
                    sample=sample,
                    user=user,
                    progress=bar.update,
                    on_total=lambda total: setattr(bar, "total", total),
                )
            self.stdout.write(format_summary(summary, out))
            if summary.rejected:
                raise CommandError(f"{len(summary.rejected)} demo images were rejected (see above)")


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError as error:
        raise CommandError(f"--size must look like 512x384, not {text!r}") from error
    if width < 64 or height < 64 or width * height > 16_000_000:
        raise CommandError("--size must be at least 64x64 and at most 16 megapixels")
    return width, height


def write_demo_images(out: Path, per_class: int, size: tuple[int, int], seed: int, *, quiet: bool) -> int:
    with tqdm(
        total=per_class * len(CATEGORIES), unit="img", desc="Generating", file=sys.stderr, disable=quiet or None
    ) as bar:
        return len(write_dataset(out, per_class, size=size, seed=seed, progress=bar.update))


def demo_sample(project_name: str, lab_sample_id: str, username: str | None) -> tuple[Sample, object]:
    User = get_user_model()
    if username:
        user = User.objects.filter(**{User.USERNAME_FIELD: username}).first()
        if user is None:
            raise CommandError(f"No user {username!r}")
    else:
        user = User.objects.filter(is_superuser=True, is_active=True).order_by("pk").first()
        if user is None:
            user, created = User.objects.get_or_create(**{User.USERNAME_FIELD: DEMO_USERNAME})
            if created:
                user.set_unusable_password()
                user.save()
    with transaction.atomic():
        project, _ = Project.objects.get_or_create(
            name=project_name, defaults={"description": "Synthetic SEM-like images generated by make_demo_data"}
        )
        Membership.objects.get_or_create(project=project, user=user, defaults={"role": Membership.Role.CURATOR})
        sample = Sample.objects.filter(lab_sample_id=lab_sample_id).first()
        if sample is None:
            sample = Sample.objects.create(
                project=project,
                lab_sample_id=lab_sample_id,
                name="Synthetic demo images",
                material="synthetic",
                description="Generated by manage.py make_demo_data",
                owner=user,
                split="",
            )  # a collection: split per near-duplicate group
        elif sample.project_id != project.pk:
            raise CommandError(f"Sample {lab_sample_id} exists in project {sample.project}, not {project_name}")
    return sample, user
