"""Cosmetic defects of refusal and duplicate messages (issue 11, item 11).

The class: a message that says less than the product knows. Before: the upload page said "Duplicate of
scan.tif", then "Duplicate of an existing image" once its first status poll came back (the poll did not
carry the name); a TIFF whose header points to no image directory was "corrupt or unreadable (0)".
"""

from __future__ import annotations

import io
import struct

import pytest
from django.test import Client
from django.urls import reverse

from portal.services.ingestion.ingest import ingest_file
from portal.services.ingestion.ingest_errors import IngestError
from tests.hostile.conftest import multipart_body
from tests.hostile.corpus import valid_png

pytestmark = pytest.mark.django_db


def test_the_status_poll_keeps_the_duplicate_s_file_name(user, sample):
    client = Client()
    client.force_login(user)
    data = valid_png(4711)
    body, content_type = multipart_body({"sample": str(sample.pk)}, "first-scan.png", data)
    stored = client.post(reverse("web:upload_file"), data=body, content_type=content_type).json()
    body, content_type = multipart_body({"sample": str(sample.pk)}, "again.png", data)
    duplicate = client.post(reverse("web:upload_file"), data=body, content_type=content_type).json()
    assert duplicate["outcome"] == "duplicate" and duplicate["existing_filename"] == "first-scan.png"
    polled = client.get(reverse("web:upload_status"), {"ids": str(stored["id"])}).json()["images"]
    assert [image["existing_filename"] for image in polled] == ["first-scan.png"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"II*\x00" + struct.pack("<I", 0) + b"\x00" * 32, "contains no image"),
        (b"MM\x00*" + struct.pack(">I", 0) + b"\x00" * 32, "contains no image"),
    ],
)
def test_refusals_never_end_in_a_bare_number(data, expected, user, sample):
    with pytest.raises(IngestError) as caught:
        ingest_file(io.BytesIO(data), filename="x.tif", sample=sample, uploaded_by=user)
    message = caught.value.message
    assert expected in message, message
    assert not message.rstrip(".").endswith(("(0)", "()", "(1)")), message


def test_uninformative_decoder_details_are_left_out():
    from portal.services.ingestion.validation_errors import error_detail

    assert (
        error_detail(IndexError(0)) == "" and error_detail(KeyError(273)) == "" and error_detail(ValueError("")) == ""
    )
    assert error_detail(OSError("broken PNG file")) == " (broken PNG file)"
