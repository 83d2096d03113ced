"""Fixtures of the web UI tests: one user per role, a second project the users cannot see, and
small but real image rows (original, thumbnail and derivative files on disk)."""

from __future__ import annotations

import hashlib
import io
import itertools

import pytest
from django.core.files.base import ContentFile
from PIL import Image

PASSWORD = "pw-web-tests-123"
_seeds = itertools.count(1)


@pytest.fixture
def categories(db):
    """The ten NFFA-EUROPE categories of the data migration, by name (put back first: a transactional
    test that ran before this one in the same session emptied the tables)."""
    from portal.models import Category
    from tests.worker_fixtures import ensure_nffa_categories

    ensure_nffa_categories()
    found = {category.name: category for category in Category.objects.all()}
    assert len(found) == 10, "the data migration provides the ten categories"
    return found


@pytest.fixture
def make_user(django_user_model):
    def make(username: str, *, project=None, role: str = "member", staff: bool = False):
        from portal.models import Membership

        person = django_user_model.objects.create_user(username, f"{username}@example.org", PASSWORD, is_staff=staff)
        if project is not None:
            Membership.objects.create(project=project, user=person, role=role)
        return person

    return make


@pytest.fixture
def member(make_user, project):
    return make_user("mia-member", project=project, role="member")


@pytest.fixture
def curator(user):
    """The shared `user` fixture (alice) is a curator of `project`."""
    return user


@pytest.fixture
def admin_user(make_user):
    return make_user("ada-admin", staff=True)


@pytest.fixture
def other_project(db):
    from portal.models import Project

    return Project.objects.create(name="Catalysis facility")


@pytest.fixture
def other_sample(other_project, make_user):
    from portal.models import Sample

    owner = make_user("otto-other", project=other_project, role="curator")
    return Sample.objects.create(project=other_project, lab_sample_id="OTHER-1", name="Foreign powder", owner=owner)


def png_bytes(seed: int, size=(64, 48)) -> bytes:
    """A small greyscale PNG whose pixels (and so sha256) differ per seed."""
    picture = Image.effect_noise(size, 40 + seed % 50).convert("L")
    picture.putpixel((0, 0), seed % 256)
    picture.putpixel((1, 0), (seed // 256) % 256)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def make_image(db):
    """An SEMImage row with real files, bypassing ingestion (fast; ingestion has its own tests)."""
    from portal.models import SEMImage, split_for_sha256

    def make(
        sample,
        *,
        uploaded_by=None,
        predicted=None,
        confidence=None,
        margin=None,
        model=None,
        curated=None,
        status=SEMImage.Status.PENDING,
        split=None,
        **fields,
    ) -> SEMImage:
        data = png_bytes(next(_seeds))
        sha256 = hashlib.sha256(data).hexdigest()
        image = SEMImage(
            sample=sample,
            sha256=sha256,
            original_filename=f"image-{sha256[:8]}.png",
            extension=".png",
            format="PNG",
            file_size=len(data),
            width=64,
            height=48,
            bit_depth=8,
            mode="L",
            uploaded_by=uploaded_by or sample.owner,
            split=split or split_for_sha256(sha256),
            status=status,
            predicted_category=predicted,
            predicted_confidence=confidence,
            predicted_margin=margin,
            predicted_by=model,
            **fields,
        )
        image.original.save(f"{sha256}.png", ContentFile(data), save=False)
        image.thumbnail.save(f"{sha256[:2]}/{sha256}.png", ContentFile(data), save=False)
        image.derivative.save(f"{sha256[:2]}/{sha256}.png", ContentFile(data), save=False)
        image.save()
        if curated is not None:
            from portal.services.curation.labels import set_label

            set_label(image, curated, source="import", user=None)
        return image

    return make


def evaluation(classes, counts) -> dict:
    """classifier.metrics.evaluate's output for a given confusion matrix (the real stored shape)."""
    from classifier.metrics import evaluate

    y_true, probabilities = [], []
    for actual, row in enumerate(counts):
        for predicted, count in enumerate(row):
            one_hot = [0.05 / (len(classes) - 1)] * len(classes)
            one_hot[predicted] = 0.95
            y_true += [classes[actual]] * count
            probabilities += [one_hot] * count
    return evaluate(y_true, probabilities, list(classes))


@pytest.fixture
def make_model(db):
    """A ModelVersion with a real evaluation (accuracy follows `counts`, the confusion matrix)."""
    from django.utils import timezone

    from portal.models import ModelVersion

    def make(
        version: int,
        *,
        status=ModelVersion.Status.CANDIDATE,
        classes=("Fibres", "Particles", "Powder"),
        counts=None,
        **fields,
    ) -> ModelVersion:
        counts = counts or [[8, 1, 1], [2, 7, 1], [0, 1, 9]][: len(classes)]
        defaults = {
            "artifact_path": f"/nonexistent/v{version}/model.pth",
            "artifact_sha256": "0" * 64,
            "arch": "resnet18",
            "classes": list(classes),
            "metrics": evaluation(classes, counts),
            "promoted_at": timezone.now() if status == ModelVersion.Status.PRODUCTION else None,
        }
        return ModelVersion.objects.create(version=version, status=status, **{**defaults, **fields})

    return make


@pytest.fixture
def predict(db):
    """Record a Prediction and keep SEMImage's denormalised predicted_* columns in step, as the
    classification service does."""
    from portal.models import Prediction, SEMImage

    def record(image, model, probabilities: dict[str, float], categories: dict):
        ranked = sorted(probabilities.items(), key=lambda item: item[1], reverse=True)
        top, second = ranked[0], (ranked[1] if len(ranked) > 1 else (None, 0.0))
        prediction = Prediction.objects.create(
            image=image,
            model_version=model,
            category=categories[top[0]],
            confidence=top[1],
            margin=top[1] - second[1],
            entropy=0.5,
            probabilities=probabilities,
        )
        SEMImage.objects.filter(pk=image.pk).update(
            predicted_category=categories[top[0]],
            predicted_confidence=top[1],
            predicted_margin=top[1] - second[1],
            predicted_by=model,
            status=SEMImage.Status.CLASSIFIED,
        )
        image.refresh_from_db()
        return prediction

    return record
