"""Is this upload really an SEM image we can store? Sniffing, header checks and full decoding.

Order matters: the cheap checks (size, magic bytes, header dimensions) run before anything is
decoded, so a decompression bomb or a disguised HTML page never reaches a decoder.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

from django.conf import settings
from PIL import Image, ImageFile, UnidentifiedImageError

from classifier.imageio import load_grey8

# Canonical stored extension per accepted format.
ACCEPTED_FORMATS = {"TIFF": ".tif", "PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp"}
IMAGE_EXTENSIONS = {
    ".tif", ".tiff", ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".gif", ".webp", ".svg",
    ".jp2", ".j2k", ".heic", ".heif", ".avif", ".ico",
}
SNIFF_BYTES = 1024

# Image formats we recognise but do not accept (lossy or animated consumer formats, not SEM output).
_OTHER_IMAGE_SIGNATURES = (
    (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"), (b"\x00\x00\x01\x00", "ICO"), (b"8BPS", "Photoshop"),
    (b"II\xbc", "JPEG XR"), (b"\xff\x0a", "JPEG XL"), (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (b"DDS ", "DDS"), (b"\x76\x2f\x31\x01", "OpenEXR"),
)
# Documents, archives and scripts: never images, whatever the file name says.
_DOCUMENT_SIGNATURES = (
    (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive (or Office document)"),
    (b"PK\x05\x06", "a ZIP archive"), (b"\x1f\x8b", "a gzip archive"), (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"), (b"\x7fELF", "an executable"), (b"MZ", "a Windows executable"),
    (b"\xd0\xcf\x11\xe0", "an Office document"), (b"#!", "a script"),
)
_MARKUP_MARKERS = (
    (b"<svg", "an SVG drawing"), (b"<!doctype html", "an HTML page"), (b"<html", "an HTML page"),
    (b"<script", "a script"), (b"<?xml", "an XML document"), (b"<head", "an HTML page"),
    (b"<body", "an HTML page"), (b"<?php", "a PHP script"), (b"<iframe", "an HTML page"),
)


class ValidationError(Exception):
    """Raised with a machine code and a human message; ingest turns it into IngestError."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ImageInfo:
    format: str  # TIFF, PNG, JPEG or BMP
    extension: str  # canonical, with the dot
    width: int
    height: int
    mode: str  # Pillow mode of the first page, e.g. L, I;16, RGB, P
    bit_depth: int  # bits per sample
    page_count: int


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
            "disguised", f"The file is named like an image but its content is {what}; it was not stored.")
    if what:
        raise ValidationError("not_an_image", f"The file is {what}, not an image.")
    raise ValidationError(
        "not_an_image", "The file is not a recognised image (accepted: TIFF, PNG, JPEG, BMP).")


def inspect_image(path: str, image_format: str) -> tuple[ImageInfo, Image.Image]:
    """Header checks (pixel limit first), then a full decode of the first page.

    Returns what the database stores about the image and the decoded 8-bit greyscale first page
    (so the caller makes its derivatives without decoding the file a second time).
    """
    max_pixels = settings.SEM_MAX_IMAGE_PIXELS
    # Pillow's own bomb guard must agree with ours: it warns above MAX_IMAGE_PIXELS and raises
    # above twice that, both while reading the header, before any pixel is decoded.
    Image.MAX_IMAGE_PIXELS = max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    if image_format == "TIFF":
        info = _tiff_header(path)
    else:
        info = _pillow_header(path, image_format)
    _check_pixel_limit(info.width, info.height, max_pixels)
    if image_format != "TIFF":
        _pillow_verify(path)
    return info, _full_decode(path)


def _plausible_bmp_header(head: bytes) -> bool:
    """'BM' is also how plenty of text starts; a real BMP has a known DIB header size at byte 14."""
    return len(head) >= 18 and int.from_bytes(head[14:18], "little") in (12, 16, 40, 52, 56, 64, 108, 124)


def _unsupported(name: str) -> ValidationError:
    return ValidationError(
        "unsupported_format", f"{name} images are not accepted; please upload TIFF, PNG, JPEG or BMP.")


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


