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

Each vendor's parser is in metadata_vendors, the unit conversions and the JSON safety of ``raw`` in
metadata_values; this module finds the vendor's tag and checks what its parser returns (`finalise`).
A JEOL or Hitachi sidecar text next to a watched image is read by `parse_sidecar`.

`extract_metadata` never raises: a file with weird, huge or malformed metadata yields empty typed
values plus whatever could be kept safely in ``raw`` (JSON-serialisable, storable in PostgreSQL).
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from typing import Any

from portal.services.ingestion.metadata_values import clean_text, clip, json_safe, plausible_number
from portal.services.ingestion.metadata_vendors import (
    looks_like_hitachi,
    looks_like_jeol,
    looks_like_tescan,
    parse_fei,
    parse_hitachi,
    parse_jeol,
    parse_tescan,
    parse_zeiss,
)

logger = logging.getLogger(__name__)

TAG_FEI_SFEG = 34680
TAG_FEI_HELIOS = 34682
TAG_ZEISS_CZ_SEM = 34118
TAG_TESCAN = 50431
# Baseline text tags where JEOL/Hitachi/TESCAN text is sometimes embedded by export tools.
TEXT_TAGS = {270: "ImageDescription", 305: "Software", 271: "Make", 272: "Model", 37510: "UserComment"}

# A vendor tag larger than this is not metadata we can trust or want in the database.
MAX_TAG_BYTES = 1024 * 1024

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
        result["raw"] = {"error": clip(repr(error))}
        return result
    return finalise(parsed)


def finalise(parsed: dict[str, Any]) -> dict[str, Any]:
    """Typed values checked for plausibility; raw made JSON-safe."""
    result = empty_metadata()
    for field in TYPED_FIELDS:
        value = parsed.get(field)
        if field in _STRING_FIELDS:
            result[field] = clean_text(value)[:100] if value is not None else ""
        elif field == "acquired_at":
            result[field] = value if isinstance(value, datetime) else None
        else:
            result[field] = plausible_number(field, value)
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
            (TAG_FEI_HELIOS, parse_fei),
            (TAG_FEI_SFEG, parse_fei),
            (TAG_ZEISS_CZ_SEM, parse_zeiss),
        ):
            value = _safe_tag_value(tags, code)
            if isinstance(value, dict) and value:
                return parser(value, width)
        tescan_text = _tag_text(tags, TAG_TESCAN)
        if tescan_text and looks_like_tescan(tescan_text):
            return parse_tescan(tescan_text)
        for code, name in TEXT_TAGS.items():
            text = _tag_text(tags, code)
            if not text:
                continue
            for recogniser, parser in (
                (looks_like_jeol, parse_jeol),
                (looks_like_hitachi, parse_hitachi),
                (looks_like_tescan, parse_tescan),
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


def parse_sidecar(text: str) -> dict[str, Any] | None:
    """Typed metadata (as extract_metadata returns it) from a JEOL or Hitachi sidecar's text."""
    for looks_like, parse in ((looks_like_jeol, parse_jeol), (looks_like_hitachi, parse_hitachi)):
        if looks_like(text):
            return finalise(parse(text))
    return None
