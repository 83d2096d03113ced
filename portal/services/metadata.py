"""Instrument metadata from SEM files (tifffile + plain text parsing; no heavy libraries).

Every vendor stores its acquisition parameters differently and in its own units:

* FEI / Thermo Fisher: tag 34682 (or 34680), an ini text; SI units (HV in volts, WD and pixel
  width in metres). Magnification is not stored; it is the magnification canvas width divided by
  the horizontal field width, which is how the instrument computes the number on its data bar.
* Zeiss SmartSEM: tag 34118 (CZ_SEM), "KEY / Name = value unit" pairs, units given per value.
  "Pixel Size" refers to a 1024-pixel-wide frame; "Image Pixel Size" to the stored image.
* TESCAN: tag 50431, an ini text with [MAIN] and [SEM] sections in SI units.
* JEOL ("$CM_MAG 10000") and Hitachi ("[SemImageFile] Magnification=...") normally write sidecar
  text files; when such text is embedded in the TIFF (ImageDescription etc.) it is recognised.

`extract_metadata` never raises: a file with weird, huge or malformed metadata yields empty typed
values plus whatever could be kept safely in ``raw`` (JSON-serialisable, storable in PostgreSQL).
"""

from __future__ import annotations

import logging
import math
import os
import re
from datetime import UTC, datetime
from typing import Any

logger = logging.getLogger(__name__)

VENDOR_FEI = "Thermo Fisher (FEI)"
VENDOR_ZEISS = "Zeiss"
VENDOR_TESCAN = "TESCAN"
VENDOR_JEOL = "JEOL"
VENDOR_HITACHI = "Hitachi"

TAG_FEI_SFEG = 34680
TAG_FEI_HELIOS = 34682
TAG_ZEISS_CZ_SEM = 34118
TAG_TESCAN = 50431
# Baseline text tags where JEOL/Hitachi/TESCAN text is sometimes embedded by export tools.
TEXT_TAGS = {270: "ImageDescription", 305: "Software", 271: "Make", 272: "Model", 37510: "UserComment"}

# A vendor tag larger than this is not metadata we can trust or want in the database.
MAX_TAG_BYTES = 1024 * 1024
# Limits for what is kept in `raw` (one JSON column per image).
MAX_RAW_STRING = 2000
MAX_RAW_ITEMS = 4000
MAX_RAW_DEPTH = 6

TYPED_FIELDS = (
    "vendor",
    "instrument_model",
    "accelerating_voltage_kv",
    "working_distance_mm",
    "magnification",
    "pixel_size_nm",
    "detector",
    "acquired_at",
)
_STRING_FIELDS = {"vendor", "instrument_model", "detector"}

# Plausible ranges: values outside are misparsed or placeholders (e.g. FEI navcam WD = -1.2e-05).
_PLAUSIBLE = {
    "accelerating_voltage_kv": (0.001, 1000.0),
    "working_distance_mm": (0.0001, 1000.0),
    "magnification": (0.5, 1e8),
    "pixel_size_nm": (1e-4, 1e9),
}

_VOLTAGE_TO_KV = {"v": 1e-3, "volt": 1e-3, "volts": 1e-3, "kv": 1.0, "mv": 1e-6}
_LENGTH_TO_NM = {
    "m": 1e9,
    "cm": 1e7,
    "mm": 1e6,
    "um": 1e3,
    "µm": 1e3,
    "μm": 1e3,
    "micron": 1e3,
    "microns": 1e3,
    "nm": 1.0,
    "pm": 1e-3,
    "fm": 1e-6,
    "a": 0.1,
    "å": 0.1,
}
_NUMBER_UNIT = re.compile(r"^\s*\(?\s*([-+]?(?:\d+(?:[.,]\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*\)?\s*\(?\s*([^\s()]*)")


def empty_metadata() -> dict[str, Any]:
    result: dict[str, Any] = {field: ("" if field in _STRING_FIELDS else None) for field in TYPED_FIELDS}
    result["raw"] = {}
    return result


