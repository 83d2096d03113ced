"""A single-file upload request that carries several files (issue 11, item 8).

The class: an endpoint that stores one file per request silently choosing one of several. Before, the
web upload endpoint and POST /api/images/ stored the last file and answered 201. Now both refuse the
request with 400, a reason that names the files, and store none of them.
"""

from __future__ import annotations

import uuid

import pytest
from django.test import Client
from django.urls import reverse

from portal.models import SEMImage
from portal.services.delivery.tokens import create_token
from tests.hostile.corpus import valid_png

pytestmark = pytest.mark.django_db


def multipart(sample_pk: int, files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="sample"\r\n\r\n{sample_pk}\r\n'.encode()]
    for field, name, data in files:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
            f"Content-Type: image/png\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


SHAPES = {
    "two_files_in_file": [("file", "a.png", valid_png(801)), ("file", "b.png", valid_png(802))],
    "a_second_field": [("file", "a.png", valid_png(803)), ("extra", "b.png", valid_png(804))],
    "three_files": [("file", name, valid_png(805 + index)) for index, name in enumerate(["a.png", "b.png", "c.png"])],
}


@pytest.mark.parametrize("shape", SHAPES)
def test_web_upload_refuses_several_files(shape, user, sample):
    client = Client()
    client.force_login(user)
    body, content_type = multipart(sample.pk, SHAPES[shape])
    response = client.post(reverse("web:upload_file"), data=body, content_type=content_type)
    assert response.status_code == 400, response.content[:300]
    answer = response.json()
    assert answer["outcome"] == "rejected" and answer["code"] == "too_many_files"
    assert f"carries {len(SHAPES[shape])} files" in answer["reason"] and "a.png" in answer["reason"]
    assert SEMImage.objects.count() == 0


@pytest.mark.parametrize("shape", SHAPES)
def test_api_upload_refuses_several_files(shape, user, sample):
    body, content_type = multipart(sample.pk, SHAPES[shape])
    response = Client().post(
        "/api/images/",
        data=body,
        content_type=content_type,
        HTTP_AUTHORIZATION=f"Bearer {create_token(user, 'lims').secret}",
    )
    assert response.status_code == 400, response.content[:300]
    error = response.json()["error"]
    assert error["code"] == "too_many_files" and "one request per file" in error["message"]
    assert error["fields"]["file"] == [error["message"]]
    assert SEMImage.objects.count() == 0


def test_one_file_is_still_stored(user, sample):
    body, content_type = multipart(sample.pk, [("file", "one.png", valid_png(810))])
    client = Client()
    client.force_login(user)
    assert client.post(reverse("web:upload_file"), data=body, content_type=content_type).status_code == 201
    body, content_type = multipart(sample.pk, [("file", "two.png", valid_png(811))])
    response = Client().post(
        "/api/images/",
        data=body,
        content_type=content_type,
        HTTP_AUTHORIZATION=f"Bearer {create_token(user, 'lims').secret}",
    )
    assert response.status_code == 201
    assert SEMImage.objects.count() == 2
