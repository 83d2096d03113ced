"""Two simultaneous uploads of the same bytes: one image, no error, no stray files (real PostgreSQL rows)."""

from __future__ import annotations

import io
import threading

import pytest
from django.db import connection

from portal.models import SEMImage
from portal.services.ingestion import ingest_examine
from portal.services.ingestion.ingest import ingest_file
from tests.portal.sem_builders import accepted_samples, files_under


@pytest.mark.django_db(transaction=True)
def test_concurrent_identical_uploads_create_one_image(monkeypatch, sample, user, settings):
    settings.SEM_DECODE_IN_CHILD = False  # the barrier below must run in this process
    _, data, _ = accepted_samples()["tiff_grey16"]
    both_validated = threading.Barrier(2, timeout=30)
    real_derived = ingest_examine.make_derived_files

    def derive_then_wait(grey):
        derived = real_derived(grey)
        both_validated.wait()  # both uploads are past the sha256 look-up before either stores
        return derived

    monkeypatch.setattr(ingest_examine, "make_derived_files", derive_then_wait)
    monkeypatch.setattr("portal.services.delivery.queueing.enqueue_classification", lambda ids: None)
    results, errors = [], []

    def upload(name):
        try:
            results.append(ingest_file(io.BytesIO(data), filename=name, sample=sample, uploaded_by=user))
        except Exception as error:  # noqa: BLE001 - the test asserts there are none
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=upload, args=(f"copy{i}.tif",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    assert sorted(result.created for result in results) == [False, True]
    assert results[0].image.pk == results[1].image.pk
    assert SEMImage.objects.count() == 1
    assert len(files_under(settings.MEDIA_ROOT)) == 3
