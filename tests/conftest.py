"""Shared fixtures. Tests run against PostgreSQL and Redis when DATABASE_URL/CELERY_BROKER_URL are set
(as .ci/run and `make test` do), else against the embedded defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.conf import settings as django_settings

pytest_plugins = ["tests.worker_fixtures"]

# Most tests train tiny models on a handful of synthetic images to exercise the loop's mechanics: they
# waive the minimum images per category and the first model's majority-baseline margin, here and in
# the worker processes they start (which inherit the environment). tests/workers/test_quality_rules.py
# turns both back on to test them.
MECHANICS_ONLY = {
    "SEM_MIN_IMAGES_PER_CLASS": 1,
    "SEM_GATE_BASELINE_MARGIN": -1.0,
    # ... and the gate's minimum test split (tests/workers/test_bootstrap_gate.py tests it)
    "SEM_GATE_MIN_TEST_IMAGES": 0,
    "SEM_GATE_MIN_TEST_PER_CLASS": 0,
}
for _name, _value in MECHANICS_ONLY.items():
    os.environ.setdefault(_name, str(_value))
    setattr(django_settings, _name, type(_value)(os.environ[_name]))

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"
SEM_REAL_DIR = SHARED_DIR / "sem-real"
SEM_VENDOR_TIFF_DIR = SHARED_DIR / "sem-vendor-tiff"


@pytest.fixture(autouse=True)
def _media_in_tmp(settings, tmp_path):
    """Every test writes media and models under its own temporary folder."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MODEL_DIR = tmp_path / "models"


@pytest.fixture
def sem_real_dir() -> Path:
    if not SEM_REAL_DIR.is_dir():
        pytest.skip("../shared/sem-real is not present")
    return SEM_REAL_DIR


@pytest.fixture
def sem_vendor_tiff_dir() -> Path:
    if not SEM_VENDOR_TIFF_DIR.is_dir():
        pytest.skip("../shared/sem-vendor-tiff is not present")
    return SEM_VENDOR_TIFF_DIR


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("alice", "alice@example.org", "pw-alice-123")


@pytest.fixture
def project(db, user):
    from portal.models import Membership, Project

    project = Project.objects.create(name="Thin films group")
    Membership.objects.create(project=project, user=user, role=Membership.Role.CURATOR)
    return project


@pytest.fixture
def sample(project, user):
    from portal.models import Sample

    # A collection (split per near-duplicate group, like an import): the mechanics tests need both sides.
    return Sample.objects.create(project=project, lab_sample_id="S-0001", name="Test wafer", owner=user, split="")


@pytest.fixture
def keep_test_connection():
    """As Django's test client does: a request must not close the connection that holds the test's
    transaction (CONN_MAX_AGE handling runs on request_started/finished)."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)
