"""Real SEM files from ../shared: every real image ingests; vendor TIFFs keep their metadata."""

from __future__ import annotations

import csv

import pytest
from PIL import Image

from portal.models import SEMImage
from portal.services.ingestion.ingest import ingest_file
from portal.services.ingestion.metadata_vendors import VENDOR_FEI, VENDOR_ZEISS

pytestmark = pytest.mark.django_db


def test_every_real_sem_image_is_ingested(sem_real_dir, sample, user):
    manifest = {row["file"]: row for row in csv.DictReader(open(sem_real_dir / "manifest.csv"))}
    with_bar = []
    for relative, row in sorted(manifest.items()):
        with open(sem_real_dir / relative, "rb") as handle:
            result = ingest_file(handle, filename=relative.split("/")[-1], sample=sample, uploaded_by=user)
        image = result.image
        assert result.created, relative
        assert image.sha256 == row["sha256"], relative  # byte-for-byte original
        assert (image.width, image.height) == (int(row["width"]), int(row["height"])), relative
        with image.derivative.open("rb") as stored:
            derivative = Image.open(stored)
            derivative.load()
        assert derivative.mode == "L" and min(derivative.size) == 256, relative
        if image.databar_rows:
            with_bar.append(relative)
    assert SEMImage.objects.count() == len(manifest) >= 64  # the README says 64; the manifest lists 65
    # The lung-cell PNGs are published without a data bar: cropping them would destroy specimen.
    lung_cells = [name for name in manifest if "lungcells" in name]
    assert len(lung_cells) == 18
    assert not [name for name in with_bar if name in lung_cells]
    print(f"\ndata bar detected in {len(with_bar)} of {len(manifest)} real images")


@pytest.mark.parametrize(
    "name, vendor, model, kv, detector",
    [
        ("FEBID_A3_50g1T_001.tif", VENDOR_FEI, "Helios NanoLab 650", 5.0, "TLD"),
        ("FEI-Helios-Ebeam-16bits.tif", VENDOR_FEI, "Helios NanoLab 660", 5.0, "ETD"),
        ("ZEISS_SEM_multipage.tif", VENDOR_ZEISS, "Auriga 60", 1.8, "InLens"),
        ("test_tiff_Zeiss_SEM_1k.tif", VENDOR_ZEISS, "Merlin", 25.0, "HE-SE2"),
        ("test_tiff_Zeiss_SEM_512pix.tif", VENDOR_ZEISS, "ULTRA 55", 5.0, "InLens"),
    ],
)
def test_real_vendor_tiffs_are_ingested_with_typed_metadata(
    name, vendor, model, kv, detector, sem_vendor_tiff_dir, sample, user
):
    with open(sem_vendor_tiff_dir / name, "rb") as handle:
        image = ingest_file(handle, filename=name, sample=sample, uploaded_by=user).image
    image.refresh_from_db()
    assert (image.vendor, image.instrument_model, image.detector) == (vendor, model, detector)
    assert image.accelerating_voltage_kv == pytest.approx(kv)
    assert image.working_distance_mm and image.magnification and image.pixel_size_nm and image.acquired_at
    assert image.metadata  # everything parsed is kept
    if name == "ZEISS_SEM_multipage.tif":
        assert image.page_count == 2
