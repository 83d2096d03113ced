"""The header's facts about an image (ImageInfo) and the limits they are held to before any pixel is
decoded: pixels, aspect ratio, decoded bytes, samples per pixel."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from portal.byte_sizes import human_bytes
from portal.services.ingestion.validation_errors import ValidationError


@dataclass(frozen=True)
class ImageInfo:
    format: str  # TIFF, PNG, JPEG or BMP
    extension: str  # canonical, with the dot
    width: int
    height: int
    mode: str  # Pillow mode of the first page, e.g. L, I;16, RGB, P
    bit_depth: int  # bits per sample
    page_count: int
    samples: int = 1  # samples per pixel (grey 1, RGB 3, ...)
    decoded_bytes: int = 0  # width x height x samples x bytes per sample of the first page, from the header
    colourfulness: float | None = None  # of the decoded first page (classifier.colour); None before decoding


def check_decoding_budget(width: int, height: int, decoded_bytes: int, *, samples: int = 1, bits: int = 8) -> None:
    """Refuse, from the header alone, what would cost too much to decode: more pixels than
    SEM_MAX_IMAGE_PIXELS, sides more unequal than SEM_MAX_ASPECT_RATIO (a 1 x 200,000 strip), or more
    decoded bytes than SEM_MAX_DECODED_BYTES (width x height x samples per pixel x bytes per sample)."""
    max_pixels = settings.SEM_MAX_IMAGE_PIXELS
    if width <= 0 or height <= 0:
        raise ValidationError("corrupt", f"The image header declares an empty image ({width}x{height}).")
    if width * height > max_pixels:
        raise ValidationError(
            "too_many_pixels",
            f"The image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,} pixels.",
        )
    max_ratio = settings.SEM_MAX_ASPECT_RATIO
    if max(width, height) > max_ratio * min(width, height):
        raise ValidationError(
            "extreme_aspect_ratio",
            f"The image is {width}x{height} pixels: one side is {max(width, height) / min(width, height):,.0f} "
            f"times the other, and at most {max_ratio:g} is accepted (an image this narrow is not a micrograph).",
        )
    max_bytes = settings.SEM_MAX_DECODED_BYTES
    if decoded_bytes > max_bytes:
        per_sample = max(1, -(-bits // 8))
        raise ValidationError(
            "too_many_bytes",
            f"The image would take {human_bytes(decoded_bytes)} once decoded ({width}x{height} pixels x {samples:,} "
            f"sample{'s' if samples != 1 else ''} per pixel x {per_sample} byte{'s' if per_sample != 1 else ''} "
            f"per sample); the limit is {human_bytes(max_bytes)}.",
        )


MAX_SAMPLES_PER_PIXEL = 4  # grey, grey + alpha, RGB, RGBA: SEM images never have more


def check_samples_per_pixel(samples: int) -> None:
    if samples > MAX_SAMPLES_PER_PIXEL:
        raise ValidationError(
            "too_many_samples",
            f"The image has {samples:,} samples per pixel; at most {MAX_SAMPLES_PER_PIXEL} "
            "(grey, grey and alpha, RGB or RGBA) are accepted.",
        )
