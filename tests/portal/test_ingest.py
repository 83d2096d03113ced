"""ingest_file: every accepted format, every refusal, atomicity, dedup, idempotency, queueing."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from django.conf import settings
from PIL import Image

from portal.models import Category, Label, SEMImage, split_for_sha256
from portal.services.ingestion import ingest_examine, ingest_store, ingest_upload
from portal.services.ingestion.ingest import ingest_file
from portal.services.ingestion.ingest_errors import IngestError
from tests.portal.sem_builders import (
    FEI_INI,
    ZEISS_CZ_SEM,
    accepted_samples,
    files_under,
    grey_pattern,
    pillow_bytes,
    png_declaring,
    tiff_bytes,
    tiff_declaring,
    tiff_with_text_tag,
)

pytestmark = pytest.mark.django_db

ACCEPTED = accepted_samples()


def ingest_bytes(data: bytes, filename: str, sample, user, **kwargs):
    return ingest_file(io.BytesIO(data), filename=filename, sample=sample, uploaded_by=user, **kwargs)


def media_files():
    return files_under(settings.MEDIA_ROOT)


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_accepted_format_is_stored_with_original_derivative_and_thumbnail(name, sample, user):
    filename, data, expected = ACCEPTED[name]
    result = ingest_bytes(data, filename, sample, user)

    image = SEMImage.objects.get(pk=result.image.pk)
    assert result.created is True
    for field, value in expected.items():
        assert getattr(image, field) == value, field
    sha = hashlib.sha256(data).hexdigest()
    assert (image.sha256, image.file_size, image.original_filename) == (sha, len(data), filename)
    assert (image.width, image.height) == (400, 300)
    assert image.split == split_for_sha256(sha)
    assert image.status == SEMImage.Status.PENDING
    with image.original.open("rb") as stored:
        assert stored.read() == data  # byte-for-byte
    assert image.original.name == f"originals/{sha[:2]}/{sha}{image.extension}"
    with image.derivative.open("rb") as handle:
        derivative = Image.open(handle)
        derivative.load()
    assert derivative.format == "PNG" and derivative.mode == "L"
    assert min(derivative.size) == 256
    with image.thumbnail.open("rb") as handle:
        thumbnail = Image.open(handle)
        thumbnail.load()
    assert max(thumbnail.size) == 256 and thumbnail.mode == "L"
    assert len(media_files()) == 3


def test_multipage_tiff_uses_the_first_page(sample, user):
    first = np.full((300, 400), 230, np.uint8)
    first[::7] = 20  # some texture so nothing looks like a data bar
    pages = np.stack([first, np.full((300, 400), 10, np.uint8)])
    image = ingest_bytes(tiff_bytes(pages), "stack.tif", sample, user).image
    with image.derivative.open("rb") as handle:
        mean = np.asarray(Image.open(handle)).mean()
    assert image.page_count == 2
    assert mean > 150  # the bright first page, not the dark second one


def test_sixteen_bit_tiff_is_stretched_to_the_full_8_bit_range(sample, user):
    dim = (grey_pattern(300, 400, np.uint16, seed=3) // 64).astype(np.uint16)  # uses only 0..1023
    image = ingest_bytes(tiff_bytes(dim), "dim16.tif", sample, user).image
    with image.derivative.open("rb") as handle:
        pixels = np.asarray(Image.open(handle))
    assert image.bit_depth == 16
    assert pixels.max() - pixels.min() > 200


def test_fei_metadata_tiff(sample, user):
    data = tiff_with_text_tag(34682, FEI_INI)
    image = ingest_bytes(data, "fei.tif", sample, user).image
    assert image.vendor == "Thermo Fisher (FEI)"
    assert image.instrument_model == "Quanta 250 FEG"
    assert image.accelerating_voltage_kv == pytest.approx(15.0)
    assert image.working_distance_mm == pytest.approx(10.1)
    assert image.pixel_size_nm == pytest.approx(25.0)
    assert image.magnification == pytest.approx(5000.0)  # 0.128 m canvas / 25.6 um field width
    assert image.detector == "ETD"
    assert image.acquired_at.isoformat() == "2024-03-14T14:15:09+00:00"
    assert image.metadata["fei"]["Scan"]["PixelWidth"] == pytest.approx(2.5e-08)


def test_zeiss_metadata_tiff(sample, user):
    data = tiff_with_text_tag(34118, ZEISS_CZ_SEM)
    image = ingest_bytes(data, "zeiss.tif", sample, user).image
    assert (image.vendor, image.instrument_model, image.detector) == ("Zeiss", "Sigma 300", "SE2")
    assert image.accelerating_voltage_kv == pytest.approx(5.0)
    assert image.working_distance_mm == pytest.approx(4.9)
    assert image.magnification == pytest.approx(20000.0)
    assert image.pixel_size_nm == pytest.approx(4.4)
    assert image.acquired_at.isoformat() == "2022-02-07T16:05:33+00:00"
    assert image.metadata["zeiss"]["ap_mag"] == ["Mag", "20.00 K X"]


def test_files_without_instrument_metadata_get_empty_typed_values(sample, user):
    filename, data, _ = ACCEPTED["png_grey8"]
    image = ingest_bytes(data, filename, sample, user).image
    assert (image.vendor, image.instrument_model, image.detector) == ("", "", "")
    assert image.accelerating_voltage_kv is None and image.magnification is None and image.acquired_at is None
    assert image.metadata == {}


# --- refusals --------------------------------------------------------------------------------


def _truncated(data: bytes, keep: float = 0.6) -> bytes:
    return data[: int(len(data) * keep)]


_GREY = grey_pattern(300, 400)
REJECTED = {
    "empty": ("empty.tif", b"", "empty"),
    "text": ("notes.txt", b"sample 12, polished, 5 kV\n" * 20, "not_an_image"),
    "text_as_tif": ("notes.tif", b"sample 12, polished, 5 kV\n" * 20, "disguised"),
    "html_as_tif": ("page.tif", b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>", "disguised"),
    "svg_as_png": ("logo.png", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>', "disguised"),
    "svg_plain_as_png": ("logo.png", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "disguised"),
    "pdf_as_jpg": ("scan.jpg", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "disguised"),
    "zip_as_tif": ("stack.tif", b"PK\x03\x04" + b"\x00" * 100, "disguised"),
    "script_as_bmp": ("x.bmp", b"#!/bin/sh\nrm -rf /\n", "disguised"),
    "pdf": ("report.pdf", b"%PDF-1.4\n" + b"\x00" * 50, "not_an_image"),
    "random_binary": ("blob.dat", bytes(range(256)) * 8, "not_an_image"),
    "truncated_png": ("cut.png", _truncated(pillow_bytes(Image.fromarray(_GREY), "PNG")), "truncated"),
    "truncated_jpeg": ("cut.jpg", _truncated(pillow_bytes(Image.fromarray(_GREY), "JPEG")), "truncated"),
    "truncated_tiff": ("cut.tif", _truncated(tiff_bytes(_GREY)), "truncated"),
    "truncated_tiff_zlib": ("cut.tif", _truncated(tiff_bytes(_GREY, compression="zlib"), 0.9), "truncated"),
    "png_bomb": ("bomb.png", png_declaring(200_000, 200_000), "too_many_pixels"),
    "png_bomb_just_over": ("bomb.png", png_declaring(11_000, 10_000), "too_many_pixels"),
    "tiff_bomb": ("bomb.tif", tiff_declaring(300_000, 300_000), "too_many_pixels"),
    "gif": ("anim.gif", pillow_bytes(Image.fromarray(_GREY), "GIF"), "unsupported_format"),
    "webp": ("photo.webp", pillow_bytes(Image.fromarray(_GREY), "WEBP"), "unsupported_format"),
    "webp_as_png": ("photo.png", pillow_bytes(Image.fromarray(_GREY), "WEBP"), "unsupported_format"),
}


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_rejected_input_gives_code_and_message_and_stores_nothing(name, sample, user):
    filename, data, code = REJECTED[name]
    with pytest.raises(IngestError) as caught:
        ingest_bytes(data, filename, sample, user)
    assert caught.value.code == code
    assert caught.value.filename == filename
    assert len(caught.value.message) > 15 and "Traceback" not in caught.value.message
    assert SEMImage.objects.count() == 0
    assert media_files() == []


def test_oversize_file_is_refused_while_streaming(settings, sample, user):
    settings.SEM_MAX_UPLOAD_BYTES = 10_000
    data = tiff_bytes(grey_pattern(300, 400))  # 120 kB
    with pytest.raises(IngestError) as caught:
        ingest_bytes(data, "big.tif", sample, user)
    assert caught.value.code == "too_large"
    assert "9.8 KiB" in caught.value.message
    assert SEMImage.objects.count() == 0 and media_files() == []


def test_pixel_limit_is_configurable(settings, sample, user):
    settings.SEM_MAX_IMAGE_PIXELS = 400 * 300 - 1
    filename, data, _ = ACCEPTED["png_grey8"]
    with pytest.raises(IngestError) as caught:
        ingest_bytes(data, filename, sample, user)
    assert caught.value.code == "too_many_pixels"
    assert "400x300" in caught.value.message
    settings.SEM_MAX_IMAGE_PIXELS = 400 * 300
    assert ingest_bytes(data, filename, sample, user).created


def test_png_with_bad_checksum_is_refused(sample, user):
    data = bytearray(pillow_bytes(Image.fromarray(_GREY), "PNG"))
    data[60] ^= 0xFF  # inside the first IDAT chunk: CRC no longer matches
    with pytest.raises(IngestError) as caught:
        ingest_bytes(bytes(data), "flipped.png", sample, user)
    assert caught.value.code in {"corrupt", "truncated"}
    assert SEMImage.objects.count() == 0 and media_files() == []


# --- atomicity -------------------------------------------------------------------------------


def test_failure_while_making_the_derivative_leaves_nothing(monkeypatch, sample, user, settings):
    settings.SEM_DECODE_IN_CHILD = False  # the patch below exists in this process only

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ingest_examine, "make_derivative", broken)
    with pytest.raises(RuntimeError):
        ingest_bytes(ACCEPTED["tiff_grey16"][1], "x.tif", sample, user)
    assert SEMImage.objects.count() == 0 and media_files() == []


def test_failure_after_files_were_written_removes_them_and_the_row(monkeypatch, sample, user):
    written_before_failure = []

    def broken_label(image, category, **kwargs):
        # The image's three files (the marker in .ingesting/ says an ingestion is in progress).
        written_before_failure.extend(path for path in media_files() if ".ingesting" not in path.parts)
        raise RuntimeError("label service down")

    monkeypatch.setattr(ingest_store, "set_label", broken_label)
    category = Category.objects.get(folder_name="Powder")
    with pytest.raises(RuntimeError):
        ingest_bytes(ACCEPTED["png_grey16"][1], "x.png", sample, user, label=category)
    assert len(written_before_failure) == 3  # the failure really happened after the files were stored
    assert SEMImage.objects.count() == 0 and Label.objects.count() == 0
    assert media_files() == []


def test_failure_saving_the_row_leaves_no_files(monkeypatch, sample, user):
    def broken_save(self, *args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(SEMImage, "save", broken_save)
    with pytest.raises(RuntimeError):
        ingest_bytes(ACCEPTED["jpeg"][1], "x.jpg", sample, user)
    assert media_files() == []


# --- dedup, idempotency, labels, queueing ---------------------------------------------------


def test_same_bytes_return_the_existing_image(sample, user):
    filename, data, _ = ACCEPTED["tiff_grey8"]
    first = ingest_bytes(data, filename, sample, user)
    again = ingest_bytes(data, "renamed copy.tif", sample, user)
    assert first.created and not again.created
    assert again.image.pk == first.image.pk and again.image.original_filename == filename
    assert SEMImage.objects.count() == 1 and len(media_files()) == 3


def test_idempotency_key_returns_the_first_result_even_for_other_bytes(sample, user):
    first = ingest_bytes(ACCEPTED["png_grey8"][1], "a.png", sample, user, idempotency_key="req-42")
    retry = ingest_bytes(ACCEPTED["bmp"][1], "b.bmp", sample, user, idempotency_key="req-42")
    assert first.created and not retry.created and retry.image.pk == first.image.pk
    assert SEMImage.objects.get().idempotency_key == "req-42"


def test_too_long_idempotency_key_is_refused(sample, user):
    with pytest.raises(IngestError) as caught:
        ingest_bytes(ACCEPTED["png_grey8"][1], "a.png", sample, user, idempotency_key="k" * 201)
    assert caught.value.code == "invalid_idempotency_key"


def test_race_on_identical_bytes_returns_the_winner_and_cleans_up(monkeypatch, sample, user):
    """Two uploads of the same bytes both pass the sha256 look-up; the second loses on the unique index."""
    filename, data, _ = ACCEPTED["png_grey16"]
    winner = ingest_bytes(data, filename, sample, user).image
    files_of_winner = media_files()
    real_lookup = ingest_upload.find_by_sha256
    lookups = []

    def lookup_that_misses_the_first_time(sha):
        lookups.append(sha)
        return None if len(lookups) == 1 else real_lookup(sha)

    monkeypatch.setattr(ingest_upload, "find_by_sha256", lookup_that_misses_the_first_time)
    result = ingest_bytes(data, "again.png", sample, user)
    assert not result.created and result.image.pk == winner.pk
    assert media_files() == files_of_winner  # the loser's files were removed, the winner's kept
    assert SEMImage.objects.count() == 1 and len(lookups) == 2


def test_label_is_recorded_in_the_same_transaction(sample, user):
    category = Category.objects.get(folder_name="Nanowires")
    image = ingest_bytes(
        ACCEPTED["jpeg"][1], "nw.jpg", sample, user, label=category, label_source=Label.Source.API
    ).image
    label = Label.objects.get(image=image)
    assert (label.category, label.source, label.created_by, label.is_current) == (category, "api", user, True)
    assert SEMImage.objects.get(pk=image.pk).curated_category == category


def test_classification_is_queued_only_after_commit(monkeypatch, sample, user, django_capture_on_commit_callbacks):
    queued = []
    monkeypatch.setattr(
        "portal.services.delivery.queueing.enqueue_classification", lambda ids: queued.append(list(ids))
    )
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        image = ingest_bytes(ACCEPTED["bmp"][1], "q.bmp", sample, user).image
    assert queued == []  # not before commit
    for callback in callbacks:
        callback()
    assert queued == [[image.pk]]


def test_queue_failure_after_commit_does_not_lose_the_image(
    monkeypatch, sample, user, django_capture_on_commit_callbacks
):
    def broker_down(ids):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr("portal.services.delivery.queueing.enqueue_classification", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        result = ingest_bytes(ACCEPTED["bmp"][1], "q.bmp", sample, user)
    assert SEMImage.objects.filter(pk=result.image.pk, status=SEMImage.Status.PENDING).exists()


def test_django_uploaded_file_and_path_like_names(sample, user):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("C:\\Users\\lab\\scan 01.tif", ACCEPTED["tiff_rgb"][1], content_type="image/tiff")
    image = ingest_file(upload, filename=upload.name, sample=sample, uploaded_by=user).image
    assert image.original_filename == "scan 01.tif"
    assert image.format == "TIFF"


def test_name_does_not_matter_when_the_content_is_a_real_image(sample, user):
    image = ingest_bytes(ACCEPTED["png_grey8"][1], "mislabelled.tif", sample, user).image
    assert image.format == "PNG" and image.extension == ".png"
    assert image.original.name.endswith(".png")


def test_ingestion_code_never_imports_torch_or_fastai():
    """Ingestion runs on the web request path: heavy ML libraries must stay out of the process."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, django; django.setup(); "
        "import portal.services.ingestion.ingest, portal.services.ingestion.folder_import, classifier.synthetic; "
        "import portal.management.commands.import_folder, portal.management.commands.make_demo_data; "
        "heavy = sorted(m for m in ('torch', 'fastai', 'torchvision') if m in sys.modules); "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        env={**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "portal.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
