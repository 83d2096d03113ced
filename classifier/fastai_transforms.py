"""fastai wrappers around the presets in ``transforms.py``.

No ``from __future__ import annotations`` here on purpose: fastai dispatches
``encodes`` on the real annotation types, which string annotations break.
"""

import random
from pathlib import Path

from fastai.vision.all import PILImage, RandTransform, Transform

from . import transforms


class LoadGrey(Transform):
    """Type transform: decode with the shared loader (8-bit grey, reduced decoding)."""

    def __init__(self, size, contrast="none"):
        super().__init__()
        self.size, self.contrast = size, contrast

    def encodes(self, path: (str, Path)):
        return PILImage(transforms.load_for_model(path, self.size, self.contrast))


class SemCropResize(RandTransform):
    """Item transform: train preset (random-resized crop) on the training split,
    eval preset (centre square) everywhere else; output RGB for fastai."""

    order = 1  # before ToTensor
    split_idx = None  # RandTransform defaults to training only; the eval preset must run on validation too

    def __init__(self, size, scale=(0.35, 1.0)):
        super().__init__(p=1.0)
        self.size, self.scale = size, tuple(scale)
        self.is_train = False

    def before_call(self, b, split_idx):
        self.is_train = split_idx == 0

    def encodes(self, img: PILImage):
        if self.is_train:
            out = transforms.train_crop_resize(img, self.size, random, scale=self.scale)
        else:
            out = transforms.eval_crop_resize(img, self.size)
        return PILImage(out.convert("RGB"))
