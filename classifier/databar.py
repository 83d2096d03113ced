"""Find and remove the instrument data bar at the bottom of an SEM image.

SEM instruments (FEI/Thermo, Zeiss, JEOL, TESCAN, ...) burn an information
banner into the bottom of the image: a band of near-uniform black or white
background with text, boxes and a scale bar. It carries no information about
the specimen but is trivially learnable, so models must never see it.

Two independent cues, both required to agree with the geometry of a banner:

* background run: starting from the bottom, a contiguous band of rows whose
  pixels are mostly at one extreme grey level (the banner background), with
  sparse high-contrast text on it;
* separator line: a full-width, uniform row (the banner's border line) with a
  sharp step to the row above, below which the rows look like banner rows.

Micrographs rarely contain long runs of rows that are >=50 % one exact grey
level at black or white, and almost never a perfectly uniform full-width row,
so natural textures are left alone.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# A banner is between these fractions of the image height.
MIN_BAR_FRACTION = 0.025
MAX_BAR_FRACTION = 0.35
# Pixels within this many grey levels of the banner background count as background.
BACKGROUND_TOLERANCE = 6
# A banner row has at least this fraction of background pixels (text covers the rest).
MIN_BACKGROUND_FRACTION = 0.5
# Banner backgrounds are black or white, not mid-grey.
DARK_BACKGROUND_MAX = 70
LIGHT_BACKGROUND_MIN = 185
# A row is a ruled line when this fraction of it is within LINE_TOLERANCE of its median.
LINE_UNIFORM_FRACTION = 0.9
LINE_TOLERANCE = 12
# Minimum grey-level step between a separator line and the row above it.
MIN_EDGE_STEP = 25
# Ruled lines (box borders) inside a banner are thin; a thicker uniform band
# off the background level is a flat region of the specimen, not the banner.
MAX_LINE_RUN_FRACTION = 0.006
# Text: pixels this far from the background; a banner has at least a few of them.
TEXT_CONTRAST = 90
MIN_TEXT_FRACTION = 0.002


def detect_databar(grey: np.ndarray) -> int | None:
    """Row index where the data bar begins, or None when there is no bar.

    ``grey`` is a 2-D uint8 array (height, width).
    """
    grey = _as_2d_uint8(grey)
    height = grey.shape[0]
    if height < 40 or grey.shape[1] < 40:
        return None
    background = _banner_background(grey)
    if background is None:
        return None
    rows = _RowFeatures(grey, background)
    candidates = [c for c in (_separator_line_top(grey, rows), _background_run_top(rows)) if c is not None]
    plausible = [c for c in candidates if _is_plausible_banner(grey, rows, c, background)]
    if not plausible:
        return None
    # Prefer the highest plausible start: the separator line sits above the run.
    return min(plausible)


def crop_databar(img: Image.Image) -> tuple[Image.Image, int]:
    """Return (image without the data bar, number of rows removed)."""
    grey = np.asarray(img if img.mode == "L" else img.convert("L"))
    top = detect_databar(grey)
    if top is None:
        return img, 0
    return img.crop((0, 0, img.width, top)), img.height - top


# Row features are computed on bands of rows of about this many pixels: the temporaries (int16 and
# float64 copies) then stay a few tens of MB instead of ~20 bytes per pixel of the whole image.
_FEATURE_BAND_PIXELS = 1 << 20


class _RowFeatures:
    """Per-row statistics used by both cues (computed once, vectorised per band of rows)."""

    def __init__(self, grey: np.ndarray, background: int) -> None:
        height, width = grey.shape
        self.background_fraction = np.empty(height)
        self.text_fraction = np.empty(height)
        self.median = np.empty(height)
        self.uniform_fraction = np.empty(height)
        step = max(1, _FEATURE_BAND_PIXELS // max(1, width))
        for start in range(0, height, step):
            band = slice(start, start + step)
            rows = grey[band]
            diff = np.abs(rows.astype(np.int16) - background)
            self.background_fraction[band] = (diff <= BACKGROUND_TOLERANCE).mean(axis=1)
            self.text_fraction[band] = (diff >= TEXT_CONTRAST).mean(axis=1)
            del diff
            medians = np.median(rows, axis=1)
            self.median[band] = medians
            self.uniform_fraction[band] = (np.abs(rows.astype(np.int16) - medians[:, None]) <= LINE_TOLERANCE).mean(
                axis=1
            )
        self.is_line = self.uniform_fraction >= LINE_UNIFORM_FRACTION
        self.is_banner_row = (self.background_fraction >= MIN_BACKGROUND_FRACTION) | self.is_line


def _as_2d_uint8(grey: np.ndarray) -> np.ndarray:
    grey = np.asarray(grey)
    if grey.ndim == 3:
        grey = grey[..., :3].mean(axis=2)
    if grey.dtype != np.uint8:
        grey = np.clip(grey, 0, 255).astype(np.uint8)
    return grey


def _banner_background(grey: np.ndarray) -> int | None:
    """Most common grey level of the bottom rows, if it is black or white."""
    height = grey.shape[0]
    bottom = grey[height - max(3, int(height * MIN_BAR_FRACTION)) :]
    counts = np.bincount(bottom.ravel(), minlength=256)
    # Smooth by the tolerance so near-black noise (0..5) votes together.
    window = np.ones(2 * BACKGROUND_TOLERANCE + 1)
    smoothed = np.convolve(counts, window, mode="same")
    level = int(np.argmax(smoothed))
    if level <= DARK_BACKGROUND_MAX or level >= LIGHT_BACKGROUND_MIN:
        return level
    return None


def _max_gap(height: int) -> int:
    """Dense text rows (logos, thick scale bars) may interrupt the banner briefly."""
    return max(2, int(height * 0.015))


def _background_run_top(rows: _RowFeatures) -> int | None:
    """Top of the contiguous run of banner rows that reaches the bottom edge."""
    height = len(rows.is_banner_row)
    limit = int(height * (1 - MAX_BAR_FRACTION)) - 1
    max_line_run = max(3, int(height * MAX_LINE_RUN_FRACTION))
    top, gap, line_run = None, 0, 0
    for row in range(height - 1, max(limit, 0) - 1, -1):
        if rows.background_fraction[row] >= MIN_BACKGROUND_FRACTION:
            top, gap, line_run = row, 0, 0
        elif rows.is_line[row] and line_run < max_line_run:
            top, gap, line_run = row, 0, line_run + 1
        elif rows.is_line[row]:
            # A thick flat band: the specimen, so the banner ended below it.
            return None if top is None else top + line_run
        else:
            gap += 1
            line_run = 0
            if top is None or gap > _max_gap(height):
                break
    else:
        return None  # banner rows all the way past the maximum height: not a banner
    return top


def _separator_line_top(grey: np.ndarray, rows: _RowFeatures) -> int | None:
    """Highest full-width ruled line in the bottom part with a sharp step above it."""
    height = grey.shape[0]
    first = int(height * (1 - MAX_BAR_FRACTION))
    last = height - int(height * MIN_BAR_FRACTION)
    for row in range(max(first, 1), last):
        if not rows.is_line[row]:
            continue
        above = grey[max(0, row - 3) : row].astype(np.float32)
        step = np.abs(above.mean(axis=0) - float(rows.median[row])).mean()
        if step >= MIN_EDGE_STEP:
            return row
    return None


def _is_plausible_banner(grey: np.ndarray, rows: _RowFeatures, top: int, background: int) -> bool:
    """Geometry and content checks shared by both cues."""
    height = grey.shape[0]
    bar_height = height - top
    if not (MIN_BAR_FRACTION * height <= bar_height <= MAX_BAR_FRACTION * height):
        return False
    band = slice(top, height)
    # Mostly banner rows, mostly background, with some high-contrast text on it.
    if rows.is_banner_row[band].mean() < 0.85:
        return False
    if rows.background_fraction[band].mean() < MIN_BACKGROUND_FRACTION:
        return False
    if rows.text_fraction[band].mean() < MIN_TEXT_FRACTION:
        return False
    # The micrograph just above must not look like banner background, else the
    # "banner" is just a dark/bright region of the specimen continuing upwards.
    above = slice(max(0, top - max(3, int(height * 0.03))), top)
    above_rows_like_banner = (rows.background_fraction[above] >= MIN_BACKGROUND_FRACTION) & ~rows.is_line[above]
    return above_rows_like_banner.mean() < 0.5 or _is_sharp_edge(grey, top)


def _is_sharp_edge(grey: np.ndarray, top: int) -> bool:
    """A ruled line at the banner top with a clear step to the image above."""
    if top < 2:
        return False
    line = grey[top].astype(np.float32)
    above = grey[top - 2].astype(np.float32)
    return bool(
        np.abs(line - above).mean() >= MIN_EDGE_STEP
        and (np.abs(line - np.median(line)) <= LINE_TOLERANCE).mean() >= LINE_UNIFORM_FRACTION
    )
