"""Near-duplicates at ingestion (issue 13): re-saved copies are found, groups and samples never straddle
the train/test split, and the full reassignment agrees."""

from __future__ import annotations

import io
from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command
from PIL import Image, ImageEnhance

from classifier.perceptual import RADIUS, distance, window_hashes
from classifier.synthetic import make_image
from portal.models import PerceptualHash, Sample, SEMImage
from portal.services.ingestion import near_duplicates, splits
from portal.services.ingestion.ingest import ingest_file
from tests.portal.sem_builders import pillow_bytes, tiff_bytes

pytestmark = pytest.mark.django_db

SIZE = (512, 384)


def store(sample, user, data: bytes, name: str) -> SEMImage:
    return ingest_file(io.BytesIO(data), filename=name, sample=sample, uploaded_by=user).image


def resaved_copies(image: Image.Image) -> dict[str, tuple[bytes, str]]:
    grey = image.convert("L")
    return {
        "tiff": (tiff_bytes(np.asarray(grey)), "copy.tif"),
        "16-bit tiff": (tiff_bytes(np.asarray(grey, dtype=np.uint16) * 257), "copy16.tif"),
        "jpeg": (pillow_bytes(grey, "JPEG", quality=90), "copy.jpg"),
        "brighter 10 %": (pillow_bytes(ImageEnhance.Brightness(grey).enhance(1.1), "PNG"), "bright.png"),
        "darker 10 %": (pillow_bytes(ImageEnhance.Brightness(grey).enhance(0.9), "PNG"), "dark.png"),
    }


def test_resaved_copies_are_near_duplicates_and_other_images_are_not(sample, user):
    original = make_image("Powder", 3, size=SIZE)
    first = store(sample, user, pillow_bytes(original, "PNG"), "original.png")
    assert first.perceptual_hashes.count() == 11 and first.near_duplicate_of_id is None
    for kind, (data, name) in resaved_copies(original).items():
        copy = store(sample, user, data, name)
        assert copy.near_duplicate_of_id == first.pk, kind
        assert copy.duplicate_group == first.pk, kind
        assert copy.split == first.split, kind
    for index, category in enumerate(["Powder", "Fibres", "Nanowires", "Biological"]):
        other = store(sample, user, pillow_bytes(make_image(category, 40 + index, size=SIZE), "PNG"), f"o{index}.png")
        assert other.near_duplicate_of_id is None, category
    first.refresh_from_db()
    assert first.duplicate_group == first.pk
    assert len(near_duplicates.group_members(first)) == len(resaved_copies(original))
    assert splits.straddling_groups() == []


def test_tiles_of_one_micrograph_never_straddle_in_a_collection(sample, user, settings):
    """Overlapping tiles (90 % of each side, from the four corners) of one micrograph, in a collection
    sample: one group, one side, whatever their own sha256 would have said."""
    settings.SEM_TEST_SPLIT_PERCENT = 50
    micrograph = make_image("Powder", 7, size=(800, 600), databar=False)
    w, h = micrograph.size
    tw, th = int(w * 0.9), int(h * 0.9)
    tiles = [micrograph.crop((x, y, x + tw, y + th)) for x in (0, w - tw) for y in (0, h - th)]
    images = [store(sample, user, pillow_bytes(micrograph, "PNG"), "whole.png")]
    images += [store(sample, user, pillow_bytes(tile, "PNG"), f"tile{i}.png") for i, tile in enumerate(tiles)]
    assert all(image.near_duplicate_of_id for image in images[1:])
    for image in images:
        image.refresh_from_db()
    assert len({image.duplicate_group for image in images}) == 1
    assert len({image.split for image in images}) == 1
    assert splits.straddling_groups() == []


def test_a_physical_sample_is_wholly_on_its_side(project, user, settings):
    """A tilt series (the same field, slightly sheared: not all of them near-duplicates) in a physical
    sample: every image on the sample's side."""
    settings.SEM_TEST_SPLIT_PERCENT = 50
    series = Sample.objects.create(project=project, lab_sample_id="TILT-7", name="tilt", owner=user)
    assert series.split in ("train", "test")
    base = make_image("Nanowires", 5, size=SIZE)
    sides = set()
    for step in range(6):
        tilted = base.transform(base.size, Image.Transform.AFFINE, (1, 0.04 * step, -8 * step, 0, 1, 0))
        sides.add(store(series, user, pillow_bytes(tilted, "PNG"), f"tilt{step}.png").split)
    assert sides == {series.split}


def test_a_group_that_joins_both_sides_moves_to_train(sample, user, project):
    """A copy in another sample on the other side joins the group; the group stays whole (in train)."""
    test_sample = Sample.objects.create(project=project, lab_sample_id="T", name="t", owner=user, split="test")
    train_sample = Sample.objects.create(project=project, lab_sample_id="R", name="r", owner=user, split="train")
    original = make_image("Fibres", 2, size=SIZE)
    a = store(test_sample, user, pillow_bytes(original, "PNG"), "a.png")
    assert a.split == "test"
    b = store(train_sample, user, pillow_bytes(ImageEnhance.Brightness(original).enhance(1.05), "PNG"), "b.png")
    # b follows its group (test), not its sample: the group never straddles.
    assert b.split == "test" and b.duplicate_group == a.pk
    # Rebuild: a physical train sample and a physical test sample joined by a group -> train.
    counts = splits.rebuild(SEMImage, Sample)
    a.refresh_from_db()
    b.refresh_from_db()
    assert a.split == b.split == "train" and counts["to_train"] == 2
    assert splits.straddling_groups() == []


def test_lookup_finds_what_a_scan_finds(sample, user):
    """The banded index returns exactly the stored hashes within the radius (checked against a scan)."""
    images = [
        store(sample, user, pillow_bytes(make_image(c, s, size=(320, 240)), "PNG"), f"{c}{s}.png")
        for c in ("Powder", "Films_Coated_Surface")
        for s in range(3)
    ]
    probe = window_hashes(make_image("Powder", 1, size=(320, 240)).convert("L").resize((341, 256)))
    found = {m.image_id for m in near_duplicates.find_matches(probe)}
    scan = set()
    for row in PerceptualHash.objects.all():
        stored = row.value % (1 << 64)
        if row.region == 0 and any(distance(v, stored) <= RADIUS for v in probe.values()):
            scan.add(row.image_id)
        if distance(probe[0], stored) <= RADIUS:
            scan.add(row.image_id)
    assert found == scan
    assert images[1].pk in found


def test_import_folder_reports_near_duplicates(tmp_path, sample):
    (tmp_path / "Powder").mkdir()
    picture = make_image("Powder", 11, size=SIZE)
    picture.save(tmp_path / "Powder" / "a.png")
    picture.convert("L").save(tmp_path / "Powder" / "b.tif")
    make_image("Powder", 12, size=SIZE).save(tmp_path / "Powder" / "c.png")
    out = StringIO()
    call_command("import_folder", str(tmp_path), "--sample", sample.lab_sample_id, "--no-progress", stdout=out)
    text = out.getvalue()
    first = SEMImage.objects.get(original_filename="a.png")
    assert "Near-duplicates of images stored before them: 1 (in 1 near-duplicate groups" in text
    assert f"Powder/b.tif: near-duplicate of image {first.pk}" in text
