"""The one definition of image preprocessing, shared by training and inference.

In the spirit of torchvision's references/classification/presets.py: a train
preset and an eval preset, defined once. The fastai DataBlock (train.py) wraps
these functions; the inference engine calls them directly, so a model sees
exactly the same pixels in validation and in production.

Pipeline: decode to 8-bit grey (``imageio.load_grey8``, cheap reduced decoding)
-> square crop (centre for eval, random area/aspect for train) -> resize to the
stage size -> 3 identical channels -> /255 -> ImageNet normalisation.
"""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image

from .imageio import Source, load_grey8

# ImageNet statistics: pretrained bodies expect them; a greyscale SEM image is
# replicated into the three channels first.
NORMALISE_MEAN = (0.485, 0.456, 0.406)
NORMALISE_STD = (0.229, 0.224, 0.225)
RESAMPLE = Image.Resampling.BILINEAR
CHANNELS = 3


CONTRAST_MODES = ("none", "stretch")


def load_for_model(source: Source, size: int, contrast: str = "none") -> Image.Image:
    """Decode with reduced-size decoding down to no less than ``size``, then adjust contrast."""
    return adjust_contrast(load_grey8(source, reduce_to=size), contrast)


def adjust_contrast(img: Image.Image, contrast: str = "none") -> Image.Image:
    """ "stretch": map the image's 0.5-99.5 percentile range to 0..255, so that micrographs of
    different instruments and detector settings reach the model with comparable grey levels."""
    if contrast == "none":
        return img
    if contrast != "stretch":
        raise ValueError(f"contrast must be one of {CONTRAST_MODES}, not {contrast!r}")
    array = np.asarray(img if img.mode == "L" else img.convert("L"), dtype=np.float32)
    low, high = np.percentile(array, [0.5, 99.5])
    if high - low < 1:
        return img
    scaled = (array - low) * (255.0 / (high - low))
    return Image.fromarray(np.clip(scaled + 0.5, 0, 255).astype(np.uint8), mode="L")


def eval_crop_resize(img: Image.Image, size: int) -> Image.Image:
    """Eval preset: largest centred square, resized to ``size`` x ``size``."""
    width, height = img.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    box = (left, top, left + side, top + side)
    return img.resize((size, size), RESAMPLE, box=box, reducing_gap=None)


def train_crop_resize(
    img: Image.Image,
    size: int,
    rng: random.Random,
    scale: tuple[float, float] = (0.35, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Image.Image:
    """Train preset (random-resized crop): zoom and crop augmentation."""
    width, height = img.size
    area = width * height
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        crop_w = int(round(math.sqrt(target_area * aspect)))
        crop_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            left = rng.randint(0, width - crop_w)
            top = rng.randint(0, height - crop_h)
            return img.resize((size, size), RESAMPLE, box=(left, top, left + crop_w, top + crop_h))
    return eval_crop_resize(img, size)


def to_uint8_array(img: Image.Image) -> np.ndarray:
    """(H, W) uint8 array of a greyscale image (channels are added on the tensor)."""
    return np.asarray(img if img.mode == "L" else img.convert("L"), dtype=np.uint8)


def eval_array(source: Source, size: int, contrast: str = "none") -> np.ndarray:
    """Eval preset from a file: decode -> contrast -> centre crop -> resize -> uint8 (H, W)."""
    return to_uint8_array(eval_crop_resize(load_for_model(source, size, contrast), size))


def normalise_batch(batch_uint8, mean=NORMALISE_MEAN, std=NORMALISE_STD):
    """uint8 tensor (N, H, W) or (N, 1, H, W) -> normalised float (N, 3, H, W).

    torch is imported lazily so this module stays cheap for the web process.
    """
    import torch

    if batch_uint8.ndim == 3:
        batch_uint8 = batch_uint8.unsqueeze(1)
    batch = batch_uint8.float().div_(255.0).expand(-1, CHANNELS, -1, -1)
    mean_t = torch.tensor(mean, dtype=batch.dtype, device=batch.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=batch.dtype, device=batch.device).view(1, -1, 1, 1)
    return (batch - mean_t) / std_t
