"""The database fails in the middle of an ingestion, after the files were written: the row rolls
back, the files go with it, the API says 503 (retry) and the retry stores the image once."""

from __future__ import annotations

import io
from unittest import mock

import psycopg
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import IntegrityError, connection
from django.urls import reverse

from portal.models import Category, Label, SEMImage
from portal.services.ingestion import ingest, ingest_store
from tests.faults.conftest import media_files, stored_names, tiff_bytes

pytestmark = pytest.mark.django_db(transaction=True)  # real commits: deferred constraints, dropped connections


def test_a_constraint_failing_at_commit_leaves_no_orphan_files(sample, user, settings):
    # A category deleted by another session between the form and the commit: PostgreSQL checks the
    # (deferred) foreign key of the new Label only at COMMIT, after the files were written.
    vanished = Category.objects.create(name="Short-lived", slug="short-lived", folder_name="Short_lived")
    Category.objects.filter(pk=vanished.pk).delete()

    with pytest.raises(IntegrityError):
        ingest.ingest_file(
            io.BytesIO(tiff_bytes(10)), filename="a.tif", sample=sample, uploaded_by=user, label=vanished
        )

    assert not SEMImage.objects.exists() and not Label.objects.exists()
    assert media_files(settings.MEDIA_ROOT) == set()


class _connection_dropped_after_files:
    """Terminate this process's PostgreSQL backend once ingestion has written its files, as a
    database restart or failover does to every open connection."""

    def __enter__(self):
        saving = ingest_store.save_content_addressed_files

        def save_then_drop(upload):
            saving(upload)
            _terminate_backend(connection.connection.info.backend_pid)

        steps = tuple(save_then_drop if step is saving else step for step in ingest_store.STORE_STEPS)
        self.patch = mock.patch.object(ingest_store, "STORE_STEPS", steps)
        self.patch.start()
        return self

    def __exit__(self, *exc):
        self.patch.stop()


def _terminate_backend(pid: int) -> None:
    params = connection.settings_dict
    with psycopg.connect(
        host=params["HOST"] or "127.0.0.1",
        port=params["PORT"] or 5432,
        user=params["USER"],
        password=params["PASSWORD"] or None,
        dbname=params["NAME"],
        autocommit=True,
    ) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])


def _upload(api_client, sample, data: bytes):
    upload = SimpleUploadedFile("drop.tif", data, content_type="image/tiff")
    return api_client.post(
        "/api/images/",
        {"file": upload, "sample": sample.pk},
        format="multipart",
        HTTP_IDEMPOTENCY_KEY="lims-run-7/drop.tif",
    )


def test_a_dropped_database_connection_mid_upload_answers_503_and_the_retry_stores_once(api_client, sample, settings):
    data = tiff_bytes(11)
    with _connection_dropped_after_files():
        response = _upload(api_client, sample, data)

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
    assert int(response["Retry-After"]) > 0
    assert media_files(settings.MEDIA_ROOT) == set()  # the rolled-back row's files are gone too

    retried = _upload(api_client, sample, data)  # Django reconnects: the database is back
    assert retried.status_code == 201, retried.content
    assert _upload(api_client, sample, data).status_code == 200  # a second retry finds the first
    image = SEMImage.objects.get()
    assert media_files(settings.MEDIA_ROOT) == stored_names([image])


def test_the_web_upload_says_retry_when_the_database_connection_drops(client, user, sample, settings):
    client.force_login(user)

    def post():
        return client.post(
            reverse("web:upload_file"), {"sample": sample.pk, "file": SimpleUploadedFile("drop.tif", tiff_bytes(12))}
        )

    with _connection_dropped_after_files():
        response = post()

    assert response.status_code == 503 and response["Retry-After"]
    assert response.json()["outcome"] == "rejected"  # shown on the upload page as "Rejected: <reason>"
    assert "retry in a few seconds" in response.json()["reason"]
    assert not SEMImage.objects.exists() and media_files(settings.MEDIA_ROOT) == set()
    assert post().json()["outcome"] == "stored"


def test_a_database_failing_after_the_upload_committed_says_stored_and_the_retry_finds_it(api_client, sample, settings):
    """The connection drops right after COMMIT, before the view reads the image back: the answer is a
    503 that says the image was stored (not "nothing was changed"), and the retry answers 200."""
    data = tiff_bytes(13)
    real_enqueue = ingest_store._enqueue_classification

    def enqueue_then_drop(image_id):  # runs on commit
        real_enqueue(image_id)
        _terminate_backend(connection.connection.info.backend_pid)

    def upload():
        return api_client.post(
            "/api/images/",
            {
                "file": SimpleUploadedFile("late.tif", data, content_type="image/tiff"),
                "sample": sample.pk,
                "magnification": "25000",
            },
            format="multipart",
            HTTP_IDEMPOTENCY_KEY="lims-run-7/late.tif",
        )

    with mock.patch.object(ingest_store, "_enqueue_classification", enqueue_then_drop):
        response = upload()

    assert response.status_code == 503 and int(response["Retry-After"]) > 0
    error = response.json()["error"]
    assert error["code"] == "unavailable"
    assert "was stored" in error["message"] and "Nothing was changed" not in error["message"]

    connection.close_if_unusable_or_obsolete()  # what Django does when a request ends (the test client skips it)
    retried = upload()
    assert retried.status_code == 200, retried.content
    image = SEMImage.objects.get()  # committed by the first request
    assert retried.json()["id"] == image.pk
    assert retried.json()["magnification"] == 25000  # what the failed answer missed is completed
    assert media_files(settings.MEDIA_ROOT) == stored_names([image])
