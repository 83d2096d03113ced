"""Is this upload really an SEM image we can store? Sniffing, header checks and full decoding.

Order matters: the cheap checks (size, magic bytes, header dimensions) run before anything is
decoded, so a decompression bomb or a disguised HTML page never reaches a decoder.
"""

from __future__ import annotations

import math
import os
import re
import struct
import warnings
from dataclasses import dataclass

from django.conf import settings
from PIL import Image, ImageFile, UnidentifiedImageError

from classifier.imageio import load_grey8

# Canonical stored extension per accepted format.
ACCEPTED_FORMATS = {"TIFF": ".tif", "PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp"}
IMAGE_EXTENSIONS = {
    ".tif",
    ".tiff",
    ".png",
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".bmp",
    ".dib",
    ".gif",
    ".webp",
    ".svg",
    ".jp2",
    ".j2k",
    ".heic",
    ".heif",
    ".avif",
    ".ico",
}
SNIFF_BYTES = 1024

# Image formats we recognise but do not accept (lossy or animated consumer formats, not SEM output).
_OTHER_IMAGE_SIGNATURES = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "Photoshop"),
    (b"II\xbc", "JPEG XR"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (b"DDS ", "DDS"),
    (b"\x76\x2f\x31\x01", "OpenEXR"),
)
# Documents, archives and scripts: never images, whatever the file name says.
_DOCUMENT_SIGNATURES = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or Office document)"),
    (b"PK\x05\x06", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"\x7fELF", "an executable"),
    (b"MZ", "a Windows executable"),
    (b"\xd0\xcf\x11\xe0", "an Office document"),
    (b"#!", "a script"),
)
_MARKUP_MARKERS = (
    (b"<svg", "an SVG drawing"),
    (b"<!doctype html", "an HTML page"),
    (b"<html", "an HTML page"),
    (b"<script", "a script"),
    (b"<?xml", "an XML document"),
    (b"<head", "an HTML page"),
    (b"<body", "an HTML page"),
    (b"<?php", "a PHP script"),
    (b"<iframe", "an HTML page"),
)


