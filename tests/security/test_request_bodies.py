"""Request bodies are capped before they are read (issue 11, item 4).

The class: a body that the server reads (and spools to disk) before deciding it should not have. Before:
a 40 MiB multipart body to /login/ with a made-up CSRF cookie was spooled to a temporary file before the
CSRF check refused it; an API upload was spooled in full before the size limit applied; web uploads were
not throttled. Now the declared Content-Length decides before anything reads the body (Django's
middleware and, under gunicorn, the WSGI layer), anonymous requests never write files, and web uploads
share the API's upload throttle.
"""

from __future__ import annotations

import socket
import time
import uuid

import pytest
from django.core.files import uploadedfile
from django.test import Client
from django.urls import reverse
from rest_framework.settings import api_settings

from portal.models import SEMImage
from portal.services.delivery.tokens import create_token
from tests.hostile.corpus import valid_png

pytestmark = pytest.mark.django_db

MiB = 1024 * 1024


@pytest.fixture
def spooled(monkeypatch):
    """Every temporary file Django's upload handlers create (they delete them again after the request,
    so the folder alone cannot tell)."""
    created = []
    original = uploadedfile.TemporaryUploadedFile.__init__

    def recording(self, *args, **kwargs):
        original(self, *args, **kwargs)
        created.append(self.file.name)

    monkeypatch.setattr(uploadedfile.TemporaryUploadedFile, "__init__", recording)
    return created


