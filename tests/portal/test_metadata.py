"""Instrument metadata: real vendor files checked by hand against their raw tags, built files per vendor,
and malformed metadata that must never break an upload."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pytest

from portal.services.ingestion.metadata import MAX_TAG_BYTES, extract_metadata
from portal.services.ingestion.metadata_values import parse_magnification
from portal.services.ingestion.metadata_vendors import (
    VENDOR_FEI,
    VENDOR_HITACHI,
    VENDOR_JEOL,
    VENDOR_TESCAN,
    VENDOR_ZEISS,
)
from tests.portal.sem_builders import (
    FEI_INI,
    HITACHI_TXT,
    JEOL_TXT,
    TESCAN_INI,
    ZEISS_CZ_SEM,
    grey_pattern,
    pillow_bytes,
    tiff_bytes,
    tiff_with_text_tag,
)


def utc(*parts) -> datetime:
    return datetime(*parts, tzinfo=UTC)


# file: (vendor, model, kV, WD mm, magnification, pixel nm, detector, acquired at). Values read by hand
# from the raw tags: FEI HV [V], WD [m], Scan.PixelWidth [m], mag = Image.MagCanvasRealWidth / HFW;
# Zeiss EHT [kV], WD [mm], Mag "K X", Image Pixel Size (or Pixel Size scaled from a 1024-wide frame).
REAL_VENDOR_FILES = {
    "FEBID_A3_50g1T_001.tif": (
        VENDOR_FEI,
        "Helios NanoLab 650",
        5.0,
        4.47781,
        50000,
        2.69792,
        "TLD",
        utc(2023, 5, 22, 11, 44, 16),
    ),
    "FEBID_D1_49b1T_001.tif": (
        VENDOR_FEI,
        "Helios NanoLab 650",
        5.0,
        4.47332,
        35000,
        3.85417,
        "TLD",
        utc(2023, 5, 22, 12, 29, 13),
    ),
    "FEI-Helios-Ebeam-16bits.tif": (
        VENDOR_FEI,
        "Helios NanoLab 660",
        5.0,
        4.03466,
        120,
        3372.4,
        "ETD",
        utc(2016, 6, 13, 17, 6, 40),
    ),
    "FEI-Helios-Ebeam-8bits.tif": (
        VENDOR_FEI,
        "Helios NanoLab 660",
        5.0,
        4.03466,
        120,
        3372.4,
        "ETD",
        utc(2016, 6, 13, 17, 6, 40),
    ),
    "ZEISS_SEM_multipage.tif": (
        VENDOR_ZEISS,
        "Auriga 60",
        1.8,
        4.5,
        4530,
        12.33,
        "InLens",
        utc(2016, 4, 18, 22, 42, 2),
    ),
    "test_tiff_Zeiss_SEM_1k.tif": (
        VENDOR_ZEISS,
        "Merlin",
        25.0,
        14.808,
        105,
        2615.0,
        "HE-SE2",
        utc(2015, 12, 23, 9, 40, 32),
    ),
    # Only "Pixel Size" (5.825 nm for a 1024-wide frame) in this file: 11.65 nm at 512 pixels wide,
    # the value HyperSpy/RosettaSciIO also derives for this file.
    "test_tiff_Zeiss_SEM_512pix.tif": (
        VENDOR_ZEISS,
        "ULTRA 55",
        5.0,
        3.9,
        50000,
        11.65,
        "InLens",
        utc(2018, 9, 25, 8, 20, 42),
    ),
}


@pytest.mark.parametrize("name", sorted(REAL_VENDOR_FILES))
def test_real_vendor_files(name, sem_vendor_tiff_dir):
    vendor, model, kv, wd, mag, pixel, detector, acquired = REAL_VENDOR_FILES[name]
    meta = extract_metadata(sem_vendor_tiff_dir / name)
    assert (meta["vendor"], meta["instrument_model"], meta["detector"]) == (vendor, model, detector)
    assert meta["accelerating_voltage_kv"] == pytest.approx(kv)
    assert meta["working_distance_mm"] == pytest.approx(wd)
    assert meta["magnification"] == pytest.approx(mag, rel=1e-4)
    assert meta["pixel_size_nm"] == pytest.approx(pixel, rel=1e-4)
    assert meta["acquired_at"] == acquired
    json.dumps(meta["raw"], allow_nan=False)  # storable as jsonb


def test_real_navcam_file_keeps_what_is_valid(sem_vendor_tiff_dir):
    """The navigation camera image has blank HV and a negative placeholder WD: those must be empty."""
    meta = extract_metadata(sem_vendor_tiff_dir / "FEI-Helios-navcam.tif")
    assert (meta["vendor"], meta["instrument_model"], meta["detector"]) == (VENDOR_FEI, "Helios NanoLab 660", "Nav-Cam")
    assert meta["accelerating_voltage_kv"] is None
    assert meta["working_distance_mm"] is None
    assert meta["raw"]["fei"]["Stage"]["WorkingDistance"] == pytest.approx(-1.2e-05)


def test_zeiss_raw_keeps_unknown_fields(sem_vendor_tiff_dir):
    meta = extract_metadata(sem_vendor_tiff_dir / "test_tiff_Zeiss_SEM_1k.tif")
    assert len(meta["raw"]["zeiss"]) > 700
    assert meta["raw"]["zeiss"]["ap_beam_time"] == ["Beam Time", 2283.28, "Hours"]


def write(tmp_path, data: bytes, name: str = "f.tif"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_tescan_header_in_tag_50431(tmp_path):
    meta = extract_metadata(write(tmp_path, tiff_with_text_tag(50431, TESCAN_INI, dtype="B")))
    assert (meta["vendor"], meta["instrument_model"], meta["detector"]) == (VENDOR_TESCAN, "MIRA3 LMH", "SE")
    assert meta["accelerating_voltage_kv"] == pytest.approx(10.0)
    assert meta["working_distance_mm"] == pytest.approx(6.52)
    assert meta["magnification"] == pytest.approx(25000)
    assert meta["pixel_size_nm"] == pytest.approx(8.5)
    assert meta["acquired_at"] == utc(2021, 6, 30, 9, 41, 12)


def test_jeol_text_embedded_in_image_description(tmp_path):
    data = tiff_bytes(grey_pattern(64, 64), description=JEOL_TXT)
    meta = extract_metadata(write(tmp_path, data))
    assert (meta["vendor"], meta["instrument_model"], meta["detector"]) == (VENDOR_JEOL, "JSM-7600F", "LEI")
    assert meta["accelerating_voltage_kv"] == pytest.approx(15.0)
    assert meta["working_distance_mm"] == pytest.approx(8.0)
    assert meta["magnification"] == pytest.approx(8000)
    assert meta["pixel_size_nm"] == pytest.approx(2000 / 160)  # 2 um scale bar over 160 pixels
    assert meta["raw"]["embedded_in"] == "ImageDescription"


def test_hitachi_text_embedded_in_image_description(tmp_path):
    data = tiff_bytes(grey_pattern(64, 64), description=HITACHI_TXT)
    meta = extract_metadata(write(tmp_path, data))
    assert (meta["vendor"], meta["instrument_model"], meta["detector"]) == (VENDOR_HITACHI, "SU8230", "SE(U)")
    assert meta["accelerating_voltage_kv"] == pytest.approx(3.0)
    assert meta["working_distance_mm"] == pytest.approx(8.1)
    assert meta["magnification"] == pytest.approx(50000)
    assert meta["pixel_size_nm"] == pytest.approx(1.984)
    assert meta["acquired_at"] == utc(2020, 2, 17, 11, 12, 13)


def test_zeiss_values_in_other_units_are_converted(tmp_path):
    text = (
        ZEISS_CZ_SEM.replace("EHT = 5.00 kV", "EHT = 5000 Volt")
        .replace("WD = 4.9 mm", "WD = 0.0049 m")
        .replace("Image Pixel Size = 4.4 nm", "Image Pixel Size = 1.2 µm")
    )
    meta = extract_metadata(write(tmp_path, tiff_with_text_tag(34118, text, dtype="B", encoding="cp1252")))
    assert meta["accelerating_voltage_kv"] == pytest.approx(5.0)
    assert meta["working_distance_mm"] == pytest.approx(4.9)
    assert meta["pixel_size_nm"] == pytest.approx(1200)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("20.00 K X", 20000),
        ("105 X", 105),
        ("x1,000", 1000),
        ("1.5 M X", 1.5e6),
        ("250x", 250),
        ("4.53 K X", 4530),
        ("lots", None),
        ("", None),
        ("K X", None),
    ],
)
def test_magnification_formats(text, expected):
    value = parse_magnification(text)
    assert value == (pytest.approx(expected) if expected is not None else None)


def test_plain_tiff_and_non_tiff_give_empty_typed_values(tmp_path):
    for data, name in (
        (tiff_bytes(grey_pattern(32, 32)), "plain.tif"),
        (pillow_bytes(__import__("PIL.Image").Image.new("L", (8, 8)), "PNG"), "x.png"),
    ):
        meta = extract_metadata(write(tmp_path, data, name))
        assert meta == {
            "vendor": "",
            "instrument_model": "",
            "accelerating_voltage_kv": None,
            "working_distance_mm": None,
            "magnification": None,
            "pixel_size_nm": None,
            "detector": "",
            "acquired_at": None,
            "raw": {},
        }


def test_malformed_fei_values_are_dropped_not_fatal(tmp_path):
    text = (
        '[System]\nSystemType=Odd "Scope"\n[Beam]\nHV=abc\nBeam=EBeam\n[EBeam]\nWD=nan\nHV=-5\n'
        "[Scan]\nPixelWidth=inf\n[User]\nDate=99/99/9999\nTime=25:61:00\n[Image]\nMagCanvasRealWidth=0\n"
        "garbage line without equals\n[Broken\n=\n\x00\x00padding after the terminating NUL"
    )
    meta = extract_metadata(write(tmp_path, tiff_with_text_tag(34682, text, dtype="B")))
    assert meta["vendor"] == VENDOR_FEI and meta["instrument_model"] == "Odd Scope"
    assert all(
        meta[key] is None
        for key in ("accelerating_voltage_kv", "working_distance_mm", "pixel_size_nm", "magnification", "acquired_at")
    )
    json.dumps(meta["raw"], allow_nan=False)
    assert "\x00" not in json.dumps(meta["raw"])


def test_huge_vendor_tag_is_ignored(tmp_path):
    text = FEI_INI + "[Junk]\n" + "".join(f"K{i}={'x' * 90}\n" for i in range(MAX_TAG_BYTES // 90 + 10))
    meta = extract_metadata(write(tmp_path, tiff_with_text_tag(34682, text)))
    assert meta["vendor"] == "" and meta["raw"] == {}


def test_many_keys_are_bounded_in_raw(tmp_path):
    text = FEI_INI + "[Junk]\n" + "".join(f"K{i}=1\n" for i in range(20000))
    meta = extract_metadata(write(tmp_path, tiff_with_text_tag(34682, text)))
    assert meta["vendor"] == VENDOR_FEI and meta["accelerating_voltage_kv"] == pytest.approx(15.0)
    assert len(meta["raw"]["fei"]["Junk"]) <= 4000


def test_corrupt_tiff_structure_does_not_raise(tmp_path):
    meta = extract_metadata(write(tmp_path, b"II*\x00\xff\xff\xff\x7f" + b"\x00" * 20))
    assert meta["vendor"] == "" and "error" in meta["raw"]


@pytest.mark.django_db
def test_nul_and_nan_metadata_survive_postgres_jsonb(sample, user):
    from portal.services.ingestion.ingest import ingest_file

    text = TESCAN_INI.replace("Device=MIRA", "Device=MI\x00RA") + "Odd=nan\n"
    image = ingest_file(
        io.BytesIO(tiff_with_text_tag(50431, text, dtype="B")), filename="nul.tif", sample=sample, uploaded_by=user
    ).image
    image.refresh_from_db()
    assert image.vendor == VENDOR_TESCAN
    assert image.metadata["tescan"]["MAIN"]["Device"] == "MIRA"
    assert image.metadata["tescan"]["SEM"]["Odd"] == "nan"
