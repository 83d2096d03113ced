"""Existing images: perceptual hashes, near-duplicate groups, and the group-aware split.

Reads each image's derivative from MEDIA_ROOT (an image whose derivative is missing gets no hash and stays
on its own), finds its near-duplicates among the images before it, then reassigns every image's side
(portal.services.ingestion.splits.rebuild). Existing samples stay collections (split per near-duplicate group):
set a physical sample's side in the admin and run `manage.py reassign_splits`.

Production's stored metrics then describe the old test split: `manage.py reassign_splits` (or the next
gate, or the Training page) evaluates it again on the new one (portal.services.learning.promotion.
reevaluate_production); until then the dashboard says its numbers are from the previous split.
"""
import logging
import os

from django.conf import settings
from django.db import migrations

logger = logging.getLogger(__name__)


def forwards(apps, schema_editor):
    from PIL import Image

    from classifier.perceptual import window_hashes
    from portal.services.ingestion import near_duplicates, splits

    SEMImage = apps.get_model("portal", "SEMImage")
    Sample = apps.get_model("portal", "Sample")
    PerceptualHash = apps.get_model("portal", "PerceptualHash")
    Sample.objects.filter(split="auto").update(split="")  # existing samples: collections
    if not SEMImage.objects.exists():
        return
    hashed = 0
    for image in SEMImage.objects.order_by("pk").only("pk", "derivative", "duplicate_group").iterator(chunk_size=500):
        path = os.path.join(settings.MEDIA_ROOT, image.derivative.name) if image.derivative else ""
        try:
            with Image.open(path) as derivative:
                hashes = window_hashes(derivative)
        except (OSError, ValueError):
            continue
        matches = near_duplicates.find_matches(hashes)
        PerceptualHash.objects.bulk_create(near_duplicates.hash_rows(PerceptualHash, image.pk, hashes))
        near_duplicates.join_groups(SEMImage, image, matches)
        hashed += 1
    counts = splits.rebuild(SEMImage, Sample)
    ModelVersion = apps.get_model("portal", "ModelVersion")
    for model in ModelVersion.objects.filter(status="production"):
        model.metrics = {**(model.metrics or {}), "split_changed": True}
        model.save(update_fields=["metrics"])
    logger.warning("near-duplicates: %d images hashed; split reassigned: %s", hashed, counts)


class Migration(migrations.Migration):
    dependencies = [("portal", "0005_near_duplicates")]
    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
