"""REST API fixtures: users of every role, tokens, real ingested images, and the API client."""

from __future__ import annotations

import numpy as np
import pytest
from rest_framework.test import APIClient

from portal.models import Category, Membership, ModelVersion, Project, Sample
from tests.helpers import ingest_png, png_bytes, token_client  # noqa: F401  (tests/api imports them from here)


@pytest.fixture(autouse=True)
def _no_throttle_state(settings):
    """Throttle counters live in the cache: start every test with a clean budget."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def curator(user):
    return user  # the shared `user` fixture is a curator of `project`


@pytest.fixture
def member(django_user_model, project):
    member = django_user_model.objects.create_user("mona", "mona@example.org", "pw-mona-123")
    Membership.objects.create(project=project, user=member, role=Membership.Role.MEMBER)
    return member


@pytest.fixture
def admin_user(django_user_model):
    return django_user_model.objects.create_user("root", "root@example.org", "pw-root-123", is_staff=True)


@pytest.fixture
def other_project(db):
    return Project.objects.create(name="Catalysis group")


@pytest.fixture
def outsider(django_user_model, other_project):
    """A curator of another project: must not see anything of `project`."""
    outsider = django_user_model.objects.create_user("oscar", "oscar@example.org", "pw-oscar-123")
    Membership.objects.create(project=other_project, user=outsider, role=Membership.Role.CURATOR)
    return outsider


@pytest.fixture
def other_sample(other_project, outsider):
    return Sample.objects.create(project=other_project, lab_sample_id="C-0001", name="Pt on alumina", owner=outsider)


@pytest.fixture
def curator_api(curator):
    return token_client(curator)


@pytest.fixture
def member_api(member):
    return token_client(member)


@pytest.fixture
def admin_api(admin_user):
    return token_client(admin_user)


@pytest.fixture
def outsider_api(outsider):
    return token_client(outsider)


@pytest.fixture
def anon_api():
    return APIClient()


@pytest.fixture
def categories(db):
    return {category.slug: category for category in Category.objects.all()}


@pytest.fixture
def image(sample, user):
    return ingest_png(sample, user, seed=1)


@pytest.fixture
def other_image(other_sample, outsider):
    return ingest_png(other_sample, outsider, seed=2)


def make_model(version: int, *, status=ModelVersion.Status.CANDIDATE, artifact_path="", classes=None, metrics=None):
    return ModelVersion.objects.create(
        version=version,
        status=status,
        artifact_path=artifact_path,
        artifact_sha256="0" * 64,
        arch="resnet18",
        classes=classes or ["Fibres", "Particles"],
        metrics=metrics or {},
    )


def classify(image, model, probabilities: dict[str, float]):
    """Store the model's output for `image` through the classification service (as a worker does)."""
    from classifier.engine import prediction_from_probabilities
    from portal.services.learning.classification_results import save_results

    classes = list(model.classes)
    vector = np.array([probabilities.get(name, 0.0) for name in classes])
    save_results(model, classes, {image.pk: prediction_from_probabilities(vector, classes)})
    image.refresh_from_db()
    return image