def extract_metadata(path: str | os.PathLike, *, image_width: int | None = None) -> dict[str, Any]:
    """Parse instrument metadata from the file at ``path`` (any format; only TIFFs carry it)."""
    result = empty_metadata()
    try:
        with open(path, "rb") as handle:
            if handle.read(4) not in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
                return result
        parsed = _parse_tiff(path, image_width)
    except Exception as error:  # metadata must never break an upload
        logger.warning("instrument metadata of %s could not be parsed: %r", path, error)
        result["raw"] = {"error": _clip(repr(error))}
        return result
    return _finalise(parsed)


def _finalise(parsed: dict[str, Any]) -> dict[str, Any]:
    """Typed values checked for plausibility; raw made JSON-safe."""
    result = empty_metadata()
    for field in TYPED_FIELDS:
        value = parsed.get(field)
        if field in _STRING_FIELDS:
            result[field] = _clean_text(value)[:100] if value is not None else ""
        elif field == "acquired_at":
            result[field] = value if isinstance(value, datetime) else None
        else:
            result[field] = _plausible_number(field, value)
    result["raw"] = json_safe(parsed.get("raw", {}))
    return result


# ---------------------------------------------------------------------------------------------
# TIFF dispatch
# ---------------------------------------------------------------------------------------------


def _parse_tiff(path, image_width: int | None) -> dict[str, Any]:
    import tifffile  # lazily: only TIFF uploads pay for it

    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages.first
        tags = page.tags
        width = image_width or int(page.shape[1] if len(page.shape) >= 2 else 0) or None
        for code, parser in (
            (TAG_FEI_HELIOS, _parse_fei),
            (TAG_FEI_SFEG, _parse_fei),
            (TAG_ZEISS_CZ_SEM, _parse_zeiss),
        ):
            value = _safe_tag_value(tags, code)
            if isinstance(value, dict) and value:
                return parser(value, width)
        tescan_text = _tag_text(tags, TAG_TESCAN)
        if tescan_text and _looks_like_tescan(tescan_text):
            return _parse_tescan(tescan_text)
        for code, name in TEXT_TAGS.items():
            text = _tag_text(tags, code)
            if not text:
                continue
            for recogniser, parser in (
                (_looks_like_jeol, _parse_jeol),
                (_looks_like_hitachi, _parse_hitachi),
                (_looks_like_tescan, _parse_tescan),
            ):
                if recogniser(text):
                    parsed = parser(text)
                    parsed["raw"]["embedded_in"] = name
                    return parsed
    return {"raw": {}}


def _safe_tag_value(tags, code: int) -> Any:
    tag = tags.get(code)
    if tag is None or tag.valuebytecount > MAX_TAG_BYTES:
        return None
    try:
        return tag.value
    except Exception as error:
        logger.info("TIFF tag %s unreadable: %r", code, error)
        return None


def _tag_text(tags, code: int) -> str:
    value = _safe_tag_value(tags, code)
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, tuple) and value and all(isinstance(v, int) for v in value):
        value = bytes(v & 0xFF for v in value).decode("utf-8", errors="replace")
    return value.replace("\x00", "") if isinstance(value, str) else ""


# ---------------------------------------------------------------------------------------------
# FEI / Thermo Fisher
# ---------------------------------------------------------------------------------------------


def _parse_fei(sections: dict[str, Any], width: int | None) -> dict[str, Any]:
    def get(section: str, key: str) -> Any:
        block = sections.get(section)
        return block.get(key) if isinstance(block, dict) else None

    column = _clean_text(get("Beam", "Beam")) or "EBeam"  # EBeam, or IBeam for FIB images
    scan = _clean_text(get("Beam", "Scan")) or "EScan"
    hfw_m = _first_number(get("Scan", "HorFieldsize"), get(scan, "HorFieldsize"), get(column, "HFW"))
    canvas_m = _first_number(get("Image", "MagCanvasRealWidth"))
    pixel_m = _first_number(get("Scan", "PixelWidth"), get(scan, "PixelWidth"))
    if pixel_m is None and hfw_m and width:
        pixel_m = hfw_m / width
    return {
        "vendor": VENDOR_FEI,
        "instrument_model": _clean_text(get("System", "SystemType")),
        "accelerating_voltage_kv": _scaled(_first_number(get(column, "HV"), get("Beam", "HV")), 1e-3),
        "working_distance_mm": _scaled(_first_number(get(column, "WD"), get("Stage", "WorkingDistance")), 1e3),
        "magnification": canvas_m / hfw_m if canvas_m and hfw_m else None,
        "pixel_size_nm": _scaled(pixel_m, 1e9),
        "detector": _clean_text(get("Detectors", "Name")),
        "acquired_at": _parse_datetime(get("User", "Date"), get("User", "Time")),
        "raw": {"fei": sections},
    }


