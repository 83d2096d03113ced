"""What are these bytes? The accepted format from the magic bytes, or a refusal that says what the file is
(a disguised HTML page, a PDF, an unsupported image format). Runs before anything is decoded."""

from __future__ import annotations

import os

from portal.services.ingestion.validation_errors import ValidationError

# Canonical stored extension per accepted format.
ACCEPTED_FORMATS = {"TIFF": ".tif", "PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp"}
IMAGE_EXTENSIONS = {
    ".tif",
    ".tiff",
    ".png",
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".bmp",
    ".dib",
    ".gif",
    ".webp",
    ".svg",
    ".jp2",
    ".j2k",
    ".heic",
    ".heif",
    ".avif",
    ".ico",
}
SNIFF_BYTES = 1024

# Image formats we recognise but do not accept (lossy or animated consumer formats, not SEM output).
_OTHER_IMAGE_SIGNATURES = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "Photoshop"),
    (b"II\xbc", "JPEG XR"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (b"DDS ", "DDS"),
    (b"\x76\x2f\x31\x01", "OpenEXR"),
)
# Documents, archives and scripts: never images, whatever the file name says.
_DOCUMENT_SIGNATURES = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or Office document)"),
    (b"PK\x05\x06", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"\x7fELF", "an executable"),
    (b"MZ", "a Windows executable"),
    (b"\xd0\xcf\x11\xe0", "an Office document"),
    (b"#!", "a script"),
)
_MARKUP_MARKERS = (
    (b"<svg", "an SVG drawing"),
    (b"<!doctype html", "an HTML page"),
    (b"<html", "an HTML page"),
    (b"<script", "a script"),
    (b"<?xml", "an XML document"),
    (b"<head", "an HTML page"),
    (b"<body", "an HTML page"),
    (b"<?php", "a PHP script"),
    (b"<iframe", "an HTML page"),
)


def sniff_format(head: bytes, filename: str) -> str:
    """Accepted format name from the magic bytes, or ValidationError explaining what the bytes are."""
    if not head:
        raise ValidationError("empty", "The file is empty (0 bytes).")
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"BM") and _plausible_bmp_header(head):
        return "BMP"
    for signature, name in _OTHER_IMAGE_SIGNATURES:
        if head.startswith(signature):
            raise _unsupported(name)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        raise _unsupported("WebP")
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif", b"ftypmsf1"):
        raise _unsupported("HEIF/AVIF")
    what = _describe_non_image(head)
    claims_image = os.path.splitext(filename.lower())[1] in IMAGE_EXTENSIONS
    if what and claims_image:
        raise ValidationError(
            "disguised", f"The file is named like an image but its content is {what}; it was not stored."
        )
    if what:
        raise ValidationError("not_an_image", f"The file is {what}, not an image.")
    raise ValidationError("not_an_image", "The file is not a recognised image (accepted: TIFF, PNG, JPEG, BMP).")


def _plausible_bmp_header(head: bytes) -> bool:
    """'BM' is also how plenty of text starts; a real BMP has a known DIB header size at byte 14."""
    return len(head) >= 18 and int.from_bytes(head[14:18], "little") in (12, 16, 40, 52, 56, 64, 108, 124)


def _unsupported(name: str) -> ValidationError:
    return ValidationError(
        "unsupported_format", f"{name} images are not accepted; please upload TIFF, PNG, JPEG or BMP."
    )


def _describe_non_image(head: bytes) -> str | None:
    for signature, what in _DOCUMENT_SIGNATURES:
        if head.startswith(signature):
            return what
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    for marker, what in _MARKUP_MARKERS:
        if marker in text[:SNIFF_BYTES]:
            return what
    if text.startswith(b"<"):
        return "a markup document"
    if _looks_like_text(head):
        return "a text file"
    return None


def _looks_like_text(head: bytes) -> bool:
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the sniff boundary is still text.
        try:
            decoded = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in decoded)
    return printable >= 0.95 * max(1, len(decoded))
