"""Database constraints of the data model (PostgreSQL enforces them; the tests make sure they exist)."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from portal.models import Category, Label, Membership, ModelVersion, Project, Sample, SEMImage, split_for_sha256
from portal.permissions import visible_images, visible_samples

pytestmark = pytest.mark.django_db


def make_image(sample, user, sha="a" * 64, **extra) -> SEMImage:
    fields = dict(
        sample=sample,
        sha256=sha,
        original_filename="x.tif",
        extension=".tif",
        format="TIFF",
        file_size=10,
        width=4,
        height=4,
        bit_depth=8,
        mode="L",
        uploaded_by=user,
        split=split_for_sha256(sha),
        original="originals/x.tif",
        thumbnail="t.jpg",
        derivative="d.png",
    )
    fields.update(extra)
    return SEMImage.objects.create(**fields)


def violates(callable_):
    with pytest.raises(IntegrityError):
        with transaction.atomic():
            callable_()


def test_sha256_is_unique(sample, user):
    make_image(sample, user)
    violates(lambda: make_image(sample, user))


def test_idempotency_key_unique_when_set_many_nulls(sample, user):
    make_image(sample, user, sha="1" * 64, idempotency_key="k")
    make_image(sample, user, sha="2" * 64)
    make_image(sample, user, sha="3" * 64)
    violates(lambda: make_image(sample, user, sha="4" * 64, idempotency_key="k"))


def test_one_current_label_per_image(sample, user):
    image = make_image(sample, user)
    powder, tips = Category.objects.get(folder_name="Powder"), Category.objects.get(folder_name="Tips")
    Label.objects.create(image=image, category=powder, source=Label.Source.REVIEW)
    Label.objects.create(image=image, category=tips, source=Label.Source.REVIEW, is_current=False)
    violates(lambda: Label.objects.create(image=image, category=tips, source=Label.Source.REVIEW))


def test_lims_id_unique_when_set_and_blank_means_null(project, user):
    Sample.objects.create(project=project, lab_sample_id="A", name="a", owner=user, lims_id="LIMS-1")
    Sample.objects.create(project=project, lab_sample_id="B", name="b", owner=user, lims_id="")
    Sample.objects.create(project=project, lab_sample_id="C", name="c", owner=user)
    assert Sample.objects.filter(lims_id__isnull=True).count() == 2
    violates(lambda: Sample.objects.create(project=project, lab_sample_id="D", name="d", owner=user, lims_id="LIMS-1"))


def test_lab_sample_id_unique(project, user):
    Sample.objects.create(project=project, lab_sample_id="A", name="a", owner=user)
    violates(lambda: Sample.objects.create(project=project, lab_sample_id="A", name="again", owner=user))


def test_one_production_model(db):
    def version(number, status):
        return ModelVersion.objects.create(
            version=number, status=status, artifact_path=f"m{number}", artifact_sha256="0" * 64, arch="resnet34"
        )

    version(1, ModelVersion.Status.PRODUCTION)
    version(2, ModelVersion.Status.CANDIDATE)
    version(3, ModelVersion.Status.RETIRED)
    violates(lambda: version(4, ModelVersion.Status.PRODUCTION))


def test_split_is_deterministic_and_near_the_configured_share(settings):
    import hashlib

    settings.SEM_TEST_SPLIT_PERCENT = 15
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(4000)]
    splits = [split_for_sha256(sha) for sha in shas]
    assert splits == [split_for_sha256(sha) for sha in shas]
    assert 0.12 < splits.count(SEMImage.Split.TEST) / len(splits) < 0.18


def test_samples_and_images_are_scoped_to_project_members(project, sample, user, django_user_model):
    other_project = Project.objects.create(name="Other group")
    bob = django_user_model.objects.create_user("bob", password="pw-bob-123")
    Membership.objects.create(project=other_project, user=bob)
    bobs_sample = Sample.objects.create(project=other_project, lab_sample_id="B-1", name="b", owner=bob)
    make_image(sample, user, sha="1" * 64)
    make_image(bobs_sample, bob, sha="2" * 64)
    staff = django_user_model.objects.create_user("carol", password="pw", is_staff=True)
    outsider = django_user_model.objects.create_user("dave", password="pw")

    assert list(visible_samples(user)) == [sample]
    assert list(visible_samples(bob)) == [bobs_sample]
    assert set(visible_samples(staff)) == {sample, bobs_sample}
    assert list(visible_samples(outsider)) == []
    assert [i.sha256 for i in visible_images(user)] == ["1" * 64]
    assert visible_images(outsider).count() == 0
