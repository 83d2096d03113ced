"""Vendor values made storable: numbers with units converted (kV, mm, nm, magnification), instrument
strings and dates cleaned, implausible numbers dropped, and anything kept in `raw` made JSON-safe and
bounded."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

# Limits for what is kept in `raw` (one JSON column per image).
MAX_RAW_STRING = 2000
MAX_RAW_ITEMS = 4000
MAX_RAW_DEPTH = 6

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


def number_and_unit(value: Any) -> tuple[float | None, str]:
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


def voltage_kv(value: Any, unit: str = "", *, default_unit: str = "kV") -> float | None:
    return _converted(value, unit, default_unit, _VOLTAGE_TO_KV)


def length_nm(value: Any, unit: str = "", *, default_unit: str = "nm") -> float | None:
    return _converted(value, unit, default_unit, _LENGTH_TO_NM)


def _converted(value: Any, unit: str, default_unit: str, factors: dict[str, float]) -> float | None:
    """The number in `value` times the factor of its unit: the given one, else the one written after the
    number, else the default. None for an unknown unit."""
    number, found_unit = number_and_unit(value)
    if number is None:
        return None
    factor = factors.get((unit or found_unit or default_unit).lower())
    return number * factor if factor is not None else None


def parse_magnification(value: Any, unit: str = "") -> float | None:
    """'20.00 K X' -> 20000; 105 with unit 'X' -> 105; 'x1,000' -> 1000; '1.5 M X' -> 1.5e6."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    if not isinstance(value, str) or len(value) > 100:
        return None
    text = value.strip().lower().lstrip("x").strip()
    match = re.match(r"^([-+]?[\d.,]+(?:e[-+]?\d+)?)\s*([km]?)\s*x?\s*$", text)
    if not match:
        return None
    number, _ = number_and_unit(match.group(1))
    if number is None:
        return None
    return number * {"": 1.0, "k": 1e3, "m": 1e6}[match.group(2)]


def first_number(*values: Any) -> float | None:
    for value in values:
        number, _ = number_and_unit(value)
        if number is not None:
            return number
    return None


def scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def plausible_number(field: str, value: Any) -> float | None:
    number, _ = number_and_unit(value)
    if number is None:
        return None
    low, high = _PLAUSIBLE[field]
    # Round away float noise from unit conversion (5000 V * 1e-3 = 5.000000000000001 kV).
    return float(f"{number:.6g}") if low <= number <= high else None


def clean_text(value: Any) -> str:
    """Instrument strings sometimes carry stray quotes ('Helios NanoLab" 660') or NULs."""
    if value is None or isinstance(value, bool):
        return ""
    text = str(value).replace("\x00", "").replace('"', "")
    return re.sub(r"\s+", " ", text).strip()


_DATE_FORMATS = ("%m/%d/%Y", "%d %b %Y", "%Y-%m-%d", "%Y/%m/%d", "%d.%m.%Y", "%d/%m/%Y", "%Y.%m.%d")
_TIME_FORMATS = ("%I:%M:%S %p", "%H:%M:%S", "%H:%M", "%I:%M %p")


def parse_datetime(date: Any, time: Any) -> datetime | None:
    """Instrument local time, interpreted in the portal's time zone (files carry no zone)."""
    date_text, time_text = clean_text(date), clean_text(time)
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
        return clip(value)
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        items = list(value.items())[:MAX_RAW_ITEMS]
        return {clip(str(key), 200): json_safe(item, depth + 1) for key, item in items}
    if isinstance(value, (list, tuple)):
        return [json_safe(item, depth + 1) for item in list(value)[:MAX_RAW_ITEMS]]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "size", 1) == 1:  # numpy scalar
        try:
            return json_safe(value.item(), depth)
        except Exception:
            return None
    if hasattr(value, "tolist") and getattr(value, "size", 0) <= MAX_RAW_ITEMS:  # small numpy array
        return json_safe(value.tolist(), depth)
    return clip(repr(value))


def _is_huge_int(value: int) -> bool:
    return not isinstance(value, bool) and abs(value) > 2**63 - 1


def clip(text: str, limit: int = MAX_RAW_STRING) -> str:
    text = text.replace("\x00", "")
    return text if len(text) <= limit else text[:limit] + "…"
