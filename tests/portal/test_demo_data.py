"""make_demo_data and the synthetic generator behind it."""

from __future__ import annotations

import time
from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command

from classifier.synthetic import CATEGORIES, make_image, write_dataset
from portal.models import Category, Label, Sample, SEMImage
from tests.portal.sem_builders import files_under


def test_categories_match_the_nffa_folder_names_in_the_database(db):
    assert set(CATEGORIES) == set(Category.objects.values_list("folder_name", flat=True))


def test_images_are_deterministic_and_differ_between_seeds_and_categories():
    first = np.asarray(make_image("Powder", 5))
    assert np.array_equal(first, np.asarray(make_image("Powder", 5)))
    assert not np.array_equal(first, np.asarray(make_image("Powder", 6)))
    assert not np.array_equal(first, np.asarray(make_image("Tips", 5)))
    image = make_image("Nanowires", 1, size=(300, 200))
    assert image.mode == "L" and image.size == (300, 200)


def test_mean_brightness_does_not_give_the_category_away():
    """Brightness is randomised per image: per-category mean grey ranges must overlap a lot."""
    means = {c: [np.asarray(make_image(c, s)).mean() for s in range(12)] for c in CATEGORIES}
    lows = [min(values) for values in means.values()]
    highs = [max(values) for values in means.values()]
    assert max(lows) < min(highs)  # one grey level is inside every category's range


def test_generation_is_fast_enough_for_the_quick_start():
    start = time.perf_counter()
    for index, category in enumerate(CATEGORIES * 3):
        make_image(category, index, size=(512, 384))
    per_image = (time.perf_counter() - start) / (3 * len(CATEGORIES))
    assert per_image < 0.1  # ~20 ms on a laptop core; generous for loaded CI machines


def test_unknown_category_is_an_error():
    with pytest.raises(ValueError, match="unknown category"):
        make_image("Unicorns", 0)


def test_write_dataset_layout(tmp_path):
    paths = write_dataset(tmp_path, per_class=2, size=(128, 96), seed=3)
    assert len(paths) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(CATEGORIES)
    assert all(len(list((tmp_path / c).iterdir())) == 2 for c in CATEGORIES)


@pytest.mark.django_db
def test_make_demo_data_writes_only(tmp_path):
    out = StringIO()
    call_command(
        "make_demo_data",
        "--per-class",
        "2",
        "--out",
        str(tmp_path / "demo"),
        "--size",
        "160x120",
        "--no-progress",
        stdout=out,
    )
    assert "Wrote 20 synthetic images" in out.getvalue()
    assert len(files_under(tmp_path / "demo")) == 20
    assert SEMImage.objects.count() == 0


@pytest.mark.django_db
def test_make_demo_data_import_is_curated_and_rerunnable(tmp_path, django_user_model):
    admin = django_user_model.objects.create_superuser("admin", "admin@example.org", "pw")
    args = [
        "make_demo_data",
        "--per-class",
        "3",
        "--out",
        str(tmp_path / "demo"),  # quick-start size 512x384
        "--import",
        "--no-progress",
    ]
    out = StringIO()
    call_command(*args, stdout=out)
    assert "Stored: 30" in out.getvalue()
    sample = Sample.objects.get(lab_sample_id="DEMO-001")
    assert sample.project.name == "Demo" and sample.owner == admin
    assert SEMImage.objects.filter(sample=sample).count() == 30
    per_category = {
        c.folder_name: Label.objects.filter(category=c, source=Label.Source.IMPORT).count()
        for c in Category.objects.all()
    }
    assert per_category == {c: 3 for c in CATEGORIES}
    assert SEMImage.objects.filter(databar_rows__gt=0).count() >= 27  # the synthetic data bar is found

    again = StringIO()
    call_command(*args, stdout=again)
    assert "Stored: 0" in again.getvalue() and "duplicate (already stored): 30" in again.getvalue()


@pytest.mark.django_db
def test_make_demo_data_without_any_user_creates_a_demo_importer(tmp_path):
    call_command(
        "make_demo_data",
        "--per-class",
        "1",
        "--out",
        str(tmp_path / "d"),
        "--size",
        "128x96",
        "--import",
        "--no-progress",
        stdout=StringIO(),
    )
    sample = Sample.objects.get(lab_sample_id="DEMO-001")
    assert sample.owner.username == "demo-importer" and not sample.owner.has_usable_password()
    assert SEMImage.objects.count() == 10