# ---------------------------------------------------------------------------------------------
# Zeiss
# ---------------------------------------------------------------------------------------------

ZEISS_REFERENCE_WIDTH = 1024  # "Pixel Size" (ap_pixel_size) is quoted for a 1024-pixel-wide frame


def _parse_zeiss(entries: dict[str, Any], width: int | None) -> dict[str, Any]:
    def value_and_unit(key: str) -> tuple[Any, str]:
        entry = entries.get(key)
        if not isinstance(entry, tuple) or len(entry) < 2:
            return None, ""
        return entry[1], str(entry[2]) if len(entry) > 2 else ""

    pixel_nm = _length_nm(*value_and_unit("ap_image_pixel_size"))
    if pixel_nm is None:
        reference_nm = _length_nm(*value_and_unit("ap_pixel_size"))
        if reference_nm is not None and width:
            pixel_nm = reference_nm * ZEISS_REFERENCE_WIDTH / width
    serial = _clean_text(value_and_unit("sv_serial_number")[0])
    detector = value_and_unit("dp_detector_type")[0] or value_and_unit("dp_detector_channel")[0]
    date, _ = value_and_unit("ap_date")
    time, _ = value_and_unit("ap_time")
    raw = {key: list(entry) if isinstance(entry, tuple) else entry for key, entry in entries.items() if key}
    return {
        "vendor": VENDOR_ZEISS,
        "instrument_model": _zeiss_model_from_serial(serial),
        "accelerating_voltage_kv": _first_number(
            _voltage_kv(*value_and_unit("ap_actualkv")), _voltage_kv(*value_and_unit("ap_manualkv"))
        ),
        "working_distance_mm": _scaled(_length_nm(*value_and_unit("ap_wd"), default_unit="mm"), 1e-6),
        "magnification": _magnification(*value_and_unit("ap_mag")),
        "pixel_size_nm": pixel_nm,
        "detector": _clean_text(detector),
        "acquired_at": _parse_datetime(date, time),
        "raw": {"zeiss": raw, "zeiss_serial_number": serial},
    }


def _zeiss_model_from_serial(serial: str) -> str:
    """'Auriga 60-46-17' -> 'Auriga 60', 'Merlin-61-08' -> 'Merlin' (serial = model-nn-nn)."""
    match = re.match(r"^(.*?)[-\s]+\d+-\d+$", serial)
    return (match.group(1) if match else serial).strip()


# ---------------------------------------------------------------------------------------------
# TESCAN, JEOL, Hitachi: text headers
# ---------------------------------------------------------------------------------------------


def _looks_like_tescan(text: str) -> bool:
    return bool(re.search(r"^\s*\[MAIN\]", text, re.M)) and "TESCAN" in text.upper()


def _looks_like_jeol(text: str) -> bool:
    return bool(re.search(r"^\s*\$+CM_(MAG|FORMAT|INSTRUMENT|ACCEL_VOLT)\b", text, re.M))


def _looks_like_hitachi(text: str) -> bool:
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


def _parse_tescan(text: str) -> dict[str, Any]:
    sections = _parse_ini(text)
    flat = {key.lower(): value for block in sections.values() for key, value in block.items()}
    return {
        "vendor": VENDOR_TESCAN,
        "instrument_model": flat.get("devicemodel") or flat.get("device") or "",
        # SI units: HV in volts, WD and pixel size in metres.
        "accelerating_voltage_kv": _voltage_kv(flat.get("hv"), default_unit="V"),
        "working_distance_mm": _scaled(_length_nm(flat.get("wd"), default_unit="m"), 1e-6),
        "magnification": _magnification(flat.get("magnification")),
        "pixel_size_nm": _length_nm(flat.get("pixelsizex"), default_unit="m"),
        "detector": flat.get("detector") or flat.get("detector0") or "",
        "acquired_at": _parse_datetime(flat.get("date"), flat.get("time")),
        "raw": {"tescan": sections},
    }


