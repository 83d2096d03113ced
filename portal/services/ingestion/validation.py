"""Is this upload really an SEM image we can store? Header checks and full decoding (`inspect_image`).

Order matters: the cheap checks (size, magic bytes, header dimensions) run before anything is
decoded, so a decompression bomb or a disguised HTML page never reaches a decoder. The magic bytes are
read by validation_sniff, a TIFF's header by validation_tiff, the limits are validation_limits', and
validation_errors words a refusal.
"""

from __future__ import annotations

import dataclasses
import os
import warnings

from django.conf import settings
from PIL import Image, ImageFile, UnidentifiedImageError

from classifier.imageio import load_grey8_and_colourfulness
from portal.services.ingestion.validation_errors import (
    ValidationError,
    error_detail,
    too_many_pixels_from_pillow,
    truncated_or_corrupt,
)
from portal.services.ingestion.validation_limits import ImageInfo, check_decoding_budget
from portal.services.ingestion.validation_sniff import ACCEPTED_FORMATS
from portal.services.ingestion.validation_tiff import tiff_header


def inspect_image(path: str, image_format: str) -> tuple[ImageInfo, Image.Image]:
    """Header checks (pixel limit, aspect ratio, decoded bytes), then a full decode of the first page.

    Returns what the database stores about the image (with the colourfulness of the decoded pixels) and
    the decoded 8-bit greyscale first page (so the caller makes its derivatives without decoding the file
    a second time).
    """
    # Pillow's own bomb guard must agree with ours: it warns above MAX_IMAGE_PIXELS and raises
    # above twice that, both while reading the header, before any pixel is decoded.
    Image.MAX_IMAGE_PIXELS = settings.SEM_MAX_IMAGE_PIXELS
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    if image_format == "TIFF":
        info = tiff_header(path)
    else:
        info = _pillow_header(path, image_format)
    check_decoding_budget(info.width, info.height, info.decoded_bytes, samples=info.samples, bits=info.bit_depth)
    if image_format != "TIFF":
        _pillow_verify(path)
    if image_format == "JPEG":
        check_jpeg_scan_size(path, info.width, info.height)
    grey, colourfulness = _full_decode(path)
    return dataclasses.replace(info, colourfulness=colourfulness), grey


_HUFFMAN_FRAMES = {0xC0, 0xC1, 0xC2}  # baseline, extended and progressive Huffman-coded JPEG


def check_jpeg_scan_size(path: str, width: int, height: int) -> None:
    """A JPEG whose frame header declares more pixels than its data can hold is truncated, even when it
    ends with a proper end marker: libjpeg then only warns and fills the rest with grey. In Huffman-coded
    JPEG each 8 x 8 block of the first component takes at least one bit (its DC difference)."""
    frame, data_start = _jpeg_frame_and_scan_start(path)
    if frame not in _HUFFMAN_FRAMES or data_start is None:
        return
    blocks = -(-width // 8) * -(-height // 8)
    if (os.path.getsize(path) - data_start) * 8 < blocks:
        raise ValidationError(
            "truncated",
            f"The JPEG file is truncated: it declares {width}x{height} pixels but holds data for far fewer "
            "(incomplete upload or copy?).",
        )


def _jpeg_frame_and_scan_start(path: str) -> tuple[int | None, int | None]:
    """The frame marker (SOFn) and where the first scan's data starts, walking the marker segments."""
    frame = None
    with open(path, "rb") as handle:
        handle.seek(2)
        while True:
            marker = handle.read(2)
            if len(marker) < 2 or marker[0] != 0xFF:
                return frame, None
            length = handle.read(2)
            if len(length) < 2:
                return frame, None
            if 0xC0 <= marker[1] <= 0xCF and marker[1] not in (0xC4, 0xC8, 0xCC):
                frame = marker[1]
            handle.seek(int.from_bytes(length, "big") - 2, os.SEEK_CUR)
            if marker[1] == 0xDA:  # start of scan: the entropy-coded data follows its header
                return frame, handle.tell()


def _pillow_header(path: str, image_format: str) -> ImageInfo:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.format != image_format:
                    raise ValidationError("corrupt", f"The file looks like {image_format} but cannot be read as one.")
                width, height = image.size
                mode = image.mode
                samples = len(image.getbands())
                page_count = getattr(image, "n_frames", 1)
    except Image.DecompressionBombError as error:
        raise too_many_pixels_from_pillow(error) from error
    except ValidationError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValidationError("corrupt", f"The {image_format} file is corrupt{error_detail(error)}.") from error
    bits = _bit_depth(mode)
    decoded = width * height * samples * max(1, -(-bits // 8))
    return ImageInfo(
        image_format, ACCEPTED_FORMATS[image_format], width, height, mode, bits, max(1, page_count), samples, decoded
    )


def _bit_depth(mode: str) -> int:
    if mode == "1":
        return 1
    if mode.startswith("I;16") or mode == "I;16":
        return 16
    if mode in ("I", "F"):
        return 32
    return 8


def _pillow_verify(path: str) -> None:
    """Structural check without decoding (PNG chunk CRCs, JPEG/BMP markers)."""
    try:
        with Image.open(path) as image:
            image.verify()
    except Image.DecompressionBombError as error:
        raise too_many_pixels_from_pillow(error) from error
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as error:
        raise truncated_or_corrupt(error) from error


def _full_decode(path: str) -> tuple[Image.Image, float]:
    """Decode every pixel of the first page: the only reliable test for truncated data. The greyscale
    page and its colourfulness."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return load_grey8_and_colourfulness(path)
    except Image.DecompressionBombError as error:
        raise too_many_pixels_from_pillow(error) from error
    except MemoryError as error:  # the capped decoding process's limit (decode_guard), not a bad file
        raise ValidationError(
            "decoding_limit", "The image could not be decoded within the server's limits: it needed too much memory."
        ) from error
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as error:
        raise truncated_or_corrupt(error) from error
