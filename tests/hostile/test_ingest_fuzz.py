"""Fuzzing ingest_file with hypothesis: random bytes, and bit flips, truncations and splices of small
valid TIFF, PNG, JPEG and BMP files.

Property: ingest_file either stores the image (the stored original equals the input, byte for byte)
or raises IngestError with a known code, leaving no row and no file behind (not in MEDIA_ROOT, not in
the upload temp folder). Any other exception is a bug.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from django.conf import settings
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from portal.models import SEMImage
from portal.services.ingestion.ingest import ingest_file
from portal.services.ingestion.ingest_errors import IngestError
from tests.hostile.corpus import valid_bmp, valid_jpeg, valid_png, valid_tiff
from tests.portal.sem_builders import files_under

pytestmark = pytest.mark.django_db

KNOWN_CODES = {
    "empty",
    "too_large",
    "not_an_image",
    "disguised",
    "unsupported_format",
    "truncated",
    "too_many_pixels",
    "extreme_aspect_ratio",
    "too_many_bytes",
    "corrupt",
    "malformed_structure",
    "too_many_samples",
    "decoding_limit",
}
SEEDS = [valid_tiff(1), valid_tiff(2, compression="zlib"), valid_png(3), valid_jpeg(4), valid_bmp(5)]
NAMES = st.sampled_from(["scan.tif", "scan.png", "x.jpg", "noext", "../../evil.tif", "a\x00b.png"]) | st.text(
    max_size=40
)


@st.composite
def mutated_image(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        mutation = draw(st.sampled_from(["flip", "truncate", "splice", "overwrite"]))
        position = draw(st.integers(0, max(0, len(data) - 1)))
        if mutation == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif mutation == "truncate":
            del data[position:]
        elif mutation == "splice":  # a piece of another valid file inserted here
            donor = draw(st.sampled_from(SEEDS))
            start = draw(st.integers(0, len(donor) - 1))
            data[position:position] = donor[start : start + draw(st.integers(1, 512))]
        else:  # header fields are where parsers get hurt: overwrite a few bytes with extremes
            data[position : position + 4] = draw(
                st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff", b"\x80\x00\x00\x01"])
            )
    return bytes(data)


FUZZ_INPUT = st.binary(max_size=4096) | mutated_image()


@pytest.fixture
def small_pixel_limit(settings):
    # A mutated header may declare up to the limit; a smaller real limit keeps each decode cheap.
    settings.SEM_MAX_IMAGE_PIXELS = 4_000_000


@hypothesis_settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=FUZZ_INPUT, filename=NAMES)
def test_ingest_stores_exactly_the_input_or_refuses_cleanly(data, filename, sample, user, small_pixel_limit):
    media_before = set(files_under(settings.MEDIA_ROOT))
    rows_before = SEMImage.objects.count()
    try:
        result = ingest_file(io.BytesIO(data), filename=filename, sample=sample, uploaded_by=user)
    except IngestError as error:
        event(f"refused: {error.code}")  # the outcome mix shows in --hypothesis-show-statistics
        assert error.code in KNOWN_CODES, error.code
        assert error.message
        assert SEMImage.objects.count() == rows_before
        assert set(files_under(settings.MEDIA_ROOT)) == media_before, "refused upload left files behind"
    else:
        event("stored")
        image = result.image
        assert image.sha256 == hashlib.sha256(data).hexdigest()
        assert Path(image.original.path).read_bytes() == data
        assert image.original_filename.isprintable() and "/" not in image.original_filename
    assert list(Path(settings.FILE_UPLOAD_TEMP_DIR).iterdir()) == [], "temporary upload file left behind"
