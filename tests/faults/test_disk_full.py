"""The media disk fills up mid-upload: the uploader gets a clear error, nothing is half-stored, and
the same upload succeeds once space is back."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from portal.models import SEMImage
from tests.faults.conftest import media_disk_with, media_files, stored_names, tiff_bytes

pytestmark = pytest.mark.django_db

IMAGES_URL = "/api/images/"
# Where the disk runs out: inside the original, or after the original while writing the derivative.
WHERE_FULL = {"mid-original": lambda size: size // 2, "after-original": lambda size: size + 64}


def _api_upload(api_client, sample, data: bytes, key: str):
    upload = SimpleUploadedFile("full.tif", data, content_type="image/tiff")
    return api_client.post(
        IMAGES_URL, {"file": upload, "sample": sample.pk}, format="multipart", HTTP_IDEMPOTENCY_KEY=key
    )


@pytest.mark.parametrize("where", WHERE_FULL)
def test_api_upload_on_a_full_disk_answers_507_and_stores_nothing(api_client, sample, settings, where):
    data = tiff_bytes(1)
    with media_disk_with(WHERE_FULL[where](len(data))):
        response = _api_upload(api_client, sample, data, key="upload-1")

    assert response.status_code == 507
    assert response.json()["error"]["code"] == "insufficient_storage"
    assert "no storage space" in response.json()["error"]["message"]
    assert not SEMImage.objects.exists()
    assert media_files(settings.MEDIA_ROOT) == set()  # no truncated original, no partial derivative

    # Space is back: the client's retry with the same key stores the image once, completely.
    retried = _api_upload(api_client, sample, data, key="upload-1")
    assert retried.status_code == 201, retried.content
    image = SEMImage.objects.get()
    assert media_files(settings.MEDIA_ROOT) == stored_names([image])
    assert image.original.read() == data


def test_web_upload_on_a_full_disk_says_so_and_stores_nothing(client, user, sample, settings):
    client.force_login(user)
    data = tiff_bytes(2)

    def post():
        return client.post(
            reverse("web:upload_file"), {"sample": sample.pk, "file": SimpleUploadedFile("full.tif", data)}
        )

    with media_disk_with(len(data) // 3):
        response = post()

    assert response.status_code == 507
    assert response.json()["outcome"] == "rejected"  # the upload page shows "Rejected: <reason>"
    assert "no storage space left" in response.json()["reason"]
    assert not SEMImage.objects.exists() and media_files(settings.MEDIA_ROOT) == set()
    assert post().json()["outcome"] == "stored"


def test_the_sweeper_removes_partial_files_of_a_process_killed_mid_write(settings):
    """A worker or web process killed mid-write leaves its partial file; nothing points to it."""
    import os
    import time
    from pathlib import Path

    from workers.tasks import sweep

    partial = Path(settings.MEDIA_ROOT) / ".partial"
    partial.mkdir(parents=True, exist_ok=True)
    abandoned, in_progress = partial / "abandoned", partial / "in-progress"
    abandoned.write_bytes(b"half an image")
    in_progress.write_bytes(b"being written")
    two_hours_ago = time.time() - 7200
    os.utime(abandoned, (two_hours_ago, two_hours_ago))

    assert sweep()["partial_files_removed"] == 1
    assert not abandoned.exists() and in_progress.exists()


@pytest.mark.parametrize("kind", ["preview", "full"])
def test_a_rendition_on_a_full_disk_answers_507_and_leaves_no_partial_file(
    api_client, client, user, sample, settings, kind
):
    """The web viewer's PNG renditions are made on first view and cached on the media disk."""
    from pathlib import Path

    stored = _api_upload(api_client, sample, tiff_bytes(3), key="rendition")
    assert stored.status_code == 201, stored.content
    image = SEMImage.objects.get()
    client.force_login(user)
    url = reverse(f"web:image_{kind}", args=[image.pk])

    with media_disk_with(64):
        response = client.get(url)

    assert response.status_code == 507
    assert int(response["Retry-After"]) > 0
    assert "no storage space" in response.content.decode()
    assert media_files(settings.MEDIA_ROOT) == stored_names([image])  # no half-written PNG

    again = client.get(url)  # space is back
    assert again.status_code == 200 and again["Content-Type"] == "image/png"
    assert (Path(settings.MEDIA_ROOT) / "renditions" / kind).exists()
