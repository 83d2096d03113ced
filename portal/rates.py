"""Rates and probabilities in words for the pages ("87 %"): accuracy, precision, recall, F1, coverage,
confidence, probabilities and shares are stored as fractions 0-1 (and the REST API sends them so);
a person reads them as percentages, every page the same way. The sign is kept apart from the number by
a no-break space (U+00A0) so that a line never ends between them."""

from __future__ import annotations

import math

NBSP = "\u00a0"
MINUS = "\u2212"


def _hundredths(value) -> float | None:
    """The value times 100, or None for a missing or non-numeric one (shown as nothing, not "nan %")."""
    try:
        number = float(value) * 100
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def percent(value, digits: int = 0) -> str:
    """0.873 -> "87 %" (digits=1: "87.3 %"); "" for a missing value."""
    number = _hundredths(value)
    if number is None:
        return ""
    return f"{number + 0.0:.{digits}f}{NBSP}%"


def points(value, digits: int = 0, signed: bool = False) -> str:
    """A difference of two rates in percentage points: 0.031 -> "3 points", signed "+3.1" (a real
    minus sign; no "−0.0")."""
    number = _hundredths(value)
    if number is None:
        return ""
    if not signed:
        return f"{number:.{digits}f}{NBSP}points"
    text = f"{round(number, digits) + 0.0:+.{digits}f}"
    return text.replace("-", MINUS)
