"""Ingestion, downloads and the sweeper with media on S3 (a real S3 API over HTTP: tests/storage/conftest.py)."""

from __future__ import annotations

import hashlib
import io
import time

import pytest
import requests
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from portal.models import Membership, Project, Sample, SEMImage
from portal.services.delivery import maintenance
from portal.services.ingestion import ingest
from portal.services.ingestion.ingest_recovery import INGESTING_DIR
from portal.storage import media_storage
from tests.storage.conftest import MEDIA_PREFIX, local_files
from tests.worker_fixtures import synthetic_png


def _api(user):
    from rest_framework.test import APIClient

    from portal.services.delivery.tokens import create_token

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {create_token(user, 'storage').secret}")
    return client


def _ingest(sample, user, data: bytes, name="a.png"):
    return ingest.ingest_file(io.BytesIO(data), filename=name, sample=sample, uploaded_by=user)


def test_ingestion_stores_the_three_files_in_the_bucket_and_nothing_on_disk(s3, sample, user, settings):
    data = synthetic_png("Fibres", 1)
    result = _ingest(sample, user, data)

    image = result.image
    sha = hashlib.sha256(data).hexdigest()
    assert result.created and image.sha256 == sha
    expected = {f"{MEDIA_PREFIX}/{name}" for name in (image.original.name, image.derivative.name, image.thumbnail.name)}
    assert s3.media_keys() == expected  # no marker left, nothing else
    head = s3.client.head_object(Bucket=s3.media_bucket, Key=f"{MEDIA_PREFIX}/{image.original.name}")
    assert head["Metadata"]["sha256"] == sha and head["ContentLength"] == len(data)
    body = s3.client.get_object(Bucket=s3.media_bucket, Key=f"{MEDIA_PREFIX}/{image.original.name}")["Body"].read()
    assert body == data  # byte-for-byte
    assert local_files(settings.MEDIA_ROOT) == []

    again = _ingest(sample, user, data, name="again.png")
    assert not again.created and again.image.pk == image.pk and s3.media_keys() == expected


def test_content_addressed_names_reuse_the_same_bytes_and_never_overwrite_others(s3):
    storage = media_storage()
    name, created = storage.save_content_addressed("derivatives/ab/abc.png", ContentFile(b"first"))
    assert (name, created) == ("derivatives/ab/abc.png", True)
    assert storage.save_content_addressed("derivatives/ab/abc.png", ContentFile(b"first")) == (name, False)

    other, created = storage.save_content_addressed("derivatives/ab/abc.png", ContentFile(b"other bytes"))
    assert created and other != name and other.startswith("derivatives/ab/abc_")
    with storage.open(name) as first:
        assert first.read() == b"first"
    assert storage.stored_sha256(other) == hashlib.sha256(b"other bytes").hexdigest()

    # An object put there by another tool (no sha256 in its metadata): its bytes are hashed instead.
    s3.client.put_object(Bucket=s3.media_bucket, Key=f"{MEDIA_PREFIX}/thumbnails/ab/abc.jpg", Body=b"mirrored")
    assert storage.save_content_addressed("thumbnails/ab/abc.jpg", ContentFile(b"mirrored")) == (
        "thumbnails/ab/abc.jpg",
        False,
    )


def test_a_failed_multipart_upload_is_aborted_and_leaves_no_object(s3, sample, user):
    """Large files go up as multipart uploads; one that fails mid-way is aborted, nothing appears."""
    from boto3.s3.transfer import TransferConfig

    storage = media_storage()
    storage.transfer_config = TransferConfig(multipart_threshold=5 * 1024**2, multipart_chunksize=5 * 1024**2)

    class Failing(io.BytesIO):
        def read(self, size=-1):
            if self.tell() > 6 * 1024**2:
                raise OSError("connection to the client lost")
            return super().read(size)

    with pytest.raises(OSError):
        storage.save("originals/big.tif", Failing(b"x" * (12 * 1024**2)))
    assert s3.media_keys() == set()
    assert s3.client.list_multipart_uploads(Bucket=s3.media_bucket).get("Uploads", []) == []


@pytest.fixture
def other_member(django_user_model):
    """A member of project B only."""
    other = Project.objects.create(name="Project B")
    person = django_user_model.objects.create_user("bob", "bob@example.org", "pw-bob-123")
    Membership.objects.create(project=other, user=person, role=Membership.Role.MEMBER)
    Sample.objects.create(project=other, lab_sample_id="B-1", name="B's wafer", owner=person)
    return person


