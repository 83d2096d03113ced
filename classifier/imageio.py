"""Decode any SEM image into 8-bit greyscale (numpy + Pillow only, no torch).

SEM files come as 8-bit and 16-bit TIFF/PNG, palette TIFFs (Zeiss), RGB JPEGs
and multi-page TIFFs. Everything downstream (data-bar detection, derivatives,
the model) works on one representation: a Pillow 'L' image.
"""

from __future__ import annotations

import io
import os
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from .colour import colourfulness, colourfulness_of_array

Source = str | os.PathLike | BinaryIO

# Percentiles for mapping >8-bit data to 0..255: robust to hot pixels and to
# the saturated text of a data bar, unlike a plain min/max stretch.
LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
# Percentiles are computed on at most this many pixels (strided sample): the
# result is the same to within a grey level and it is much faster.
_PERCENTILE_SAMPLE = 1 << 20
# The percentile stretch converts to float32 this many pixels at a time.
_BAND_PIXELS = 1 << 20

_EIGHT_BIT_MODES = {"L", "1", "P", "RGB", "RGBA", "LA", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "La"}


def load_grey8(source: Source, *, reduce_to: int | None = None) -> Image.Image:
    """Open a path or binary file object and return an 8-bit greyscale image.

    Takes the first page of multi-page files. 16-bit, 32-bit integer and float
    data are percentile-stretched to 0..255. When ``reduce_to`` (a target short
    side in pixels) is given, the image is decoded or reduced to no less than
    that short side cheaply (JPEG draft mode, integer ``reduce``); the caller
    does the final high-quality resize.
    """
    return _decode_first_page(source, reduce_to, measure_colour=False)[0]


def load_grey8_and_colourfulness(source: Source) -> tuple[Image.Image, float]:
    """``load_grey8`` at full resolution, and the colourfulness (classifier.colour) of the decoded
    pixels before they are made grey: ingestion decodes an upload once and needs both."""
    return _decode_first_page(source, None, measure_colour=True)


def _decode_first_page(source: Source, reduce_to: int | None, *, measure_colour: bool) -> tuple[Image.Image, float]:
    data = _read_bytes_if_needed(source)
    colour = 0.0
    try:
        image = Image.open(data)
        image.seek(0)
        if reduce_to and image.format == "JPEG":
            _draft_for_short_side(image, reduce_to)
        image.load()
        if measure_colour:
            colour = colourfulness(image)
        grey = to_grey8(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as pillow_error:
        grey, colour = _load_with_tifffile(data, pillow_error, measure_colour)
    if reduce_to:
        grey = _integer_reduce(grey, reduce_to)
    return grey, colour


def to_grey8(image: Image.Image) -> Image.Image:
    """Convert a decoded Pillow image of any mode to 'L'."""
    mode = image.mode
    if mode == "L":
        return image
    if mode in ("LA", "La", "PA"):
        # Alpha in SEM exports is padding, not content: keep the grey channel.
        return image.convert("LA").getchannel(0) if mode == "PA" else image.getchannel(0)
    if mode in ("RGBA", "RGBa"):
        return image.convert("RGB").convert("L")
    if mode in _EIGHT_BIT_MODES:
        return image.convert("L")
    # I;16, I;16B, I;16L, I;16N, I, F: wider than 8 bits.
    return Image.fromarray(stretch_to_uint8(_as_array(image)), mode="L")


def stretch_to_uint8(array: np.ndarray) -> np.ndarray:
    """Map a 2-D array of any numeric type to uint8 by a percentile stretch.

    uint8 data passes through unchanged. Constant images (e.g. the blanked
    vendor test files, all zeros) map to 0 instead of dividing by zero.
    Works on bands of rows, so the float32 temporaries stay small whatever
    the image size (the result is the same as on the whole array at once).
    """
    if array.ndim == 3:
        array = _rgb_to_luma(array)
    if array.dtype == np.uint8:
        return array
    low, high = _robust_range(array)
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8)
    scale = 255.0 / (high - low)
    out = np.empty(array.shape, dtype=np.uint8)
    for band in _row_bands(array):
        values = _finite_float32(array[band])
        values -= low
        values *= scale
        values += 0.5
        np.clip(values, 0, 255, out=values)
        out[band] = values
    return out


