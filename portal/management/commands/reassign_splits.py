"""manage.py reassign_splits [--no-reevaluate]: recompute every image's side of the split from its sample and
near-duplicate group (portal.services.ingestion.splits.rebuild), then evaluate production again on the new test split."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from portal.models import Sample, SEMImage
from portal.services.ingestion import splits
from portal.services.learning import promotion


class Command(BaseCommand):
    help = (
        "Reassign train/test sides (whole samples and near-duplicate groups on one side) and evaluate the "
        "production model again on the new test split, so the dashboard and the gate stay comparable."
    )

    def add_arguments(self, parser):
        parser.add_argument("--no-reevaluate", action="store_true", help="Only reassign the sides")

    def handle(self, *args, **options):
        counts = splits.rebuild(SEMImage, Sample)
        self.stdout.write(
            f"{counts['images']} images: {counts['to_train']} moved to train, "
            f"{counts['to_test']} moved to test; straddling groups: {len(splits.straddling_groups())}"
        )
        if not options["no_reevaluate"]:
            model = promotion.reevaluate_production()
            if model is None:
                self.stdout.write("No production model to evaluate again")
            else:
                self.stdout.write(
                    f"v{model.version} evaluated again on {model.test_image_count} test images: "
                    f"macro-F1 {model.macro_f1 or 0:.3f}, accuracy {model.accuracy or 0:.3f}"
                )