@pytest.mark.parametrize("signed", [False, True], ids=["streamed", "signed-url"])
def test_downloads_keep_the_access_checks(s3, sample, user, other_member, client, settings, signed):
    settings.SEM_SIGNED_DOWNLOADS = signed
    data = synthetic_png("Particles", 2)
    image = _ingest(sample, user, data).image

    client.force_login(other_member)
    for name in ("web:image_original", "web:image_derivative", "web:image_thumbnail", "web:image_preview"):
        refused = client.get(reverse(name, args=[image.pk]))
        assert refused.status_code == 404 and "Location" not in refused  # never a URL to project A's files

    client.force_login(user)
    response = client.get(reverse("web:image_original", args=[image.pk]))
    if signed:
        assert response.status_code == 302 and "X-Amz-Expires=" in response["Location"]
        fetched = requests.get(response["Location"], timeout=30)
        assert fetched.status_code == 200 and fetched.content == data
        assert "attachment; filename*=UTF-8''a.png" in fetched.headers["Content-Disposition"]
    else:
        assert response.status_code == 200 and b"".join(response.streaming_content) == data
    api_original = f"/api/images/{image.pk}/original/"
    assert _api(other_member).get(api_original).status_code == 404
    answer = _api(user).get(api_original)
    if signed:
        assert answer.status_code == 302 and requests.get(answer["Location"], timeout=30).content == data
    else:
        assert answer.status_code == 200 and b"".join(answer.streaming_content) == data
    preview = client.get(reverse("web:image_preview", args=[image.pk]))
    assert preview.status_code in (200, 302)
    assert f"{MEDIA_PREFIX}/renditions/preview/{image.sha256[:2]}/{image.sha256}.png" in s3.media_keys()


def test_a_signed_url_is_short_lived(s3, sample, user, client, settings):
    """The URL carries the configured lifetime (the S3 server, not the portal, refuses it afterwards)."""
    settings.SEM_SIGNED_DOWNLOADS = True
    settings.SEM_SIGNED_URL_EXPIRY_S = 30
    image = _ingest(sample, user, synthetic_png("Fibres", 3)).image
    client.force_login(user)
    response = client.get(reverse("web:image_original", args=[image.pk]))
    assert "X-Amz-Expires=30&" in response["Location"] and response["Cache-Control"] == "private, no-store"


def test_the_sweeper_removes_what_a_killed_upload_left_in_the_bucket(s3, sample, user, settings, monkeypatch):
    """Files and a marker of an upload killed before its commit (no row), and an unfinished multipart upload."""
    kept = _ingest(sample, user, synthetic_png("Fibres", 4)).image
    storage = media_storage()
    sha = hashlib.sha256(b"killed upload").hexdigest()
    for name in (
        f"originals/{sha[:2]}/{sha}.tif",
        f"derivatives/{sha[:2]}/{sha}.png",
        f"thumbnails/{sha[:2]}/{sha}.jpg",
    ):
        storage.save_content_addressed(name, ContentFile(b"killed upload"))
    storage.save(f"{INGESTING_DIR}/{sha}.1.dead", ContentFile(b""))
    s3.client.create_multipart_upload(Bucket=s3.media_bucket, Key=f"{MEDIA_PREFIX}/originals/half.tif")
    before = s3.media_keys()
    assert len(before) == 7
    time.sleep(1.1)  # S3 times have one-second resolution
    settings.SEM_INTERRUPTED_UPLOAD_GRACE_S = 0
    monkeypatch.setattr(maintenance, "PARTIAL_FILE_MAX_AGE_S", 0)

    done = maintenance.sweep()

    assert done["orphan_files_removed"] == 3 and done["partial_files_removed"] == 1
    expected = {f"{MEDIA_PREFIX}/{n}" for n in (kept.original.name, kept.derivative.name, kept.thumbnail.name)}
    assert s3.media_keys() == expected
    assert s3.client.list_multipart_uploads(Bucket=s3.media_bucket).get("Uploads", []) == []
    assert SEMImage.objects.count() == 1


def test_an_unreachable_object_store_answers_503_and_stores_nothing(s3, sample, user, settings):
    from tests.faults.conftest import free_port

    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            **settings.STORAGES["default"],
            "OPTIONS": {**settings.STORAGES["default"]["OPTIONS"], "endpoint_url": closed},
        },
    }
    api = _api(user)
    upload = SimpleUploadedFile("down.png", synthetic_png("Fibres", 5), content_type="image/png")

    response = api.post("/api/images/", {"file": upload, "sample": sample.pk}, format="multipart")

    assert response.status_code == 503 and int(response["Retry-After"]) > 0
    assert response.json()["error"]["code"] == "unavailable"
    assert SEMImage.objects.count() == 0 and s3.media_keys() == set()