def _row_bands(array: np.ndarray) -> list[slice]:
    """Slices of about _BAND_PIXELS pixels over the first axis of a 1-D or 2-D array."""
    height = array.shape[0] if array.ndim else 1
    per_row = max(1, array.size // max(1, height))
    step = max(1, _BAND_PIXELS // per_row)
    return [slice(start, start + step) for start in range(0, height, step)]


def _finite_float32(values: np.ndarray) -> np.ndarray:
    """A float32 copy with NaN and infinities replaced by 0."""
    values = values.astype(np.float32)
    finite = np.isfinite(values)
    if not finite.all():
        values[~finite] = 0.0
    return values


def _robust_range(array: np.ndarray) -> tuple[float, float]:
    flat = array.reshape(-1)
    step = max(1, flat.size // _PERCENTILE_SAMPLE)
    low, high = np.percentile(_finite_float32(flat[::step]), [LOW_PERCENTILE, HIGH_PERCENTILE])
    if high <= low:  # mostly-constant image with a few outliers: use the full range
        low, high = np.inf, -np.inf
        for band in _row_bands(flat):
            values = _finite_float32(flat[band])
            low, high = min(low, float(values.min())), max(high, float(values.max()))
    return float(low), float(high)


def _as_array(image: Image.Image) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype.byteorder not in ("=", "|"):
        array = array.astype(array.dtype.newbyteorder("="))
    return array


def _rgb_to_luma(array: np.ndarray) -> np.ndarray:
    channels = array[..., :3].astype(np.float32)
    if channels.shape[-1] < 3:
        return array[..., 0]
    luma = channels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return luma.astype(array.dtype) if array.dtype == np.uint8 else luma


def _read_bytes_if_needed(source: Source):
    """Pillow and tifffile both accept paths; file objects are buffered once so
    the tifffile fallback can re-read them from the start."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if hasattr(source, "seek"):
        try:
            source.seek(0)
        except (OSError, ValueError):
            pass
    return io.BytesIO(source.read())


def _load_with_tifffile(data, pillow_error: Exception, measure_colour: bool) -> tuple[Image.Image, float]:
    """Fallback for TIFFs Pillow cannot decode (some compressed FEI files): the grey image and, if
    asked, the colourfulness."""
    import tifffile  # imported lazily: only needed for unusual files

    if hasattr(data, "seek"):
        data.seek(0)
    try:
        array = tifffile.imread(data, key=0)
    except Exception as tiff_error:  # tifffile raises many exception types
        raise ValueError(
            f"cannot decode image: Pillow said {pillow_error!r}; tifffile said {tiff_error!r}"
        ) from tiff_error
    array = np.squeeze(np.asarray(array))
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[-1] not in (3, 4):
        array = np.moveaxis(array, 0, -1)  # planar RGB
    if array.ndim not in (2, 3):
        raise ValueError(f"unsupported image shape {array.shape}")
    colour = colourfulness_of_array(array) if measure_colour else 0.0
    return Image.fromarray(stretch_to_uint8(array), mode="L"), colour


def _draft_for_short_side(image: Image.Image, short_side: int) -> None:
    """Let the JPEG decoder do DCT scaling (1/2, 1/4, 1/8) while keeping the
    short side >= ``short_side``; Pillow picks the largest scale that fits."""
    width, height = image.size
    scale = short_side / min(width, height)
    if scale < 1:
        image.draft("L", (max(1, int(width * scale + 0.999)), max(1, int(height * scale + 0.999))))


def _integer_reduce(image: Image.Image, short_side: int) -> Image.Image:
    """Box-reduce by an integer factor that keeps the short side >= target."""
    factor = min(image.size) // short_side
    if factor >= 2:
        return image.reduce(factor)
    return image