def _tiff_header(path: str) -> ImageInfo:
    """TIFF dimensions from tifffile (it reads any TIFF header, including ones Pillow cannot decode)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            page = tiff.pages.first
            page_count = len(tiff.pages)
            width, height = int(page.imagewidth), int(page.imagelength)
            bits = int(page.bitspersample)
            samples = int(page.samplesperpixel)
            photometric = int(page.photometric)
            _check_strips_inside_file(page, os.path.getsize(path))
    except ValidationError:
        raise
    except Exception as error:
        raise ValidationError("corrupt", f"The TIFF file is corrupt or unreadable ({_short(error)}).") from error
    mode = _pillow_mode_or_guess(path, bits, samples, photometric)
    return ImageInfo("TIFF", ".tif", width, height, mode, bits, max(1, page_count))


def _check_strips_inside_file(page, file_size: int) -> None:
    """A truncated TIFF has strips or tiles that point beyond the end of the file."""
    for offset, count in zip(page.dataoffsets, page.databytecounts):
        if offset + count > file_size:
            raise ValidationError(
                "truncated", "The TIFF file is truncated: its image data ends before the file does "
                             "(incomplete upload or copy?).")


def _pillow_mode_or_guess(path: str, bits: int, samples: int, photometric: int) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return image.mode
    except Exception:  # Pillow cannot open every TIFF; describe it in Pillow's vocabulary
        if photometric == 3:
            return "P"
        if samples >= 3:
            return "RGB" if bits == 8 else f"RGB;{bits}"
        return {1: "1", 8: "L", 16: "I;16", 32: "F"}.get(bits, f"L;{bits}")


def _pillow_header(path: str, image_format: str) -> ImageInfo:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.format != image_format:
                    raise ValidationError("corrupt", f"The file looks like {image_format} but cannot be read as one.")
                width, height = image.size
                mode = image.mode
                page_count = getattr(image, "n_frames", 1)
    except Image.DecompressionBombError as error:
        raise _too_many_pixels_from_pillow(error) from error
    except ValidationError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValidationError("corrupt", f"The {image_format} file is corrupt ({_short(error)}).") from error
    return ImageInfo(image_format, ACCEPTED_FORMATS[image_format], width, height, mode, _bit_depth(mode),
                     max(1, page_count))


def _bit_depth(mode: str) -> int:
    if mode == "1":
        return 1
    if mode.startswith("I;16") or mode == "I;16":
        return 16
    if mode in ("I", "F"):
        return 32
    return 8


def _check_pixel_limit(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ValidationError("corrupt", f"The image header declares an empty image ({width}x{height}).")
    if width * height > max_pixels:
        raise ValidationError(
            "too_many_pixels",
            f"The image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,} pixels.")


def _too_many_pixels_from_pillow(error: Exception) -> ValidationError:
    return ValidationError(
        "too_many_pixels",
        f"The image has more pixels than allowed ({settings.SEM_MAX_IMAGE_PIXELS:,}): {_short(error)}")


def _pillow_verify(path: str) -> None:
    """Structural check without decoding (PNG chunk CRCs, JPEG/BMP markers)."""
    try:
        with Image.open(path) as image:
            image.verify()
    except Image.DecompressionBombError as error:
        raise _too_many_pixels_from_pillow(error) from error
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as error:
        raise _truncated_or_corrupt(error) from error


def _full_decode(path: str) -> Image.Image:
    """Decode every pixel of the first page: the only reliable test for truncated data."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return load_grey8(path)
    except Image.DecompressionBombError as error:
        raise _too_many_pixels_from_pillow(error) from error
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, MemoryError) as error:
        raise _truncated_or_corrupt(error) from error


def _truncated_or_corrupt(error: Exception) -> ValidationError:
    text = str(error).lower()
    if any(word in text for word in ("truncated", "failed to read", "incomplete", "premature end", "not enough")):
        return ValidationError(
            "truncated", f"The image is truncated: its data ends early (incomplete upload or copy?). ({_short(error)})")
    return ValidationError("corrupt", f"The image data is corrupt and cannot be decoded ({_short(error)}).")


def _short(error: Exception, limit: int = 200) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= limit else text[:limit] + "…"
