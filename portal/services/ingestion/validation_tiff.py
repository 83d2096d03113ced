"""A TIFF's header, read with tifffile (it reads any TIFF header, including ones Pillow cannot decode), and
the checks a decoder would not make itself: the page count, the tile size and the strip or tile table
follow from the page's own geometry, and the image data lies inside the file."""

from __future__ import annotations

import math
import os
import struct
import warnings

from PIL import Image

from portal.services.ingestion.validation_errors import ValidationError, error_detail
from portal.services.ingestion.validation_limits import ImageInfo, check_decoding_budget, check_samples_per_pixel


def tiff_header(path: str) -> ImageInfo:
    """TIFF dimensions from tifffile (it reads any TIFF header, including ones Pillow cannot decode)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            try:
                page = tiff.pages.first
            except IndexError:  # tifffile: "contains no pages" (the first IFD offset is 0)
                raise ValidationError(
                    "corrupt", "The TIFF file contains no image: its header points to no image directory."
                ) from None
            page_count = count_tiff_pages(path)
            width, height = int(page.imagewidth), int(page.imagelength)
            bits = int(page.bitspersample)
            samples = int(page.samplesperpixel)
            photometric = int(page.photometric)
            # Before any decoder runs: a decoder trusts the chunk table and the tile size, not the page shape.
            check_tiff_structure(page, width, height, samples)
            decoded = _tiff_decoded_bytes(page, width, height, samples, bits)
            check_decoding_budget(width, height, decoded, samples=samples, bits=bits)
            check_samples_per_pixel(samples)
            _check_strips_inside_file(page, os.path.getsize(path))
    except ValidationError:
        raise
    except Exception as error:
        raise ValidationError("corrupt", f"The TIFF file is corrupt or unreadable{error_detail(error)}.") from error
    mode = _pillow_mode_or_guess(path, bits, samples, photometric)
    return ImageInfo("TIFF", ".tif", width, height, mode, bits, max(1, page_count), samples, decoded)


MAX_COUNTED_PAGES = 32767  # SEMImage.page_count is a small integer


def count_tiff_pages(path: str, limit: int = MAX_COUNTED_PAGES) -> int:
    """Pages in the main IFD chain, counted up to `limit`. (tifffile's len(pages) walks the whole chain:
    a 200 MB file of tiny chained IFDs is ten million pages, seconds and hundreds of MB.) Stops at a
    loop or at an offset past the end, like tifffile."""
    with open(path, "rb") as handle:
        head = handle.read(16)
        order = "<" if head[:2] == b"II" else ">"
        if struct.unpack(order + "H", head[2:4])[0] == 43:  # BigTIFF
            offset, count_format, entry_size, offset_format = struct.unpack(order + "Q", head[8:16])[0], "Q", 20, "Q"
        else:
            offset, count_format, entry_size, offset_format = struct.unpack(order + "I", head[4:8])[0], "H", 12, "I"
        count_size, offset_size = struct.calcsize(count_format), struct.calcsize(offset_format)
        seen: set[int] = set()
        pages = 0
        while offset and pages < limit and offset not in seen:
            seen.add(offset)
            handle.seek(offset)
            raw = handle.read(count_size)
            if len(raw) < count_size:
                break
            handle.seek(offset + count_size + struct.unpack(order + count_format, raw)[0] * entry_size)
            raw = handle.read(offset_size)
            pages += 1
            if len(raw) < offset_size:
                break
            offset = struct.unpack(order + offset_format, raw)[0]
    return max(1, pages)


def _tiff_decoded_bytes(page, width: int, height: int, samples: int, bits: int) -> int:
    """What decoding the first page allocates: the larger of the header's arithmetic (width x height x
    samples per pixel x bytes per sample x depth) and tifffile's own shape and data type of the page."""
    depth = max(1, int(getattr(page, "imagedepth", 1) or 1))
    declared = width * height * max(1, samples) * max(1, -(-bits // 8)) * depth
    try:
        itemsize = page.dtype.itemsize if page.dtype is not None else 0
        shaped = math.prod(int(side) for side in page.shape) * itemsize
    except Exception:  # an unusual page tifffile describes only partly: the header's arithmetic decides
        shaped = 0
    return max(declared, shaped, _padded_tile_bytes(page, width, height, samples, bits) * depth)


def _padded_tile_bytes(page, width: int, height: int, samples: int, bits: int) -> int:
    """Decoders fill whole tiles: the tile grid, not the image, is what they allocate."""
    if not page.is_tiled:
        return 0
    tile_width, tile_length = max(1, int(page.tilewidth)), max(1, int(page.tilelength))
    padded_width = -(-width // tile_width) * tile_width
    padded_height = -(-height // tile_length) * tile_length
    return padded_width * padded_height * max(1, samples) * max(1, -(-bits // 8))


def _check_strips_inside_file(page, file_size: int) -> None:
    """A truncated TIFF has strips or tiles that point beyond the end of the file, or that were never
    written (offset or byte count 0: a writer that stopped after the first tile)."""
    for offset, count in zip(page.dataoffsets, page.databytecounts):
        if offset + count > file_size or not count or not offset:
            raise ValidationError(
                "truncated",
                "The TIFF file is truncated: its image data ends before the file does (incomplete upload or copy?).",
            )


# A tile may pad the image (tiles are multiples of 16 and cover it whole) but not dwarf it: up to twice
# the image's side, or this many pixels for small images, where 256- or 512-pixel tiles are the norm.
MIN_TILE_SIDE_ALLOWED = 1024


def check_tiff_structure(page, width: int, height: int, samples: int) -> None:
    """Tile size and the number of strips or tiles must follow from the page's own geometry.

    Decoders allocate per tile and loop per table entry: a 2,000 x 2,000 page of one 32,768-pixel tile
    costs a gigabyte, and a strip table of millions of entries (tifffile truncates it, Pillow does not)
    costs seconds and hundreds of megabytes, whatever the page shape says."""
    if page.is_tiled:
        sides = ((int(page.tilewidth), width), (int(page.tilelength), height))
        for tile, side in sides:
            if tile <= 0 or tile > max(2 * side, MIN_TILE_SIDE_ALLOWED):
                raise _malformed(
                    f"its tiles are {page.tilewidth}x{page.tilelength} pixels for a {width}x{height} image"
                )
        depth = -(-_image_depth(page) // max(1, int(getattr(page, "tiledepth", 1) or 1)))
        expected = -(-width // sides[0][0]) * -(-height // sides[1][0]) * depth
        names = ("TileOffsets", "TileByteCounts")
    else:
        rows = min(int(page.rowsperstrip or height), height) or height
        expected = -(-height // rows) * _image_depth(page)
        names = ("StripOffsets", "StripByteCounts")
    if int(page.planarconfig) == 2:
        expected *= max(1, samples)
    for name in names:
        tag = page.tags.get(name)
        found = int(tag.count) if tag is not None else 0
        if found != expected:
            raise _malformed(f"its {name} table has {found:,} entries where the image needs {expected:,}")


def _image_depth(page) -> int:
    return max(1, int(getattr(page, "imagedepth", 1) or 1))


def _malformed(what: str) -> ValidationError:
    return ValidationError(
        "malformed_structure", f"The TIFF file's structure does not match its own header: {what}; it was not stored."
    )


def _pillow_mode_or_guess(path: str, bits: int, samples: int, photometric: int) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return image.mode
    except Exception:  # Pillow cannot open every TIFF; describe it in Pillow's vocabulary
        if photometric == 3:
            return "P"
        if samples >= 3:
            return "RGB" if bits == 8 else f"RGB;{bits}"
        return {1: "1", 8: "L", 16: "I;16", 32: "F"}.get(bits, f"L;{bits}")