class ValidationError(Exception):
    """Raised with a machine code and a human message; ingest turns it into IngestError."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ImageInfo:
    format: str  # TIFF, PNG, JPEG or BMP
    extension: str  # canonical, with the dot
    width: int
    height: int
    mode: str  # Pillow mode of the first page, e.g. L, I;16, RGB, P
    bit_depth: int  # bits per sample
    page_count: int
    samples: int = 1  # samples per pixel (grey 1, RGB 3, ...)
    decoded_bytes: int = 0  # width x height x samples x bytes per sample of the first page, from the header


def sniff_format(head: bytes, filename: str) -> str:
    """Accepted format name from the magic bytes, or ValidationError explaining what the bytes are."""
    if not head:
        raise ValidationError("empty", "The file is empty (0 bytes).")
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"BM") and _plausible_bmp_header(head):
        return "BMP"
    for signature, name in _OTHER_IMAGE_SIGNATURES:
        if head.startswith(signature):
            raise _unsupported(name)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        raise _unsupported("WebP")
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif", b"ftypmsf1"):
        raise _unsupported("HEIF/AVIF")
    what = _describe_non_image(head)
    claims_image = os.path.splitext(filename.lower())[1] in IMAGE_EXTENSIONS
    if what and claims_image:
        raise ValidationError(
            "disguised", f"The file is named like an image but its content is {what}; it was not stored."
        )
    if what:
        raise ValidationError("not_an_image", f"The file is {what}, not an image.")
    raise ValidationError("not_an_image", "The file is not a recognised image (accepted: TIFF, PNG, JPEG, BMP).")


def inspect_image(path: str, image_format: str) -> tuple[ImageInfo, Image.Image]:
    """Header checks (pixel limit, aspect ratio, decoded bytes), then a full decode of the first page.

    Returns what the database stores about the image and the decoded 8-bit greyscale first page
    (so the caller makes its derivatives without decoding the file a second time).
    """
    # Pillow's own bomb guard must agree with ours: it warns above MAX_IMAGE_PIXELS and raises
    # above twice that, both while reading the header, before any pixel is decoded.
    Image.MAX_IMAGE_PIXELS = settings.SEM_MAX_IMAGE_PIXELS
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    if image_format == "TIFF":
        info = _tiff_header(path)
    else:
        info = _pillow_header(path, image_format)
    check_decoding_budget(info.width, info.height, info.decoded_bytes, samples=info.samples, bits=info.bit_depth)
    if image_format != "TIFF":
        _pillow_verify(path)
    if image_format == "JPEG":
        check_jpeg_scan_size(path, info.width, info.height)
    return info, _full_decode(path)


def _plausible_bmp_header(head: bytes) -> bool:
    """'BM' is also how plenty of text starts; a real BMP has a known DIB header size at byte 14."""
    return len(head) >= 18 and int.from_bytes(head[14:18], "little") in (12, 16, 40, 52, 56, 64, 108, 124)


def _unsupported(name: str) -> ValidationError:
    return ValidationError(
        "unsupported_format", f"{name} images are not accepted; please upload TIFF, PNG, JPEG or BMP."
    )


def _describe_non_image(head: bytes) -> str | None:
    for signature, what in _DOCUMENT_SIGNATURES:
        if head.startswith(signature):
            return what
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    for marker, what in _MARKUP_MARKERS:
        if marker in text[:SNIFF_BYTES]:
            return what
    if text.startswith(b"<"):
        return "a markup document"
    if _looks_like_text(head):
        return "a text file"
    return None


def _looks_like_text(head: bytes) -> bool:
    try:
        decoded = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the sniff boundary is still text.
        try:
            decoded = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in decoded)
    return printable >= 0.95 * max(1, len(decoded))


def _tiff_header(path: str) -> ImageInfo:
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
        raise ValidationError("corrupt", f"The TIFF file is corrupt or unreadable{_detail(error)}.") from error
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


MAX_SAMPLES_PER_PIXEL = 4  # grey, grey + alpha, RGB, RGBA: SEM images never have more


def check_samples_per_pixel(samples: int) -> None:
    if samples > MAX_SAMPLES_PER_PIXEL:
        raise ValidationError(
            "too_many_samples",
            f"The image has {samples:,} samples per pixel; at most {MAX_SAMPLES_PER_PIXEL} "
            "(grey, grey and alpha, RGB or RGBA) are accepted.",
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


_HUFFMAN_FRAMES = {0xC0, 0xC1, 0xC2}  # baseline, extended and progressive Huffman-coded JPEG


def check_jpeg_scan_size(path: str, width: int, height: int) -> None:
    """A JPEG whose frame header declares more pixels than its data can hold is truncated, even when it
    ends with a proper end marker: libjpeg then only warns and fills the rest with grey. In Huffman-coded
    JPEG each 8 x 8 block of the first component takes at least one bit (its DC difference)."""
    frame, data_start = _jpeg_frame_and_scan_start(path)
    if frame not in _HUFFMAN_FRAMES or data_start is None:
        return
    blocks = -(-width // 8) * -(-height // 8)
    if (os.path.getsize(path) - data_start) * 8 < blocks:
        raise ValidationError(
            "truncated",
            f"The JPEG file is truncated: it declares {width}x{height} pixels but holds data for far fewer "
            "(incomplete upload or copy?).",
        )


def _jpeg_frame_and_scan_start(path: str) -> tuple[int | None, int | None]:
    """The frame marker (SOFn) and where the first scan's data starts, walking the marker segments."""
    frame = None
    with open(path, "rb") as handle:
        handle.seek(2)
        while True:
            marker = handle.read(2)
            if len(marker) < 2 or marker[0] != 0xFF:
                return frame, None
            length = handle.read(2)
            if len(length) < 2:
                return frame, None
            if 0xC0 <= marker[1] <= 0xCF and marker[1] not in (0xC4, 0xC8, 0xCC):
                frame = marker[1]
            handle.seek(int.from_bytes(length, "big") - 2, os.SEEK_CUR)
            if marker[1] == 0xDA:  # start of scan: the entropy-coded data follows its header
                return frame, handle.tell()


