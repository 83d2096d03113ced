"""What ingestion learns from the decoded pixels, in the capped child process (portal.services.ingestion.decode_guard):
sniff, check the header, decode (measuring the colourfulness on the way), read the instrument metadata,
then make the model-input derivative (data bar cropped off), the thumbnail, the perceptual hashes and the
blank flag.

This is where one upload's memory goes; tests/security/memory_probe.py measures its peak."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from PIL import Image, ImageStat

from classifier.databar import crop_databar
from classifier.perceptual import window_hashes
from classifier.preprocess import DERIVATIVE_SHORT_SIDE, make_derivative
from portal.services.ingestion.metadata import extract_metadata
from portal.services.ingestion.validation import inspect_image
from portal.services.ingestion.validation_limits import ImageInfo
from portal.services.ingestion.validation_sniff import sniff_format

THUMBNAIL_MAX_SIDE = 256
# The model-input derivative has a short side of DERIVATIVE_SHORT_SIDE (256) px and a long side of at most
# this: 32 times the short side, more than any accepted aspect ratio (SEM_MAX_ASPECT_RATIO) after a data bar
# is cropped off. At most 256 x 8192 px = 2 MiB, whatever the upload.
DERIVATIVE_MAX_LONG_SIDE = 32 * DERIVATIVE_SHORT_SIDE
THUMBNAIL_JPEG_QUALITY = 85
# A derivative whose grey levels vary less than this (standard deviation, 0-255) shows nothing: an all-black
# or empty frame, the beam off. The model still answers for it, so the image is flagged as blank.
BLANK_STDDEV = 2.0


@dataclass
class Derived:
    derivative_png: bytes
    thumbnail_jpeg: bytes
    databar_rows: int
    hashes: dict = field(default_factory=dict)  # {window: perceptual hash} (classifier.perceptual)
    blank: bool = False


def examine(path: str, head: bytes, filename: str) -> tuple[ImageInfo, dict, Derived]:
    """Everything between spooling and storing. Raises ValidationError for a refused file."""
    image_format = sniff_format(head, filename)
    info, grey = inspect_image(path, image_format)
    metadata = extract_metadata(path, image_width=info.width)
    return info, metadata, make_derived_files(grey)


def make_derived_files(grey: Image.Image) -> Derived:
    """Data bar cropped off for the model-input derivative; the thumbnail shows the whole image."""
    cropped, databar_rows = crop_databar(grey)
    derivative = make_derivative(cropped, derivative_short_side(*cropped.size))
    thumbnail = grey.copy()
    thumbnail.thumbnail((THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return Derived(
        _encode(derivative, "PNG", optimize=False),
        _encode(thumbnail, "JPEG", quality=THUMBNAIL_JPEG_QUALITY),
        databar_rows,
        window_hashes(derivative),
        is_blank(derivative),
    )


def is_blank(grey: Image.Image) -> bool:
    """A near-constant 8-bit greyscale image (BLANK_STDDEV)."""
    return ImageStat.Stat(grey).stddev[0] < BLANK_STDDEV


def derivative_short_side(width: int, height: int) -> int:
    """The derivative's short side: DERIVATIVE_SHORT_SIDE, unless its long side would then pass
    DERIVATIVE_MAX_LONG_SIDE. A narrow image (a 1-pixel-high strip, or a wide image whose data bar took
    most of its height) is never scaled up into a giant derivative: its long side is capped instead."""
    short, long = min(width, height), max(width, height)
    if long * DERIVATIVE_SHORT_SIDE <= DERIVATIVE_MAX_LONG_SIDE * short:
        return DERIVATIVE_SHORT_SIDE
    return max(1, DERIVATIVE_MAX_LONG_SIDE * short // long)


def _encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()
