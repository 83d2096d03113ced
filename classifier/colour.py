"""How colourful an image is: SEM detectors (secondary, backscattered electrons) give greyscale, so a
colourful upload is an optical photo, a false-colour map or a colourised picture, not a micrograph.

The metric is Hasler & Süsstrunk's (2003, "Measuring colourfulness in natural images"), on 0-255 values:
sqrt(sd(rg)^2 + sd(yb)^2) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2), rg = R - G, yb = (R + G)/2 - B. Their scale
calls under 15 "not colourful"; the 256 real images of ../shared measure at most 4.1 (bench/RESULTS.md).
NumPy and Pillow only.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Measured on a reduced copy: the metric is a mean and a standard deviation over the whole frame, the
# same to a fraction of a unit at 512 px, and the full frame of a large RGB upload would cost memory
# in the capped decoding child.
COLOURFULNESS_SIDE = 512
# Modes that can hold colour. Single-band modes (L, I;16, F, 1, LA) are greyscale by construction; a
# palette (P) may be grey (Zeiss TIFFs) or not, so it is measured.
_COLOUR_MODES = {"RGB", "RGBA", "RGBX", "RGBa", "P", "PA", "CMYK", "YCbCr"}


def colourfulness(image: Image.Image) -> float:
    """Hasler & Süsstrunk's colourfulness of a decoded Pillow image; 0.0 for a greyscale mode."""
    if image.mode not in _COLOUR_MODES:
        return 0.0
    return colourfulness_of_rgb(np.asarray(_reduced(image).convert("RGB")))


def colourfulness_of_array(array: np.ndarray) -> float:
    """The same for a decoded array (tifffile's): (H, W, 3 or 4) of 8 or 16 bits; 0.0 for anything else."""
    if array.ndim != 3 or array.shape[-1] not in (3, 4) or array.dtype not in (np.uint8, np.uint16):
        return 0.0
    step = max(1, max(array.shape[:2]) // COLOURFULNESS_SIDE)
    rgb = array[::step, ::step, :3]
    return colourfulness_of_rgb(rgb if array.dtype == np.uint8 else rgb // 257)


def colourfulness_of_rgb(rgb: np.ndarray) -> float:
    """The metric on an (H, W, 3) array of 0-255 values."""
    red, green, blue = (rgb[..., channel].astype(np.float32) for channel in range(3))
    rg = red - green
    yb = (red + green) / 2 - blue
    spread = np.hypot(rg.std(), yb.std())
    mean = np.hypot(rg.mean(), yb.mean())
    return float(spread + 0.3 * mean)


def _reduced(image: Image.Image) -> Image.Image:
    """At most COLOURFULNESS_SIDE px on the long side (Image.thumbnail's filter, without its full copy)."""
    width, height = image.size
    scale = COLOURFULNESS_SIDE / max(width, height)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if image.mode in ("P", "PA"):  # palette indices cannot be interpolated: sample them
        return image.resize(size, Image.Resampling.NEAREST)
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
