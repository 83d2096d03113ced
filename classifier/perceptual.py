"""Perceptual hashes of a derivative, for near-duplicate detection (model-free, no Django, no torch).

One 64-bit DCT hash (imagehash's `phash`) of the whole derivative and of ten sub-windows of it: the
centre at 90 % and 80 % of each side, and the four corners at 90 % and 80 %. A re-saved copy (PNG <-> TIFF,
8 <-> 16 bit, JPEG, brightness +-10 %) has a whole-image hash within a few bits of the original's; a
copy cropped by 5-10 % per side has a whole-image hash close to one of the original's windows (or the
other way round, when the crop was stored first). `bench/bench_near_dup.py` measured the choice: on the
real images, phash with these windows at radius 10 matched 92-100 % of re-saved copies and 84-92 % of
5-10 % crops, and no pair of different images from different sources came closer than 12 bits;
average and wavelet hashes matched a few more crops but also matched different images (1-3 % of pairs).

A hash is stored as a signed 64-bit integer (a database bigint) and looked up by four 16-bit bands
(multi-index hashing): two hashes within `RADIUS` bits agree within `RADIUS // 4` bits on at least one band.
"""

from __future__ import annotations

from itertools import combinations

from PIL import Image

RADIUS = 10  # Hamming distance (of 64 bits) up to which two hashes are near-duplicates
BANDS = 4
BAND_BITS = 64 // BANDS
BAND_RADIUS = RADIUS // BANDS  # some band differs by at most this many bits (pigeonhole)
FULL = 0
# Window code -> (x, y, side share): x/y 0 = left/top, 1 = centre, 2 = right/bottom.
WINDOWS = {
    FULL: (0, 0, 1.0),
    1: (1, 1, 0.9),
    2: (1, 1, 0.8),
    3: (0, 0, 0.9),
    4: (2, 0, 0.9),
    5: (0, 2, 0.9),
    6: (2, 2, 0.9),
    7: (0, 0, 0.8),
    8: (2, 0, 0.8),
    9: (0, 2, 0.8),
    10: (2, 2, 0.8),
}


def window_hashes(derivative: Image.Image) -> dict[int, int]:
    """{window code: unsigned 64-bit phash} of a derivative (any mode; hashed as 8-bit grey)."""
    import imagehash

    grey = derivative if derivative.mode == "L" else derivative.convert("L")
    width, height = grey.size
    result = {}
    for code, (x, y, share) in WINDOWS.items():
        w, h = max(1, int(width * share)), max(1, int(height * share))
        left = (0, (width - w) // 2, width - w)[x]
        top = (0, (height - h) // 2, height - h)[y]
        window = grey if code == FULL else grey.crop((left, top, left + w, top + h))
        result[code] = int(str(imagehash.phash(window)), 16)
    return result


def distance(a: int, b: int) -> int:
    return ((a ^ b) & 0xFFFFFFFFFFFFFFFF).bit_count()


def to_signed(value: int) -> int:
    """Unsigned 64-bit -> the signed value a bigint column holds."""
    return value - (1 << 64) if value >= 1 << 63 else value


def to_unsigned(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


def bands(value: int) -> list[int]:
    """The four 16-bit bands of an (unsigned or signed) 64-bit hash, most significant first."""
    value = to_unsigned(value)
    mask = (1 << BAND_BITS) - 1
    return [(value >> (BAND_BITS * (BANDS - 1 - i))) & mask for i in range(BANDS)]


def band_neighbours(band: int, radius: int = BAND_RADIUS) -> list[int]:
    """Every band value within `radius` bits of `band` (1 + 16 + 120 values for radius 2)."""
    values = [band]
    for r in range(1, radius + 1):
        for bits in combinations(range(BAND_BITS), r):
            flipped = band
            for bit in bits:
                flipped ^= 1 << bit
            values.append(flipped)
    return values
