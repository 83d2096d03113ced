"""Images that are not SEM micrographs, made from what is installed: the out-of-scope detector's view of
the outside (outlier exposure: Hendrycks, Mazeika & Dietterich, ICLR 2019).

A detector that only measures how far an image is from the training images (classifier.ood's kNN) cannot
tell a greyscale optical photo from a micrograph of an unseen source: on ImageNet features both are about
as far. A linear classifier trained to separate the lab's curated micrographs from a few auxiliary
outliers can, and on outliers of other kinds than it saw (bench/bench_trust.py measures it on scikit-image's
sample images, none of which are here). The auxiliary outliers, all greyscale like every derivative:

- optical photos shipped with matplotlib (a dependency), whole, cropped and rotated;
- screenshots (matplotlib's logo, charts rendered by Agg), elevation maps in false colour, an MRI slice;
- blank, noise and gradient frames;
- a few of the lab's own training images defocused far out of focus (``defocused``).

No download: everything comes from installed files or is drawn here, seeded. NumPy, Pillow, matplotlib.
"""

from __future__ import annotations

import gzip
import io
import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from .preprocess import make_derivative

SIZE = 768  # side of the drawn frames (real micrographs are 0.5-4 megapixels; derivatives are 256 px)
DEFOCUS_SIGMA = 0.04  # of the image's width: far out of focus, nothing of the structure left
PHOTOS = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")

log = logging.getLogger(__name__)


def made_outliers() -> list[tuple[str, str, np.ndarray]]:
    """(kind, name, uint8 array) of every made outlier but the defocused ones (those need the lab's images)."""
    return photos() + renders() + frames()


def photos() -> list[tuple[str, str, np.ndarray]]:
    """Optical photos (two shipped with matplotlib), whole, as three crops each and rotated."""
    out = []
    for name in _shipped(PHOTOS):
        photo = np.asarray(Image.open(_sample(name)).convert("RGB"))
        h, w = photo.shape[:2]
        crops = {"full": photo, "tl": photo[: h // 2, : w // 2], "br": photo[h // 2 :, w // 2 :]}
        crops |= {"centre": photo[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4], "rot": np.rot90(photo)}
        out += [("photo", f"{Path(name).stem}-{key}", np.ascontiguousarray(a)) for key, a in crops.items()]
    return out


def renders() -> list[tuple[str, str, np.ndarray]]:
    """Screenshots and maps: matplotlib's logo, charts rendered by Agg, elevation maps in false colour
    (like EDX maps), an MRI slice."""
    out = [("screenshot", f"chart-{i}", _chart(i)) for i in range(4)]
    out += [("screenshot", "logo", np.asarray(Image.open(_sample(n)).convert("RGB"))) for n in _shipped(["logo2.png"])]
    for name in _shipped(["topobathy.npz", "jacksboro_fault_dem.npz"]):
        data = np.load(_sample(name))
        field = np.asarray(data[data.files[0]], float)
        for cmap in ("viridis", "terrain"):
            out.append(("map", f"{Path(name).stem}-{cmap}", _colour(field, cmap)))
    for name in _shipped(["s1045.ima.gz"]):
        with gzip.open(_sample(name)) as handle:
            mri = np.frombuffer(handle.read(), np.uint16).reshape(256, 256).astype(float)
        out.append(("map", "mri", (255 * mri / mri.max()).astype(np.uint8)))
    return out


def frames() -> list[tuple[str, str, np.ndarray]]:
    """Blank, noise and gradient frames."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    out = [("blank", f"level-{v}", np.full((SIZE, SIZE), v, np.uint8)) for v in (0, 128, 255)]
    out.append(("blank", "dark-noisy", np.clip(rng.normal(8, 2, (SIZE, SIZE)), 0, 255).astype(np.uint8)))
    out.append(("noise", "gaussian", np.clip(rng.normal(128, 40, (SIZE, SIZE)), 0, 255).astype(np.uint8)))
    out.append(("noise", "uniform", rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)))
    out.append(("noise", "salt-pepper", (rng.random((SIZE, SIZE)) < 0.5).astype(np.uint8) * 255))
    out.append(("noise", "colour", rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)))
    for name, ramp in (("horizontal", x), ("vertical", y), ("diagonal", (x + y) / 2)):
        out.append(("gradient", name, (255 * ramp).astype(np.uint8)))
    radial = np.hypot(x - 0.5, y - 0.5) / np.hypot(0.5, 0.5)
    out.append(("gradient", "radial", (255 * radial).astype(np.uint8)))
    return out


def defocused(sources, names) -> list[tuple[str, str, np.ndarray]]:
    """The images at ``sources`` (paths or files) blurred far out of focus (Gaussian, sigma 4 % of the width)."""
    out = []
    for source, name in zip(sources, names):
        with Image.open(source) as image:
            grey = image.convert("L")
        out.append(("defocused", name, np.asarray(grey.filter(ImageFilter.GaussianBlur(DEFOCUS_SIGMA * grey.width)))))
    return out


def one_per_group(paths, groups, count: int) -> list[str]:
    """At most ``count`` of ``paths``, each of another group (series): defocused copies of one series
    would teach the detector one texture ``count`` times."""
    chosen, seen = [], set()
    for path, group in sorted(zip(paths, groups), key=lambda pair: str(pair[0])):
        if group not in seen and len(chosen) < count:
            seen.add(group)
            chosen.append(path)
    return chosen


def as_derivative(array: np.ndarray) -> io.BytesIO:
    """The PNG a derivative of this image would be (greyscale, short side 256 px), as a file object."""
    buffer = io.BytesIO()
    make_derivative(Image.fromarray(array).convert("L")).save(buffer, format="PNG")
    buffer.seek(0)
    return buffer


def _shipped(names) -> list[str]:
    """The sample files this matplotlib has: a build without its sample data (some distributions strip
    it) makes fewer outliers rather than failing a training."""
    present = [name for name in names if _sample(name).is_file()]
    if len(present) < len(names):
        log.warning("matplotlib's sample data lacks %s: fewer made outliers", sorted(set(names) - set(present)))
    return present


def _sample(name: str) -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / name


def _chart(index: int) -> np.ndarray:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend in a worker

    rng = np.random.default_rng(index)
    figure = Figure(figsize=(6, 4.5), dpi=100)
    axes = figure.subplots()
    x = np.linspace(0, 10, 200)
    if index == 0:
        axes.plot(x, np.sin(x) + rng.normal(0, 0.1, x.size))
    elif index == 1:
        axes.bar(range(8), rng.uniform(1, 5, 8))
    elif index == 2:
        axes.scatter(rng.normal(size=300), rng.normal(size=300), s=6)
    else:
        axes.hist(rng.normal(size=2000), bins=40)
        axes.set_title("EDX spectrum counts")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def _colour(field: np.ndarray, cmap: str) -> np.ndarray:
    import matplotlib

    span = np.nanmax(field) - np.nanmin(field)
    scaled = (np.nan_to_num(field) - np.nanmin(field)) / (span or 1.0)
    return (matplotlib.colormaps[cmap](scaled)[..., :3] * 255).astype(np.uint8)
