"""Fixtures of the hostile-input tests: a member of `project` (from tests/web), a token client for
them (from tests/helpers.py), a small byte limit, a private upload temp folder, and a snapshot of
everything the product could have stored (rows and files)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.helpers import token_client
from tests.hostile.corpus import MAX_UPLOAD_BYTES
from tests.portal.sem_builders import files_under
from tests.web.conftest import make_user, member  # noqa: F401  (fixtures re-exported for tests/hostile)


@pytest.fixture(autouse=True)
def _hostile_limits(settings, tmp_path):
    """A small byte limit keeps the too-large file cheap; a private temp folder lets the tests
    prove that refused uploads leave no temporary file behind either."""
    settings.SEM_MAX_UPLOAD_BYTES = MAX_UPLOAD_BYTES
    # Two users per test: the production PBKDF2 hasher would dominate the run time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    upload_tmp = tmp_path / "upload-tmp"
    upload_tmp.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(upload_tmp)


@pytest.fixture
def member_api(member):
    return token_client(member)


@dataclass
class Snapshot:
    """Rows and files before an action; `changes()` says what appeared since."""

    root: Path
    counts: dict[str, int]
    files: set[Path]

    @classmethod
    def take(cls, root: Path) -> Snapshot:
        return cls(root, row_counts(), set(files_under(root)))

    def new_rows(self) -> dict[str, int]:
        now = row_counts()
        return {name: now[name] - self.counts[name] for name in now if now[name] != self.counts[name]}

    def new_files(self) -> set[Path]:
        return set(files_under(self.root)) - self.files


def row_counts() -> dict[str, int]:
    from portal.models import Label, Prediction, Sample, SEMImage

    return {model.__name__: model.objects.count() for model in (SEMImage, Sample, Label, Prediction)}


@pytest.fixture
def snapshot(tmp_path):
    """Everything under the test's tmp folder: MEDIA_ROOT, MODEL_DIR, the upload temp folder."""
    return lambda: Snapshot.take(tmp_path)


def multipart_body(fields: dict[str, str], filename: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body sending `filename` verbatim (RFC 5987 filename*), so path
    separators, NUL and control characters reach the server exactly as an attacker would send them.
    (Django's test client would apply os.path.basename to the name before sending it.)"""
    boundary = f"hostile-{uuid.uuid4().hex}"
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    disposition = f"form-data; name=\"file\"; filename*=UTF-8''{quote(filename, safe='')}"
    parts.append(
        f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
