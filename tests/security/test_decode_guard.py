"""Untrusted files are decoded in a capped child process (issue 22, defence in depth).

Whatever a decoder does with a file the checks let through, it costs one refused upload or one refused
view ("decoding_limit", a 4xx), never the process that serves the request. These tests make the child hit
its limits for real: a memory cap smaller than what an ordinary image needs, a deadline shorter than a
sleep, a decoder that aborts.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from django.urls import reverse

from portal.models import SEMImage
from portal.services.ingestion.decode_guard import run_guarded
from portal.services.ingestion.ingest import ingest_file
from portal.services.ingestion.ingest_errors import IngestError
from portal.services.ingestion.validation_errors import ValidationError
from tests.hostile.conftest import multipart_body
from tests.security.bombs import tiff_strip_bomb, truncated_tiles

# 4,000 x 4,000 x 16 bits: 32 MB decoded, far more than a 16 MiB cap allows.
MEDIUM = tiff_strip_bomb(4000, 4000, bits=16, ramp=True)


def test_a_child_over_its_memory_cap_is_a_refusal_not_a_dead_process(settings):
    settings.SEM_DECODE_MEMORY_BYTES = 64 * 1024**2
    with pytest.raises(ValidationError) as caught:
        run_guarded(bytearray, 512 * 1024**2)
    assert caught.value.code == "decoding_limit"
    assert "64 MiB" in caught.value.message
    assert len(run_guarded(bytearray, 1024)) == 1024  # the next call works: nothing here was harmed


def test_a_child_past_its_deadline_is_killed(settings):
    settings.SEM_DECODE_TIMEOUT_S = 0.5
    started = time.monotonic()
    with pytest.raises(ValidationError) as caught:
        run_guarded(time.sleep, 30)
    assert caught.value.code == "decoding_limit"
    assert time.monotonic() - started < 10


def test_a_child_that_crashes_in_c_code_is_a_refusal():
    with pytest.raises(ValidationError) as caught:
        run_guarded(os.abort)
    assert caught.value.code == "decoding_limit"


def _guarded_length(text: str) -> int:
    return run_guarded(len, text)


def test_guarded_decoding_works_in_a_celery_prefork_worker():
    """Celery's pool workers are daemonic billiard processes (watch-folder scans ingest there)."""
    import billiard

    with billiard.Pool(1) as pool:
        assert pool.map(_guarded_length, ["abcd"]) == [4]


def test_the_child_sees_the_limits_of_the_request_not_of_its_start(settings, tmp_path):
    from portal.services.ingestion.validation_limits import check_decoding_budget

    run_guarded(check_decoding_budget, 100, 100, 10_000)  # starts the forkserver with the defaults
    settings.SEM_MAX_DECODED_BYTES = 1000
    with pytest.raises(ValidationError) as caught:
        run_guarded(check_decoding_budget, 100, 100, 10_000)
    assert caught.value.code == "too_many_bytes"


@pytest.mark.django_db
def test_an_upload_whose_decoding_hits_the_cap_is_a_422_and_the_worker_serves_the_next(sample, user, client, settings):
    client.force_login(user)
    settings.SEM_DECODE_MEMORY_BYTES = 16 * 1024**2
    body, content_type = multipart_body({"sample": str(sample.pk)}, "medium.tif", MEDIUM)
    response = client.post(reverse("web:upload_file"), data=body, content_type=content_type)
    assert response.status_code == 422, response.content[:300]
    assert response.json()["code"] == "decoding_limit"
    assert SEMImage.objects.count() == 0
    settings.SEM_DECODE_MEMORY_BYTES = 2 * 1024**3
    response = client.post(reverse("web:upload_file"), data=body, content_type=content_type)
    assert response.status_code == 201, response.content[:300]


@pytest.mark.django_db
def test_an_ingest_refused_by_the_cap_stores_nothing(sample, user, settings):
    settings.SEM_DECODE_MEMORY_BYTES = 16 * 1024**2
    with pytest.raises(IngestError) as caught:
        ingest_file(io.BytesIO(MEDIUM), filename="medium.tif", sample=sample, uploaded_by=user)
    assert caught.value.code == "decoding_limit"
    assert SEMImage.objects.count() == 0


def _stored(sample, user, data: bytes = MEDIUM) -> SEMImage:
    return ingest_file(io.BytesIO(data), filename="stored.tif", sample=sample, uploaded_by=user).image


@pytest.mark.django_db
@pytest.mark.parametrize("kind", ["full", "preview"])
def test_renditions_of_stored_images_go_through_the_same_guard(kind, sample, user, client, settings):
    image = _stored(sample, user)
    client.force_login(user)
    settings.SEM_DECODE_MEMORY_BYTES = 16 * 1024**2
    response = client.get(reverse(f"web:image_{kind}", args=[image.pk]))
    assert response.status_code == 422
    assert b"limits" in response.content
    settings.SEM_DECODE_MEMORY_BYTES = 2 * 1024**3
    response = client.get(reverse(f"web:image_{kind}", args=[image.pk]))
    assert response.status_code == 200
    assert b"".join(response.streaming_content)[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.django_db
def test_a_stored_original_that_todays_checks_refuse_gets_no_rendition(sample, user, client):
    """An original stored before these checks (here: its bytes replaced on disk by a TIFF with 1 of
    62,500 tiles) is refused at its first view with the reason, like an upload."""
    image = _stored(sample, user, tiff_strip_bomb(64, 64, ramp=True))
    Path(image.original.path).write_bytes(truncated_tiles("zlib"))
    client.force_login(user)
    response = client.get(reverse("web:image_full", args=[image.pk]))
    assert response.status_code == 422
    assert b"truncated" in response.content
