"""Decoding bombs that pass the pixel limit (issue 11, item 2).

The class: a small file whose decoding costs far more than its pixel count suggests. Extreme aspect
ratios (the derivative step scaled a 1-pixel side up to 256, so a 1 x 200,000 PNG asked for ~13 GB),
samples per pixel and bits per sample that multiply the decoded size, and strips that all point at one
block. What holds against all of them: a budget on decoded bytes and on the aspect ratio checked on the
header before any pixel is decoded, a derivative whose size is capped whatever the input, and a bounded
peak memory per upload, measured here in a fresh process (docs/operations.md states the bound).
"""

from __future__ import annotations

import io
import os

import pytest
from django.urls import reverse
from PIL import Image

from portal.models import SEMImage
from portal.services.ingestion.ingest import ingest_file
from portal.services.ingestion.ingest_errors import IngestError
from portal.services.ingestion.ingest_examine import make_derived_files
from tests.hostile.conftest import multipart_body
from tests.security.bombs import at_the_limits, bombs, tiff_chained_ifds, tiff_strip_bomb
from tests.security.memory_probe import probe

# The documented worst case of one upload's decoding work with the default limits (docs/operations.md).
WORST_CASE_BYTES = 900 * 1024**2
BOMBS = [pytest.param(name, data, code, id=name) for name, (data, code) in bombs().items()]
REFUSED_BOMBS = [param for param in BOMBS if param.values[2] is not None]


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "data", "code"), REFUSED_BOMBS)
def test_bombs_are_refused_from_the_header_with_a_clear_reason(name, data, code, sample, user, client, settings):
    with pytest.raises(IngestError) as caught:
        ingest_file(io.BytesIO(data), filename=f"{name}.bin", sample=sample, uploaded_by=user)
    assert caught.value.code == code
    assert "limit" in caught.value.message or "accepted" in caught.value.message
    # The same through the web upload endpoint: a 422 with the reason, not a 500 or a stored image.
    client.force_login(user)
    body, content_type = multipart_body({"sample": str(sample.pk)}, f"{name}.bin", data)
    response = client.post(reverse("web:upload_file"), data=body, content_type=content_type)
    assert response.status_code == 422, response.content[:300]
    assert response.json()["code"] == code
    assert SEMImage.objects.count() == 0


@pytest.mark.django_db
def test_decoded_bytes_count_samples_and_bits_not_just_pixels(sample, user, settings):
    """Well under the pixel limit, over the decoded-bytes budget: refused whatever the pixel count says."""
    settings.SEM_MAX_DECODED_BYTES = 8 * 1024**2
    for data in (
        tiff_strip_bomb(1000, 1000, samples=9),  # 9 MB of 8-bit samples
        tiff_strip_bomb(1500, 1500, bits=32, sample_format=3),  # 9 MB of float32
        tiff_strip_bomb(1000, 1000, samples=3, bits=32, sample_format=3),
    ):
        with pytest.raises(IngestError) as caught:
            ingest_file(io.BytesIO(data), filename="many.tif", sample=sample, uploaded_by=user)
        assert caught.value.code == "too_many_bytes", caught.value.message
    # Just under the budget is stored.
    stored = ingest_file(
        io.BytesIO(tiff_strip_bomb(2000, 2000, bits=16, ramp=True)), filename="ok.tif", sample=sample, uploaded_by=user
    )
    assert stored.created


@pytest.mark.django_db
def test_the_aspect_ratio_limit_is_configurable(sample, user, settings):
    wide = bombs()["png_5000x1"][0]
    settings.SEM_MAX_ASPECT_RATIO = 10_000
    image = ingest_file(io.BytesIO(wide), filename="line.png", sample=sample, uploaded_by=user).image
    # Even then the derivative is not a 5000-fold upscale of the 1-pixel side.
    with Image.open(image.derivative.path) as derivative:
        assert derivative.width * derivative.height <= 256 * 8192


@pytest.mark.parametrize("size", [(20_000, 10), (10, 20_000), (3_000, 40), (1, 9_000), (300, 200)])
def test_the_derivative_is_never_a_giant_upscale(size):
    """make_derived_files on any shape (a data bar can leave a much flatter image than the upload):
    the model-input derivative has a short side of at most 256 and a long side of at most 8192 (or the
    upload's own, never scaled up)."""
    derived = make_derived_files(Image.new("L", size, 128))
    with Image.open(io.BytesIO(derived.derivative_png)) as derivative:
        assert min(derivative.size) <= 256 and max(derivative.size) <= max(8192, *size), derivative.size
        if min(size) * 32 >= max(size):  # ordinary shapes keep the usual 256-px short side
            assert min(derivative.size) == 256


@pytest.mark.django_db
def test_page_counting_stops_at_the_column_limit(sample, user):
    """A page-count bomb (hundreds of thousands of chained IFDs) costs a bounded walk, not the whole chain."""
    from portal.services.ingestion.validation_tiff import MAX_COUNTED_PAGES, count_tiff_pages

    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"ifds-{os.getpid()}.tif")
    with open(path, "wb") as handle:
        handle.write(tiff_chained_ifds(MAX_COUNTED_PAGES + 500))
    try:
        assert count_tiff_pages(path) == MAX_COUNTED_PAGES
    finally:
        os.unlink(path)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(bombs()) + list(at_the_limits()))
def test_worst_case_memory_of_one_upload_is_bounded(name, tmp_path):
    """Each bomb, and each acceptable image as expensive as the default limits allow, decoded in a fresh
    process with the default limits: the peak resident memory it adds stays under the documented bound.
    (Before the fix: 2.0 GB for the 10,000 x 10,000 strip bomb, 1.0 GB for 1,000 samples per pixel, and a
    MemoryError for the 1 x 200,000 PNG.)"""
    data = bombs()[name][0] if name in bombs() else at_the_limits()[name]
    path = tmp_path / f"{name}.bin"
    path.write_bytes(data)
    result = probe(
        path,
        limit_bytes=3 * WORST_CASE_BYTES,
        env={"SEM_MAX_IMAGE_PIXELS": None, "SEM_MAX_DECODED_BYTES": None, "SEM_MAX_ASPECT_RATIO": None},
    )
    expected = bombs()[name][1] if name in bombs() else None
    assert result["outcome"] == (expected or "accepted"), result
    assert result["peak_bytes"] <= WORST_CASE_BYTES, result