def _parse_jeol(text: str) -> dict[str, str | Any]:
    fields: dict[str, str] = {}
    for line in text.splitlines()[:MAX_RAW_ITEMS]:
        match = re.match(r"^\s*\$+([A-Z0-9_]+)\s*(.*)$", line)
        if match:
            fields[match.group(1)] = match.group(2).strip()
    return {
        "vendor": VENDOR_JEOL,
        "instrument_model": fields.get("CM_INSTRUMENT", ""),
        "accelerating_voltage_kv": _voltage_kv(fields.get("CM_ACCEL_VOLT"), default_unit="kV"),
        "working_distance_mm": _scaled(
            _length_nm(fields.get("SM_WD") or fields.get("SM_WORKING_DISTANCE"), default_unit="mm"), 1e-6
        ),
        "magnification": _magnification(fields.get("CM_MAG")),
        "pixel_size_nm": _jeol_pixel_size_nm(fields),
        "detector": fields.get("CM_SIGNAL") or fields.get("CM_DETECTOR") or "",
        "acquired_at": _parse_datetime(fields.get("CM_DATE"), fields.get("CM_TIME")),
        "raw": {"jeol": fields},
    }


def _jeol_pixel_size_nm(fields: dict[str, str]) -> float | None:
    """JEOL gives the scale bar: its length in pixels (SM_MICRON_BAR) and label (SM_MICRON_MARKER)."""
    direct = _length_nm(fields.get("SM_PIXEL_SIZE") or fields.get("CM_PIXEL_SIZE"), default_unit="nm")
    if direct is not None:
        return direct
    bar_pixels, _ = _number_and_unit(fields.get("SM_MICRON_BAR"))
    marker_nm = _length_nm(fields.get("SM_MICRON_MARKER"), default_unit="um")
    if bar_pixels and marker_nm:
        return marker_nm / bar_pixels
    return None


def _parse_hitachi(text: str) -> dict[str, Any]:
    sections = _parse_ini(text)
    flat = {key.lower(): value for block in sections.values() for key, value in block.items()}
    return {
        "vendor": VENDOR_HITACHI,
        "instrument_model": flat.get("instructname") or flat.get("instrument name") or "",
        "accelerating_voltage_kv": _voltage_kv(flat.get("acceleratingvoltage"), default_unit="V"),
        "working_distance_mm": _scaled(_length_nm(flat.get("workingdistance"), default_unit="um"), 1e-6),
        "magnification": _magnification(flat.get("magnification")),
        "pixel_size_nm": _length_nm(flat.get("pixelsize"), default_unit="nm"),
        "detector": flat.get("signalname") or flat.get("detector") or "",
        "acquired_at": _parse_datetime(flat.get("date"), flat.get("time")),
        "raw": {"hitachi": sections},
    }


# ---------------------------------------------------------------------------------------------
# Values and units
# ---------------------------------------------------------------------------------------------


def _number_and_unit(value: Any) -> tuple[float | None, str]:
    """5000 -> (5000.0, ''); '4.9 mm' -> (4.9, 'mm'); '1.2e-08 (m)' -> (1.2e-08, 'm')."""
    if isinstance(value, bool) or value is None:
        return None, ""
    if isinstance(value, (int, float)):
        number = float(value)
        return (number, "") if math.isfinite(number) else (None, "")
    if not isinstance(value, str) or len(value) > 200:
        return None, ""
    match = _NUMBER_UNIT.match(value)
    if not match:
        return None, ""
    text = match.group(1)
    text = text.replace(",", "") if re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+", text) else text.replace(",", ".")
    try:
        number = float(text)
    except ValueError:
        return None, ""
    return (number, match.group(2)) if math.isfinite(number) else (None, "")


def _voltage_kv(value: Any, unit: str = "", *, default_unit: str = "kV") -> float | None:
    number, found_unit = _number_and_unit(value)
    if number is None:
        return None
    unit = (unit or found_unit or default_unit).lower()
    factor = _VOLTAGE_TO_KV.get(unit)
    return number * factor if factor is not None else None


def _length_nm(value: Any, unit: str = "", *, default_unit: str = "nm") -> float | None:
    number, found_unit = _number_and_unit(value)
    if number is None:
        return None
    unit = (unit or found_unit or default_unit).lower()
    factor = _LENGTH_TO_NM.get(unit)
    return number * factor if factor is not None else None


