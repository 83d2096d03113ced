"""Byte counts in words for messages a person reads ("200.0 MiB"): the request-body limits, the upload
limit and the decoding budget say sizes the same way."""

from __future__ import annotations


def human_bytes(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:,.0f} {unit}" if unit == "bytes" else f"{count:,.1f} {unit}"
        count /= 1024
    return f"{count} bytes"
