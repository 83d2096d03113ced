"""Model-input derivatives: the small greyscale images the classifier trains on.

Ingestion stores one derivative per raw image (short side 256 px, data bar
removed); training and inference then read those small PNGs instead of
decoding multi-megabyte TIFFs every epoch. Numpy + Pillow only.
"""

from __future__ import annotations

from PIL import Image

from .databar import crop_databar
from .imageio import Source, load_grey8

DERIVATIVE_SHORT_SIDE = 256


def make_derivative(img: Image.Image, short_side: int = DERIVATIVE_SHORT_SIDE) -> Image.Image:
    """Resize an 8-bit greyscale image (bar already cropped) so its short side
    is ``short_side``, keeping the aspect ratio.

    Lanczos with ``reducing_gap`` first box-reduces by an integer factor and
    then resamples: the quality of a full Lanczos at a fraction of the cost.
    """
    if img.mode != "L":
        img = img.convert("L")
    width, height = img.size
    scale = short_side / min(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == img.size:
        return img.copy()
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def prepare_raw(source: Source, short_side: int = DERIVATIVE_SHORT_SIDE) -> Image.Image:
    """Raw SEM file -> derivative: decode to 8-bit grey, crop the data bar,
    resize. The bar is detected at full resolution (its text and ruled lines
    blur away when reduced), so no reduced decoding here."""
    grey = load_grey8(source)
    cropped, _rows_removed = crop_databar(grey)
    return make_derivative(cropped, short_side)