def _magnification(value: Any, unit: str = "") -> float | None:
    """'20.00 K X' -> 20000; 105 with unit 'X' -> 105; 'x1,000' -> 1000; '1.5 M X' -> 1.5e6."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    if not isinstance(value, str) or len(value) > 100:
        return None
    text = value.strip().lower().lstrip("x").strip()
    match = re.match(r"^([-+]?[\d.,]+(?:e[-+]?\d+)?)\s*([km]?)\s*x?\s*$", text)
    if not match:
        return None
    number, _ = _number_and_unit(match.group(1))
    if number is None:
        return None
    return number * {"": 1.0, "k": 1e3, "m": 1e6}[match.group(2)]


def _first_number(*values: Any) -> float | None:
    for value in values:
        number, _ = _number_and_unit(value)
        if number is not None:
            return number
    return None


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def _plausible_number(field: str, value: Any) -> float | None:
    number, _ = _number_and_unit(value)
    if number is None:
        return None
    low, high = _PLAUSIBLE[field]
    # Round away float noise from unit conversion (5000 V * 1e-3 = 5.000000000000001 kV).
    return float(f"{number:.6g}") if low <= number <= high else None


def _clean_text(value: Any) -> str:
    """Instrument strings sometimes carry stray quotes ('Helios NanoLab" 660') or NULs."""
    if value is None or isinstance(value, bool):
        return ""
    text = str(value).replace("\x00", "").replace('"', "")
    return re.sub(r"\s+", " ", text).strip()


_DATE_FORMATS = ("%m/%d/%Y", "%d %b %Y", "%Y-%m-%d", "%Y/%m/%d", "%d.%m.%Y", "%d/%m/%Y", "%Y.%m.%d")
_TIME_FORMATS = ("%I:%M:%S %p", "%H:%M:%S", "%H:%M", "%I:%M %p")


def _parse_datetime(date: Any, time: Any) -> datetime | None:
    """Instrument local time, interpreted in the portal's time zone (files carry no zone)."""
    date_text, time_text = _clean_text(date), _clean_text(time)
    if not date_text or len(date_text) > 40 or len(time_text) > 40:
        return None
    for date_format in _DATE_FORMATS:
        for time_format in _TIME_FORMATS if time_text else ("",):
            try:
                naive = datetime.strptime(f"{date_text} {time_text}".strip(), f"{date_format} {time_format}".strip())
            except ValueError:
                continue
            return _make_aware(naive)
    return None


def _make_aware(naive: datetime) -> datetime:
    from django.utils import timezone

    try:
        return timezone.make_aware(naive, timezone.get_default_timezone())
    except Exception:  # settings not configured (used outside Django)
        return naive.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------------------------
# JSON safety
# ---------------------------------------------------------------------------------------------


def json_safe(value: Any, depth: int = 0) -> Any:
    """Something json.dumps and PostgreSQL's jsonb both accept, bounded in size.

    jsonb rejects NaN/Infinity and NUL characters; numpy scalars and bytes are not JSON at all.
    """
    if depth > MAX_RAW_DEPTH:
        return None
    if value is None or isinstance(value, (bool, int)) and not _is_huge_int(value):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _clip(value)
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        items = list(value.items())[:MAX_RAW_ITEMS]
        return {_clip(str(key), 200): json_safe(item, depth + 1) for key, item in items}
    if isinstance(value, (list, tuple)):
        return [json_safe(item, depth + 1) for item in list(value)[:MAX_RAW_ITEMS]]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "size", 1) == 1:  # numpy scalar
        try:
            return json_safe(value.item(), depth)
        except Exception:
            return None
    if hasattr(value, "tolist") and getattr(value, "size", 0) <= MAX_RAW_ITEMS:  # small numpy array
        return json_safe(value.tolist(), depth)
    return _clip(repr(value))


def _is_huge_int(value: int) -> bool:
    return not isinstance(value, bool) and abs(value) > 2**63 - 1


def _clip(text: str, limit: int = MAX_RAW_STRING) -> str:
    text = text.replace("\x00", "")
    return text if len(text) <= limit else text[:limit] + "…"
