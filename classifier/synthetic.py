"""Synthetic SEM-like images for the 10 NFFA-EUROPE categories (numpy + Pillow only).

Used by the quick start's demo data set, the tests and the benchmarks, so it must be fast
(a few ms per 512x384 image) and deterministic for a given (category, seed).

Each category has its own geometry (cells, fibres, grains, combs, rods, particles, lattices,
sponge, powder, a tip). A shared "SEM look" turns the geometry into a micrograph: secondary
electron edge brightening, one-sided shadowing from the detector position, a slight blur,
shot and read noise. The global brightness and contrast are randomised per image so that a
classifier has to learn shapes and textures, not the mean grey level. An instrument-style data
bar (dark band, white text, scale bar) of random height is drawn at the bottom.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

CATEGORIES = (
    "Biological",
    "Fibres",
    "Films_Coated_Surface",
    "MEMS_devices_and_electrodes",
    "Nanowires",
    "Particles",
    "Patterned_surface",
    "Porous_Sponge",
    "Powder",
    "Tips",
)

DEFAULT_SIZE = (512, 384)
# Data bar height as a fraction of the image height (instruments use roughly 5-15 %).
DATABAR_FRACTION = (0.06, 0.14)
MIN_DATABAR_ROWS = 16

Size = tuple[int, int]


def make_image(category: str, seed: int, size: Size = DEFAULT_SIZE, databar: bool = True) -> Image.Image:
    """An 8-bit greyscale ('L') SEM-like image of ``category``; the same arguments give the same pixels."""
    if category not in _GENERATORS:
        raise ValueError(f"unknown category {category!r}; expected one of {', '.join(CATEGORIES)}")
    width, height = size
    if width < 32 or height < 32:
        raise ValueError(f"image size {size} is too small (minimum 32x32)")
    # Category index in the seed: the same seed gives unrelated images for different categories.
    rng = np.random.default_rng([CATEGORIES.index(category), int(seed) & 0xFFFFFFFF])
    surface = _GENERATORS[category](rng, width, height)
    grey = _sem_look(surface, rng)
    image = Image.fromarray(grey, mode="L").filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 0.9)))
    if databar:
        draw_databar(image, rng)
    return image


def write_dataset(
    root: str | Path,
    per_class: int,
    size: Size = DEFAULT_SIZE,
    seed: int = 0,
    categories: tuple[str, ...] = CATEGORIES,
    fmt: str = "png",
    progress: Callable[[int], object] | None = None,
) -> list[Path]:
    """Write ``per_class`` images per category in the folder-per-category layout; returns the paths.

    Deterministic: the same arguments write the same bytes to the same names (re-runs overwrite).
    ``progress(1)`` is called after each image (e.g. a tqdm bar's update).
    """
    root = Path(root)
    paths = []
    for category in categories:
        folder = root / category
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            image = make_image(category, seed * 100_003 + index, size=size)
            path = folder / f"{category.lower()}_{seed:04d}_{index:05d}.{fmt}"
            image.save(path)
            paths.append(path)
            if progress:
                progress(1)
    return paths


# ---------------------------------------------------------------------------------------------
# SEM look
# ---------------------------------------------------------------------------------------------


def _sem_look(surface: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Surface (float32 height/material map, 0..1) -> uint8 micrograph."""
    smooth = _blur(surface, 1.2)
    grad_y, grad_x = np.gradient(smooth)
    slope = np.hypot(grad_x, grad_y)
    slope /= max(float(np.percentile(slope, 99.5)), 1e-6)
    # The Everhart-Thornley detector sits on one side: faces towards it are brighter.
    angle = rng.uniform(0, 2 * math.pi)
    facing = grad_x * math.cos(angle) + grad_y * math.sin(angle)
    facing /= max(float(np.abs(facing).max()), 1e-6)
    signal = 0.45 * surface + rng.uniform(0.35, 0.6) * np.minimum(slope, 1.5) + 0.15 * facing
    signal += 0.08 * _value_noise(rng, surface.shape, cells=4)  # uneven charging / illumination
    signal = _normalise(signal, rng)
    # Shot noise scales with the signal; read noise does not.
    signal = signal + rng.normal(0.0, 1.0, signal.shape).astype(np.float32) * (
        rng.uniform(2.0, 6.0) * np.sqrt(np.maximum(signal, 0) / 255.0) * 4 + rng.uniform(1.0, 4.0)
    )
    return np.clip(signal, 0, 255).astype(np.uint8)


def _normalise(signal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random brightness and contrast, so the mean grey level does not give the class away."""
    low, high = np.percentile(signal[::4, ::4], [1, 99])
    unit = (signal - low) / max(float(high - low), 1e-6)
    centre = rng.uniform(80, 170)
    # Keep the darkest and brightest 1 % off the rails: real detectors are set up that way, and
    # clipped flat black regions would look like a data bar background.
    contrast = rng.uniform(110, max(111.0, min(220.0, 2 * (centre - 18), 2 * (245 - centre))))
    return ((unit - 0.5) * contrast + centre).astype(np.float32)


def _blur(array: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur of a float array in 0..1 through Pillow (fast, 8-bit precision is enough)."""
    image = Image.fromarray(np.clip(array * 255, 0, 255).astype(np.uint8), mode="L")
    return np.asarray(image.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32) / 255.0


def _value_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Smooth random field in -1..1 with about ``cells`` blobs across: a small grid upsampled bicubically."""
    height, width = shape
    grid_w = max(2, cells)
    grid_h = max(2, int(round(cells * height / width)))
    grid = rng.uniform(0, 255, (grid_h, grid_w)).astype(np.uint8)
    image = Image.fromarray(grid, mode="L").resize((width, height), Image.BICUBIC)
    return np.asarray(image, dtype=np.float32) / 127.5 - 1.0


def _canvas(width: int, height: int, value: int = 0) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("L", (width, height), value)
    return image, ImageDraw.Draw(image)


def _as_surface(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32) / 255.0


# ---------------------------------------------------------------------------------------------
# Category geometries: each returns a float32 surface map (height, width) in 0..1
# ---------------------------------------------------------------------------------------------


def _biological(rng, width, height):
    """Cells: rounded, slightly irregular bodies with bright membranes and textured interiors."""
    image, draw = _canvas(width, height, int(rng.uniform(10, 40)))
    scale = min(width, height)
    for _ in range(int(rng.integers(3, 9))):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        radius = scale * rng.uniform(0.07, 0.18)
        # A cell is a few overlapping ellipses: irregular but smooth outlines.
        for _lobe in range(int(rng.integers(1, 4))):
            ox, oy = rng.normal(0, radius * 0.3, 2)
            rx, ry = radius * rng.uniform(0.7, 1.2), radius * rng.uniform(0.6, 1.1)
            box = (cx + ox - rx, cy + oy - ry, cx + ox + rx, cy + oy + ry)
            draw.ellipse(box, fill=int(rng.uniform(110, 160)), outline=235, width=int(rng.integers(2, 5)))
        # Microvilli / blebs on the surface.
        for _ in range(int(rng.integers(10, 30))):
            angle, dist = rng.uniform(0, 2 * math.pi), radius * rng.uniform(0.2, 0.9)
            px, py = cx + dist * math.cos(angle), cy + dist * math.sin(angle)
            r = rng.uniform(1.5, 4)
            draw.ellipse((px - r, py - r, px + r, py + r), fill=210)
    surface = _as_surface(image)
    return surface + 0.12 * _value_noise(rng, surface.shape, cells=24) * (surface > 0.3)


def _fibres(rng, width, height):
    """Long curvy fibres crossing the field, on a dark filter background."""
    image, draw = _canvas(width, height, int(rng.uniform(5, 40)))
    diagonal = math.hypot(width, height)
    for _ in range(int(rng.integers(5, 14))):
        x, y = rng.uniform(-0.1 * width, 1.1 * width), rng.uniform(-0.1 * height, 1.1 * height)
        heading = rng.uniform(0, 2 * math.pi)
        curl = rng.uniform(0.02, 0.12)
        step = diagonal / 40
        points = [(x, y)]
        for _step in range(60):
            heading += rng.normal(0, curl)
            x, y = x + step * math.cos(heading), y + step * math.sin(heading)
            points.append((x, y))
        fibre_width = int(rng.integers(3, 12))
        draw.line(points, fill=int(rng.uniform(150, 230)), width=fibre_width, joint="curve")
    return _as_surface(image)


def _films(rng, width, height):
    """Polycrystalline film: Voronoi grains with slightly different grey levels and dark boundaries."""
    step = 4  # compute the grain map at 1/4 resolution: fast, and the boundaries stay crisp enough
    small_w, small_h = max(8, width // step), max(8, height // step)
    count = int(rng.integers(60, 260))
    seeds = rng.uniform(0, 1, (count, 2)) * (small_w, small_h)
    ys, xs = np.mgrid[0:small_h, 0:small_w].astype(np.float32)
    best = np.full((small_h, small_w), np.inf, dtype=np.float32)
    labels = np.zeros((small_h, small_w), dtype=np.int32)
    for index, (sx, sy) in enumerate(seeds):
        dist = (xs - sx) ** 2 + (ys - sy) ** 2
        closer = dist < best
        best[closer] = dist[closer]
        labels[closer] = index
    grain_levels = rng.uniform(0.35, 0.75, count).astype(np.float32)
    grains = Image.fromarray((grain_levels[labels] * 255).astype(np.uint8), mode="L").resize(
        (width, height), Image.NEAREST
    )
    surface = _as_surface(grains)
    edges = np.zeros_like(surface)
    edges[:, 1:] += surface[:, 1:] != surface[:, :-1]
    edges[1:, :] += surface[1:, :] != surface[:-1, :]
    surface = surface - 0.35 * np.minimum(edges, 1)
    return surface + 0.06 * _value_noise(rng, surface.shape, cells=60)


def _mems(rng, width, height):
    """Electrodes: interdigitated comb fingers, pads and tracks with sharp rectangular edges."""
    image, draw = _canvas(width, height, int(rng.uniform(40, 90)))
    horizontal = rng.random() < 0.5
    length, across = (width, height) if horizontal else (height, width)
    pitch = rng.uniform(0.05, 0.12) * across
    finger = pitch * rng.uniform(0.3, 0.55)
    margin = across * rng.uniform(0.08, 0.2)
    overlap = length * rng.uniform(0.1, 0.25)
    level = int(rng.uniform(170, 230))
    position, side = margin, 0
    while position + finger < across - margin:
        start, end = (0, length - overlap) if side == 0 else (overlap, length)
        box = (start, position, end, position + finger)
        draw.rectangle(box if horizontal else (box[1], box[0], box[3], box[2]), fill=level)
        position += pitch
        side ^= 1
    # Bus bars at both ends of the comb.
    bus = length * rng.uniform(0.04, 0.1)
    for start in (0, length - bus):
        box = (start, margin * 0.5, start + bus, across - margin * 0.5)
        draw.rectangle(box if horizontal else (box[1], box[0], box[3], box[2]), fill=level)
    return _as_surface(image)


def _nanowires(rng, width, height):
    """Dense arrays of thin rods, nearly parallel (vertical or tilted), with bright tips."""
    image, draw = _canvas(width, height, int(rng.uniform(20, 70)))
    tilt = rng.normal(0, 0.35)
    count = int(rng.integers(40, 140))
    for _ in range(count):
        base_x, base_y = rng.uniform(-0.2 * width, 1.2 * width), rng.uniform(0.3 * height, 1.3 * height)
        length = rng.uniform(0.15, 0.5) * height
        angle = tilt + rng.normal(0, 0.06)
        tip_x, tip_y = base_x + length * math.sin(angle), base_y - length * math.cos(angle)
        rod = int(rng.integers(2, 6))
        draw.line((base_x, base_y, tip_x, tip_y), fill=int(rng.uniform(140, 200)), width=rod)
        draw.ellipse((tip_x - rod, tip_y - rod, tip_x + rod, tip_y + rod), fill=245)
    return _as_surface(image)


def _particles(rng, width, height):
    """Isolated round particles with spherical shading on a flat substrate."""
    surface = np.full((height, width), rng.uniform(0.05, 0.2), dtype=np.float32)
    ys, xs = np.ogrid[0:height, 0:width]
    scale = min(width, height)
    for _ in range(int(rng.integers(6, 30))):
        radius = scale * rng.uniform(0.02, 0.08)
        cx, cy = rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)
        x0, x1 = int(max(cx - radius - 1, 0)), int(min(cx + radius + 2, width))
        y0, y1 = int(max(cy - radius - 1, 0)), int(min(cy + radius + 2, height))
        dx = (xs[:, x0:x1] - cx) / radius
        dy = (ys[y0:y1, :] - cy) / radius
        inside = 1.0 - dx**2 - dy**2
        dome = np.sqrt(np.clip(inside, 0, None)).astype(np.float32)
        patch = surface[y0:y1, x0:x1]
        patch[inside > 0] = np.maximum(patch, 0.3 + 0.6 * dome)[inside > 0]
    return surface


def _patterned(rng, width, height):
    """A regular lattice of pillars (bright) or holes (dark), square or hexagonal."""
    background = rng.uniform(0.3, 0.5)
    image, draw = _canvas(width, height, int(background * 255))
    pitch = rng.uniform(0.06, 0.14) * min(width, height)
    radius = pitch * rng.uniform(0.2, 0.38)
    holes = rng.random() < 0.5
    hexagonal = rng.random() < 0.5
    square_features = rng.random() < 0.3
    fill = int(rng.uniform(5, 40) if holes else rng.uniform(200, 250))
    offset_x, offset_y = rng.uniform(0, pitch, 2)
    row_pitch = pitch * (math.sqrt(3) / 2 if hexagonal else 1)
    for row in range(int(height / row_pitch) + 2):
        shift = pitch / 2 if hexagonal and row % 2 else 0
        for column in range(int(width / pitch) + 2):
            cx, cy = offset_x + column * pitch + shift - pitch, offset_y + row * row_pitch - pitch
            box = (cx - radius, cy - radius, cx + radius, cy + radius)
            (draw.rectangle if square_features else draw.ellipse)(box, fill=fill)
    return _as_surface(image)


def _porous(rng, width, height):
    """Sponge: thresholded band-limited noise; dark pores in bright interconnected walls."""
    field = _value_noise(rng, (height, width), cells=int(rng.integers(10, 22)))
    field += 0.5 * _value_noise(rng, (height, width), cells=int(rng.integers(25, 45)))
    threshold = rng.uniform(-0.25, 0.2)
    walls = (field > threshold).astype(np.float32)
    # Depth inside the pores: deeper is darker.
    depth = np.clip((threshold - field) * 2, 0, 1)
    return 0.25 + 0.55 * walls - 0.2 * depth


def _powder(rng, width, height):
    """Agglomerates of irregular, faceted grains of many sizes."""
    image, draw = _canvas(width, height, int(rng.uniform(5, 30)))
    scale = min(width, height)
    for _ in range(int(rng.integers(3, 7))):  # agglomerates
        ax, ay = rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height
        spread = scale * rng.uniform(0.06, 0.16)
        for _grain in range(int(rng.integers(20, 45))):
            gx, gy = ax + rng.normal(0, spread), ay + rng.normal(0, spread)
            radius = scale * rng.uniform(0.02, 0.08)
            corners = int(rng.integers(5, 9))
            angles = np.sort(rng.uniform(0, 2 * math.pi, corners))
            radii = radius * rng.uniform(0.6, 1.3, corners)
            polygon = [(gx + r * math.cos(a), gy + r * math.sin(a)) for a, r in zip(angles, radii)]
            draw.polygon(polygon, fill=int(rng.uniform(90, 230)))
    return _as_surface(image)


def _tips(rng, width, height):
    """A single conical tip (AFM/STM probe, field emitter) with cylindrical shading."""
    surface = np.full((height, width), rng.uniform(0.05, 0.2), dtype=np.float32)
    apex_x, apex_y = rng.uniform(0.3, 0.7) * width, rng.uniform(0.1, 0.35) * height
    half_angle = rng.uniform(0.12, 0.4)
    axis = rng.normal(0, 0.15)  # the tip's axis leans a little
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    along = (ys - apex_y) * math.cos(axis) + (xs - apex_x) * math.sin(axis)
    across = (xs - apex_x) * math.cos(axis) - (ys - apex_y) * math.sin(axis)
    apex_radius = rng.uniform(2, 6)
    half_width = np.maximum(along, 0) * math.tan(half_angle) + apex_radius
    inside = (along > -apex_radius) & (np.abs(across) < half_width)
    position = np.clip(across / half_width, -1, 1)  # -1..1 across the cone
    shading = np.sqrt(np.clip(1 - position**2, 0, 1)) * (0.6 + 0.4 * position * rng.choice((-1, 1)))
    surface[inside] = 0.35 + 0.55 * shading[inside]
    return surface


_GENERATORS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "Biological": _biological,
    "Fibres": _fibres,
    "Films_Coated_Surface": _films,
    "MEMS_devices_and_electrodes": _mems,
    "Nanowires": _nanowires,
    "Particles": _particles,
    "Patterned_surface": _patterned,
    "Porous_Sponge": _porous,
    "Powder": _powder,
    "Tips": _tips,
}


# ---------------------------------------------------------------------------------------------
# Data bar
# ---------------------------------------------------------------------------------------------

_FONT = None


def _font() -> ImageFont.ImageFont:
    global _FONT
    if _FONT is None:
        _FONT = ImageFont.load_default()
    return _FONT


def databar_text(rng: np.random.Generator) -> str:
    kv = rng.choice((1.0, 2.0, 3.0, 5.0, 10.0, 15.0, 20.0, 30.0))
    wd = rng.uniform(2, 15)
    mag = int(rng.choice((500, 1000, 2500, 5000, 10000, 20000, 50000, 100000)))
    detector = rng.choice(("ETD", "TLD", "InLens", "SE2", "BSE", "CBS"))
    return f"HV {kv:.2f} kV | WD {wd:.1f} mm | mag {mag:,} x | det {detector}".replace(",", " ")


def draw_databar(image: Image.Image, rng: np.random.Generator | int, bar_height: int | None = None) -> int:
    """Paint an instrument data bar over the bottom rows of an 'L' image, in place.

    ``rng`` is a numpy Generator or a seed; ``bar_height`` defaults to a random 6-14 % of the
    image height. Returns the bar height in rows (what a data-bar detector should find).
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    width, height = image.size
    if bar_height is None:
        # At least tall enough for one line of the default font, as on real instruments.
        bar_height = max(MIN_DATABAR_ROWS, int(round(height * rng.uniform(*DATABAR_FRACTION))))
    if not 1 <= bar_height < height:
        raise ValueError(f"data bar height {bar_height} does not fit an image {height} rows high")
    top = height - bar_height
    draw = ImageDraw.Draw(image)
    background = int(rng.integers(0, 18))
    draw.rectangle((0, top, width, height), fill=background)
    if rng.random() < 0.5:  # many instruments rule a line between image and bar
        draw.line((0, top, width, top), fill=235, width=1)
    font = _font()
    text_y = top + max(2, (bar_height - 11) // 2)
    draw.text((int(width * 0.02), text_y), databar_text(rng), fill=int(rng.integers(220, 256)), font=font)
    # Scale bar with its label at the right end.
    bar_length = int(width * rng.uniform(0.08, 0.18))
    bar_x = width - bar_length - int(width * 0.03)
    bar_y = top + bar_height // 2 + int(rng.integers(-2, 3))
    draw.rectangle((bar_x, bar_y, bar_x + bar_length, bar_y + max(2, bar_height // 10)), fill=255)
    label = f"{int(rng.choice((1, 2, 5, 10, 20, 50, 100, 200, 500)))} {rng.choice(('nm', 'um'))}"
    draw.text((bar_x, max(top + 1, bar_y - 12)), label, fill=255, font=font)
    return bar_height