def _pillow_header(path: str, image_format: str) -> ImageInfo:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.format != image_format:
                    raise ValidationError("corrupt", f"The file looks like {image_format} but cannot be read as one.")
                width, height = image.size
                mode = image.mode
                samples = len(image.getbands())
                page_count = getattr(image, "n_frames", 1)
    except Image.DecompressionBombError as error:
        raise _too_many_pixels_from_pillow(error) from error
    except ValidationError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValidationError("corrupt", f"The {image_format} file is corrupt{_detail(error)}.") from error
    bits = _bit_depth(mode)
    decoded = width * height * samples * max(1, -(-bits // 8))
    return ImageInfo(
        image_format, ACCEPTED_FORMATS[image_format], width, height, mode, bits, max(1, page_count), samples, decoded
    )


def _bit_depth(mode: str) -> int:
    if mode == "1":
        return 1
    if mode.startswith("I;16") or mode == "I;16":
        return 16
    if mode in ("I", "F"):
        return 32
    return 8


def check_decoding_budget(width: int, height: int, decoded_bytes: int, *, samples: int = 1, bits: int = 8) -> None:
    """Refuse, from the header alone, what would cost too much to decode: more pixels than
    SEM_MAX_IMAGE_PIXELS, sides more unequal than SEM_MAX_ASPECT_RATIO (a 1 x 200,000 strip), or more
    decoded bytes than SEM_MAX_DECODED_BYTES (width x height x samples per pixel x bytes per sample)."""
    max_pixels = settings.SEM_MAX_IMAGE_PIXELS
    if width <= 0 or height <= 0:
        raise ValidationError("corrupt", f"The image header declares an empty image ({width}x{height}).")
    if width * height > max_pixels:
        raise ValidationError(
            "too_many_pixels",
            f"The image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,} pixels.",
        )
    max_ratio = settings.SEM_MAX_ASPECT_RATIO
    if max(width, height) > max_ratio * min(width, height):
        raise ValidationError(
            "extreme_aspect_ratio",
            f"The image is {width}x{height} pixels: one side is {max(width, height) / min(width, height):,.0f} "
            f"times the other, and at most {max_ratio:g} is accepted (an image this narrow is not a micrograph).",
        )
    max_bytes = settings.SEM_MAX_DECODED_BYTES
    if decoded_bytes > max_bytes:
        per_sample = max(1, -(-bits // 8))
        raise ValidationError(
            "too_many_bytes",
            f"The image would take {_human(decoded_bytes)} once decoded ({width}x{height} pixels x {samples:,} "
            f"sample{'s' if samples != 1 else ''} per pixel x {per_sample} byte{'s' if per_sample != 1 else ''} "
            f"per sample); the limit is {_human(max_bytes)}.",
        )


def _human(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:,.0f} {unit}" if unit == "bytes" else f"{count:,.1f} {unit}"
        count /= 1024
    return f"{count} bytes"


def _too_many_pixels_from_pillow(error: Exception) -> ValidationError:
    return ValidationError(
        "too_many_pixels",
        f"The image has more pixels than allowed ({settings.SEM_MAX_IMAGE_PIXELS:,}): {_short(error)}",
    )


def _pillow_verify(path: str) -> None:
    """Structural check without decoding (PNG chunk CRCs, JPEG/BMP markers)."""
    try:
        with Image.open(path) as image:
            image.verify()
    except Image.DecompressionBombError as error:
        raise _too_many_pixels_from_pillow(error) from error
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as error:
        raise _truncated_or_corrupt(error) from error


def _full_decode(path: str) -> Image.Image:
    """Decode every pixel of the first page: the only reliable test for truncated data."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return load_grey8(path)
    except Image.DecompressionBombError as error:
        raise _too_many_pixels_from_pillow(error) from error
    except MemoryError as error:  # the capped decoding process's limit (decode_guard), not a bad file
        raise ValidationError(
            "decoding_limit", "The image could not be decoded within the server's limits: it needed too much memory."
        ) from error
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError) as error:
        raise _truncated_or_corrupt(error) from error


def _truncated_or_corrupt(error: Exception) -> ValidationError:
    text = str(error).lower()
    if any(word in text for word in ("truncated", "failed to read", "incomplete", "premature end", "not enough")):
        return ValidationError(
            "truncated", f"The image is truncated: its data ends early (incomplete upload or copy?).{_detail(error)}"
        )
    return ValidationError("corrupt", f"The image data is corrupt and cannot be decoded{_detail(error)}.")


def _detail(error: Exception) -> str:
    """ " (what the decoder said)", or nothing when it said nothing a person can use: a bare number or key
    ("corrupt or unreadable (0)" came from an IndexError(0)), or an empty message."""
    text = _short(error)
    informative = len(text) >= 4 and any(ch.isalpha() for ch in text) and text != type(error).__name__
    return f" ({text})" if informative else ""


def _short(error: Exception, limit: int = 200) -> str:
    text = _without_server_details(str(error) or type(error).__name__)
    return text if len(text) <= limit else text[:limit] + "…"


# What a decoder's message may say about this server rather than the file: the path of the spooled upload
# ("cannot identify image file '/srv/var/upload-spool/sem-upload-1a2b.bin'"), any other absolute path, and
# the memory address of a buffer ("<_io.BytesIO object at 0x7f3a...>"). Clients see the file's problem only.
_QUOTED_PATH = re.compile(r"""(['"])(?:[A-Za-z]:[/\\]|/)[^'"]*\1""")
_BARE_PATH = re.compile(r"""(?<![\w.:/])(?:[A-Za-z]:)?/(?:[^\s'"(),;/]+/)+[^\s'"(),;]*""")
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")
_ADDRESS = re.compile(r"\bat 0x[0-9a-fA-F]+\b")


def _without_server_details(text: str) -> str:
    text = _QUOTED_PATH.sub("the uploaded file", text)
    text = _BARE_PATH.sub("the uploaded file", text)
    text = _OBJECT_REPR.sub("the uploaded file", text)
    text = _ADDRESS.sub("", text)
    return text
