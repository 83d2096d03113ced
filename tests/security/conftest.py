"""Fixtures of the security tests: the web UI's users and real image rows (tests/web/conftest.py),
and a fast password hasher (each access-matrix case creates five users)."""

from __future__ import annotations

import pytest

from tests.web.conftest import (  # noqa: F401  (fixtures re-exported for tests/security)
    admin_user,
    categories,
    make_image,
    make_model,
    make_user,
    member,
    other_project,
    predict,
)


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
