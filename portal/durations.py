"""The duration grammar of every setting, form, API field and command that takes a time ('20min', '90s',
'1h30min', '1.5h', a plain number of seconds): one table of units, read by the parser and by the API's
JSON-schema pattern, so the two cannot drift apart. Pure Python: settings import it at start-up."""

from __future__ import annotations

import math
import re

# Seconds per unit, longer spellings first: the parser tries them in this order ("min" before "m").
UNITS = {"h": 3600, "min": 60, "m": 60, "sec": 1, "s": 1}
_NUMBER = r"[0-9]+(?:[.][0-9]+)?"
_PART = re.compile(rf"({_NUMBER})\s*({'|'.join(UNITS)})?", re.IGNORECASE)


def parse_duration(text) -> float:
    """Seconds from '20min', '90s', '1h30min', '1.5h' or a plain number of seconds; > 0."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        value = str(text).strip().replace(" ", "")
        parts = list(_PART.finditer(value))
        if not value or not parts or "".join(p.group(0) for p in parts).lower() != value.lower():
            raise ValueError(f"not a duration: {text!r} (use e.g. 20min, 90s, 1h30min)")
        if len(parts) > 1 and any(p.group(2) is None for p in parts):
            raise ValueError(f"not a duration: {text!r} (every part needs a unit)")
        seconds = sum(float(p.group(1)) * UNITS[(p.group(2) or "s").lower()] for p in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be positive, not {text!r}")
    return seconds


def _any_case(unit: str) -> str:
    """JSON-schema patterns have no case-insensitive flag: 'min' -> '[mM][iI][nN]'."""
    return "".join(f"[{letter.lower()}{letter.upper()}]" for letter in unit)


def _schema_pattern() -> str:
    """What parse_duration accepts, or blank: one number with an optional unit, or several numbers each
    with a unit, at least one of them non-zero."""
    positive = r"(?:[0-9]*[1-9][0-9]*(?:[.][0-9]+)?|[0-9]+[.][0-9]*[1-9][0-9]*)"
    unit = rf" *(?:{'|'.join(_any_case(unit) for unit in UNITS)})"
    one = rf"{positive}(?:{unit})?"
    several = rf"(?:{_NUMBER}{unit} *)*{positive}{unit}(?: *{_NUMBER}{unit})*"
    return rf"^ *(?:{one}|{several})? *$"


DURATION_PATTERN = _schema_pattern()