@pytest.fixture(autouse=True)
def _own_throttle_cache(settings):
    """Throttle counts in this test's own memory, not the shared cache folder."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": f"bodies-{uuid.uuid4().hex}",
        }
    }


def multipart(fields: dict[str, str], file_bytes: bytes, filename: str = "big.tif") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + file_bytes
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize(
    "path", ["/login/", "/admin/login/", "/upload/file/", "/api/images/", "/api/nowhere/", "/browse/"]
)
def test_anonymous_bodies_are_refused_unread_and_never_spooled(path, spooled):
    client = Client(enforce_csrf_checks=True)
    client.cookies["csrftoken"] = "x" * 32  # made up: the CSRF check would refuse it, after reading the body
    body, content_type = multipart(
        {"csrfmiddlewaretoken": "y" * 32, "username": "a", "password": "b"}, b"\0" * (8 * MiB)
    )
    response = client.post(path, data=body, content_type=content_type)
    assert response.status_code == 413, (response.status_code, response.content[:300])
    assert spooled == []


def test_small_anonymous_forms_still_work_and_keep_files_in_memory(spooled, user):
    client = Client()
    body, content_type = multipart({"username": user.username, "password": "pw-alice-123"}, b"\0" * 30_000)
    response = client.post("/login/", data=body, content_type=content_type)
    assert response.status_code == 302  # logged in
    assert spooled == []


def test_api_uploads_over_the_limit_are_refused_before_they_are_read(settings, user, sample, spooled):
    settings.SEM_MAX_UPLOAD_BYTES = 2 * MiB
    secret = create_token(user, "lims").secret
    body, content_type = multipart({"sample": str(sample.pk)}, b"II*\0" + b"\0" * (8 * MiB))
    response = Client().post(
        "/api/images/", data=body, content_type=content_type, HTTP_AUTHORIZATION=f"Bearer {secret}"
    )
    assert response.status_code == 413, response.content[:300]
    error = response.json()["error"]
    assert error["code"] == "too_large" and "2.0 MiB" in error["message"]
    assert spooled == [] and SEMImage.objects.count() == 0
    # A made-up token is no better than none.
    response = Client().post(
        "/api/images/", data=body, content_type=content_type, HTTP_AUTHORIZATION="Bearer sem_madeup"
    )
    assert response.status_code == 413 and spooled == []


def test_logged_in_bodies_are_capped_too(settings, user, sample, spooled):
    settings.SEM_MAX_UPLOAD_BYTES = 2 * MiB
    client = Client()
    client.force_login(user)
    body, content_type = multipart({"sample": str(sample.pk)}, b"II*\0" + b"\0" * (8 * MiB))
    response = client.post(reverse("web:upload_file"), data=body, content_type=content_type)
    assert response.status_code == 413
    assert response.json()["code"] == "too_large" and "2.0 MiB" in response.json()["reason"]
    # Not an upload endpoint: the form-data limit (10 MiB) applies, files or not.
    body, content_type = multipart({"x": "y"}, b"\0" * (12 * MiB))
    assert client.post("/browse/", data=body, content_type=content_type).status_code == 413
    assert spooled == []


def test_web_uploads_are_throttled_like_api_uploads(monkeypatch, user, sample, spooled):
    monkeypatch.setitem(api_settings.DEFAULT_THROTTLE_RATES, "upload", "2/min")
    client = Client()
    client.force_login(user)
    statuses = []
    for seed in range(3):
        body, content_type = multipart({"sample": str(sample.pk)}, valid_png(seed + 500), f"{seed}.png")
        statuses.append(client.post(reverse("web:upload_file"), data=body, content_type=content_type))
    assert [response.status_code for response in statuses] == [201, 201, 429]
    refused = statuses[-1]
    assert refused.json()["code"] == "throttled" and "Retry in" in refused.json()["reason"]
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert SEMImage.objects.count() == 2


def test_web_and_api_uploads_share_one_budget(monkeypatch, user, sample):
    monkeypatch.setitem(api_settings.DEFAULT_THROTTLE_RATES, "upload", "2/min")
    client = Client()
    client.force_login(user)
    body, content_type = multipart({"sample": str(sample.pk)}, valid_png(600), "a.png")
    assert client.post("/api/images/", data=body, content_type=content_type).status_code == 201
    body, content_type = multipart({"sample": str(sample.pk)}, valid_png(601), "b.png")
    assert client.post(reverse("web:upload_file"), data=body, content_type=content_type).status_code == 201
    body, content_type = multipart({"sample": str(sample.pk)}, valid_png(602), "c.png")
    assert client.post(reverse("web:upload_file"), data=body, content_type=content_type).status_code == 429


# --- under gunicorn: the WSGI layer and an unread body --------------------------------------------


def _raw_request(port: int, head: bytes, body_part: bytes, timeout_s: float = 10) -> bytes:
    """Send the headers and only the start of the declared body; return what the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as connection:
        try:
            connection.sendall(head + body_part)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the start of the body was sent: read its answer
        answer = b""
        deadline = time.monotonic() + timeout_s
        while b"\r\n\r\n" not in answer and time.monotonic() < deadline:
            try:
                chunk = connection.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            answer += chunk
        return answer


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_under_gunicorn_a_40_mib_anonymous_body_is_answered_before_it_is_sent(tmp_path):
    from tests.faults.test_broker_down import portal_server

    spool = tmp_path / "spool"
    spool.mkdir()
    with portal_server(
        "filesystem://", tmp_path / "gunicorn.log", SEM_UPLOAD_TEMP_DIR=str(spool), SEM_MAX_UPLOAD_BYTES="8MiB"
    ) as url:
        port = int(url.rsplit(":", 1)[1])
        boundary = "b" * 20
        for path, length in (("/login/", 40 * MiB), ("/api/images/", 400 * MiB)):
            head = (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: csrftoken={'x' * 32}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {length}\r\n\r\n"
            ).encode()
            started = time.monotonic()
            answer = _raw_request(port, head, f"--{boundary}\r\n".encode() + b"\0" * MiB)
            assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
            assert time.monotonic() - started < 5  # answered without waiting for the other 39 MiB
        head = (
            b"POST /api/images/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n"
        )
        assert _raw_request(port, head, b"10\r\n" + b"\0" * 16 + b"\r\n").startswith(b"HTTP/1.1 411")
    assert list(spool.iterdir()) == []
