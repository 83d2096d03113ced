"""The colourfulness that puts a colour upload out of scope (classifier.colour): greyscale measures 0 in
any mode, a saturated picture far above the threshold, real SEM files of ../shared under it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classifier.colour import colourfulness, colourfulness_of_array
from classifier.imageio import load_grey8, load_grey8_and_colourfulness

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
THRESHOLD = 15.0  # SEM_COLOUR_OUT_OF_SCOPE's default


def _gradient() -> np.ndarray:
    y, x = np.mgrid[0:300, 0:400]
    return ((x + y) * 255 // 700).astype(np.uint8)


def test_a_greyscale_image_measures_zero_in_every_mode():
    grey = Image.fromarray(_gradient())
    for mode in ("L", "RGB", "RGBA", "P", "CMYK"):
        assert colourfulness(grey.convert(mode)) == pytest.approx(0.0, abs=0.5), mode
    assert colourfulness(Image.fromarray(_gradient().astype(np.uint16) * 257)) == 0.0  # I;16: grey by construction


def test_a_saturated_image_measures_far_above_the_threshold():
    rgb = np.zeros((300, 400, 3), np.uint8)
    rgb[:, :200, 0] = 255  # red half
    rgb[:, 200:, 2] = 255  # blue half
    assert colourfulness(Image.fromarray(rgb)) > 100
    sixteen = rgb.astype(np.uint16) * 257  # as tifffile decodes a 16-bit RGB TIFF
    assert colourfulness_of_array(sixteen) == pytest.approx(colourfulness(Image.fromarray(rgb)), rel=0.01)


def test_a_large_image_is_measured_on_a_reduced_copy_with_the_same_result():
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    large = Image.fromarray(tiles).resize((3200, 2400), Image.Resampling.NEAREST)
    small = Image.fromarray(tiles).resize((400, 300), Image.Resampling.NEAREST)
    assert colourfulness(large) == pytest.approx(colourfulness(small), rel=0.05)


def test_the_decode_measures_the_colour_before_making_it_grey():
    import matplotlib

    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    grey, measured = load_grey8_and_colourfulness(photo)
    assert measured > 3 * THRESHOLD
    assert grey.mode == "L" and np.array_equal(np.asarray(grey), np.asarray(load_grey8(photo)))
    buffer = io.BytesIO()
    grey.save(buffer, format="PNG")
    assert load_grey8_and_colourfulness(buffer)[1] == 0.0


def test_real_sem_files_measure_under_the_threshold():
    """The colour JPEGs (an RGB container for a greyscale detector) and the Zeiss palette TIFFs."""
    jpegs = [path for name in ("sem-real", "sem-real-2") for path in sorted((SHARED / name).rglob("*.jp*g"))]
    files = jpegs + sorted((SHARED / "sem-vendor-tiff").glob("*Zeiss*"))
    if not files:
        pytest.skip("../shared/sem-real* and sem-vendor-tiff not present")
    for path in files:
        assert load_grey8_and_colourfulness(path)[1] < THRESHOLD, path.name
