"""Each vendor's metadata, read into the typed fields (see portal.services.ingestion.metadata for where each is found).

A parser returns the typed values it found, in the portal's units, and its vendor's own record under
"raw"; metadata.finalise checks them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from portal.services.ingestion.metadata_values import (
    MAX_RAW_ITEMS,
    clean_text,
    first_number,
    length_nm,
    number_and_unit,
    parse_datetime,
    parse_magnification,
    scaled,
    voltage_kv,
)

VENDOR_FEI = "Thermo Fisher (FEI)"
VENDOR_ZEISS = "Zeiss"
VENDOR_TESCAN = "TESCAN"
VENDOR_JEOL = "JEOL"
VENDOR_HITACHI = "Hitachi"


def parse_fei(sections: dict[str, Any], width: int | None) -> dict[str, Any]:
    def get(section: str, key: str) -> Any:
        block = sections.get(section)
        return block.get(key) if isinstance(block, dict) else None

    column = clean_text(get("Beam", "Beam")) or "EBeam"  # EBeam, or IBeam for FIB images
    scan = clean_text(get("Beam", "Scan")) or "EScan"
    hfw_m = first_number(get("Scan", "HorFieldsize"), get(scan, "HorFieldsize"), get(column, "HFW"))
    canvas_m = first_number(get("Image", "MagCanvasRealWidth"))
    pixel_m = first_number(get("Scan", "PixelWidth"), get(scan, "PixelWidth"))
    if pixel_m is None and hfw_m and width:
        pixel_m = hfw_m / width
    return {
        "vendor": VENDOR_FEI,
        "instrument_model": clean_text(get("System", "SystemType")),
        "accelerating_voltage_kv": scaled(first_number(get(column, "HV"), get("Beam", "HV")), 1e-3),
        "working_distance_mm": scaled(first_number(get(column, "WD"), get("Stage", "WorkingDistance")), 1e3),
        "magnification": canvas_m / hfw_m if canvas_m and hfw_m else None,
        "pixel_size_nm": scaled(pixel_m, 1e9),
        "detector": clean_text(get("Detectors", "Name")),
        "acquired_at": parse_datetime(get("User", "Date"), get("User", "Time")),
        "raw": {"fei": sections},
    }


ZEISS_REFERENCE_WIDTH = 1024  # "Pixel Size" (ap_pixel_size) is quoted for a 1024-pixel-wide frame


def parse_zeiss(entries: dict[str, Any], width: int | None) -> dict[str, Any]:
    def value_and_unit(key: str) -> tuple[Any, str]:
        entry = entries.get(key)
        if not isinstance(entry, tuple) or len(entry) < 2:
            return None, ""
        return entry[1], str(entry[2]) if len(entry) > 2 else ""

    pixel_nm = length_nm(*value_and_unit("ap_image_pixel_size"))
    if pixel_nm is None:
        reference_nm = length_nm(*value_and_unit("ap_pixel_size"))
        if reference_nm is not None and width:
            pixel_nm = reference_nm * ZEISS_REFERENCE_WIDTH / width
    serial = clean_text(value_and_unit("sv_serial_number")[0])
    detector = value_and_unit("dp_detector_type")[0] or value_and_unit("dp_detector_channel")[0]
    date, _ = value_and_unit("ap_date")
    time, _ = value_and_unit("ap_time")
    raw = {key: list(entry) if isinstance(entry, tuple) else entry for key, entry in entries.items() if key}
    return {
        "vendor": VENDOR_ZEISS,
        "instrument_model": _zeiss_model_from_serial(serial),
        "accelerating_voltage_kv": first_number(
            voltage_kv(*value_and_unit("ap_actualkv")), voltage_kv(*value_and_unit("ap_manualkv"))
        ),
        "working_distance_mm": scaled(length_nm(*value_and_unit("ap_wd"), default_unit="mm"), 1e-6),
        "magnification": parse_magnification(*value_and_unit("ap_mag")),
        "pixel_size_nm": pixel_nm,
        "detector": clean_text(detector),
        "acquired_at": parse_datetime(date, time),
        "raw": {"zeiss": raw, "zeiss_serial_number": serial},
    }


def _zeiss_model_from_serial(serial: str) -> str:
    """'Auriga 60-46-17' -> 'Auriga 60', 'Merlin-61-08' -> 'Merlin' (serial = model-nn-nn)."""
    match = re.match(r"^(.*?)[-\s]+\d+-\d+$", serial)
    return (match.group(1) if match else serial).strip()


def looks_like_tescan(text: str) -> bool:
    return bool(re.search(r"^\s*\[MAIN\]", text, re.M)) and "TESCAN" in text.upper()


def looks_like_jeol(text: str) -> bool:
    return bool(re.search(r"^\s*\$+CM_(MAG|FORMAT|INSTRUMENT|ACCEL_VOLT)\b", text, re.M))


def looks_like_hitachi(text: str) -> bool:
    return "[SemImageFile]" in text or (
        bool(re.search(r"^\s*InstructName\s*=", text, re.M)) and bool(re.search(r"^\s*Magnification\s*=", text, re.M))
    )


def _parse_ini(text: str) -> dict[str, dict[str, str]]:
    """Case-preserving 'key=value' pairs per [section]; tolerant of anything else."""
    sections: dict[str, dict[str, str]] = {}
    current = sections.setdefault("", {})
    for line in text.splitlines()[:MAX_RAW_ITEMS]:
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1].strip(), {})
        elif "=" in line:
            key, value = line.split("=", 1)
            current[key.strip()] = value.strip()
    return {name: values for name, values in sections.items() if values}


@dataclass(frozen=True)
class _IniLayout:
    """Where a vendor that writes INI text (TESCAN, Hitachi) keeps each value: lower-case keys, the first
    present one wins, and the unit of a number written without one."""

    vendor: str
    raw_key: str
    models: tuple[str, ...]
    detectors: tuple[str, ...]
    voltage: tuple[str, str]  # (key, default unit)
    working_distance: tuple[str, str]
    pixel_size: tuple[str, str]


# TESCAN writes SI units: HV in volts, WD and pixel size in metres.
_TESCAN = _IniLayout(
    VENDOR_TESCAN,
    "tescan",
    ("devicemodel", "device"),
    ("detector", "detector0"),
    ("hv", "V"),
    ("wd", "m"),
    ("pixelsizex", "m"),
)
_HITACHI = _IniLayout(
    VENDOR_HITACHI,
    "hitachi",
    ("instructname", "instrument name"),
    ("signalname", "detector"),
    ("acceleratingvoltage", "V"),
    ("workingdistance", "um"),
    ("pixelsize", "nm"),
)


def parse_tescan(text: str) -> dict[str, Any]:
    return _parse_ini_vendor(text, _TESCAN)


def parse_hitachi(text: str) -> dict[str, Any]:
    return _parse_ini_vendor(text, _HITACHI)


def _parse_ini_vendor(text: str, layout: _IniLayout) -> dict[str, Any]:
    sections = _parse_ini(text)
    flat = {key.lower(): value for block in sections.values() for key, value in block.items()}

    def first(keys: tuple[str, ...]) -> str:
        return next((flat[key] for key in keys if flat.get(key)), "")

    def number(where: tuple[str, str], convert) -> float | None:
        key, default_unit = where
        return convert(flat.get(key), default_unit=default_unit)

    return {
        "vendor": layout.vendor,
        "instrument_model": first(layout.models),
        "accelerating_voltage_kv": number(layout.voltage, voltage_kv),
        "working_distance_mm": scaled(number(layout.working_distance, length_nm), 1e-6),
        "magnification": parse_magnification(flat.get("magnification")),
        "pixel_size_nm": number(layout.pixel_size, length_nm),
        "detector": first(layout.detectors),
        "acquired_at": parse_datetime(flat.get("date"), flat.get("time")),
        "raw": {layout.raw_key: sections},
    }


def parse_jeol(text: str) -> dict[str, str | Any]:
    fields: dict[str, str] = {}
    for line in text.splitlines()[:MAX_RAW_ITEMS]:
        match = re.match(r"^\s*\$+([A-Z0-9_]+)\s*(.*)$", line)
        if match:
            fields[match.group(1)] = match.group(2).strip()
    return {
        "vendor": VENDOR_JEOL,
        "instrument_model": fields.get("CM_INSTRUMENT", ""),
        "accelerating_voltage_kv": voltage_kv(fields.get("CM_ACCEL_VOLT"), default_unit="kV"),
        "working_distance_mm": scaled(
            length_nm(fields.get("SM_WD") or fields.get("SM_WORKING_DISTANCE"), default_unit="mm"), 1e-6
        ),
        "magnification": parse_magnification(fields.get("CM_MAG")),
        "pixel_size_nm": _jeol_pixel_size_nm(fields),
        "detector": fields.get("CM_SIGNAL") or fields.get("CM_DETECTOR") or "",
        "acquired_at": parse_datetime(fields.get("CM_DATE"), fields.get("CM_TIME")),
        "raw": {"jeol": fields},
    }


def _jeol_pixel_size_nm(fields: dict[str, str]) -> float | None:
    """JEOL gives the scale bar: its length in pixels (SM_MICRON_BAR) and label (SM_MICRON_MARKER)."""
    direct = length_nm(fields.get("SM_PIXEL_SIZE") or fields.get("CM_PIXEL_SIZE"), default_unit="nm")
    if direct is not None:
        return direct
    bar_pixels, _ = number_and_unit(fields.get("SM_MICRON_BAR"))
    marker_nm = length_nm(fields.get("SM_MICRON_MARKER"), default_unit="um")
    if bar_pixels and marker_nm:
        return marker_nm / bar_pixels
    return None
