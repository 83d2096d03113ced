"""The Training page and the dashboard say when the test figures are optimistic: the test split could not be
by sample (portal.services.ingestion.splits.sample_independence)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from portal.models import Category, Sample, SEMImage
from tests.helpers import ingest_png

pytestmark = pytest.mark.django_db
PAGES = ("web:training", "web:dashboard")


def curated(sample, user, seed: int, side: str):
    image = ingest_png(sample, user, seed)
    SEMImage.objects.filter(pk=image.pk).update(split=side, curated_category=Category.objects.first())


def physical(project, user, lab_id: str) -> Sample:
    return Sample.objects.create(project=project, lab_sample_id=lab_id, name=lab_id, owner=user)


def warning(client, name: str) -> str | None:
    page = client.get(reverse(name)).content.decode()
    if 'id="split-warning"' not in page:
        return None
    return " ".join(page.split('id="split-warning"')[1].split("</p>")[0].split())


def test_one_collection_on_both_sides_is_flagged(client, member, sample, user, categories):
    for seed, side in enumerate(["train", "train", "test"]):
        curated(sample, user, seed, side)
    client.force_login(member)
    for name in PAGES:
        text = warning(client, name)
        assert text and "optimistic" in text and "1 of the 1 test images come from samples that also have" in text


def test_test_images_from_too_few_samples_are_flagged(client, member, project, user, categories):
    curated(physical(project, user, "TR-1"), user, 1, "train")
    curated(physical(project, user, "TE-1"), user, 2, "test")
    curated(physical(project, user, "TE-2"), user, 3, "test")
    client.force_login(member)
    assert "come from only 2 samples (fewer than 3)" in warning(client, "web:dashboard")


def test_a_split_by_sample_has_no_warning(client, member, project, user, categories):
    curated(physical(project, user, "TR-1"), user, 1, "train")
    for seed in (2, 3, 4):
        curated(physical(project, user, f"TE-{seed}"), user, seed, "test")
    client.force_login(member)
    assert [warning(client, name) for name in PAGES] == [None, None]
