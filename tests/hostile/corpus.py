"""A corpus of broken and hostile upload files, built in memory at test time (no binaries in git).

Every entry says what the product must do with it: refuse it with an IngestError code, or accept it
(a real image) and record a sanitised file name. The product decides by content, never by the name
(portal/services/ingestion/validation_sniff.py), so a PNG named .tif is stored as a PNG, and an SVG named .png is
refused as "disguised".

`corpus()` is cached: the entries are immutable and the whole corpus takes well under a second.
"""

from __future__ import annotations

import functools
import struct
import zlib
from dataclasses import dataclass
from pathlib import PurePath

import numpy as np
from PIL import Image

from tests.portal.sem_builders import pillow_bytes, png_declaring, tiff_bytes, tiff_declaring
from tests.security.bombs import png_strip, tiff_strip_bomb

# The hostile tests run with this upload limit so that a "too large" file stays cheap to build.
MAX_UPLOAD_BYTES = 8 * 1024 * 1024
MAX_FILENAME_LENGTH = 255  # SEMImage.original_filename


@dataclass(frozen=True)
class HostileFile:
    id: str
    filename: str
    data: bytes
    refused_with: str | None = None  # IngestError code when the file must be refused
    stored_as: str | None = None  # the sanitised original_filename when the file must be accepted
    why: str = ""

    def __post_init__(self):
        assert (self.refused_with is None) != (self.stored_as is None), self.id

    @property
    def accepted(self) -> bool:
        return self.stored_as is not None

    @property
    def disk_name(self) -> str:
        """A name a file system can hold (no separators, no NUL), for the import_folder test."""
        name = self.filename
        if not name or "/" in name or "\\" in name or "\x00" in name or name in (".", "..") or len(name) > 200:
            return f"{self.id}{PurePath(name.replace(chr(0), '')).suffix[:10]}"
        return name


# --- valid small images (each seed gives different pixels, so different bytes) ----------------------


def grey(seed: int, height: int = 48, width: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    gradient = np.linspace(0, 200, width)[None, :].repeat(height, axis=0)
    return np.clip(gradient + rng.normal(0, 20, (height, width)), 0, 255).astype(np.uint8)


def valid_tiff(seed: int, **kwargs) -> bytes:
    return tiff_bytes(grey(seed), **kwargs)


def valid_png(seed: int) -> bytes:
    return pillow_bytes(Image.fromarray(grey(seed)), "PNG")


def valid_jpeg(seed: int) -> bytes:
    return pillow_bytes(Image.fromarray(grey(seed)), "JPEG", quality=90)


def valid_bmp(seed: int) -> bytes:
    return pillow_bytes(Image.fromarray(grey(seed)), "BMP")


# --- hand-made structures ---------------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes, *, length: int | None = None) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data) if length is None else length) + kind + data + struct.pack(">I", crc)


def png_with_chunk_after_header(png: bytes, chunk: bytes) -> bytes:
    """Insert a chunk right after IHDR (8-byte signature + 25-byte IHDR chunk)."""
    return png[:33] + chunk + png[33:]


def png_real_bomb(width: int, height: int) -> bytes:
    """A complete, valid PNG of width x height black pixels: tiny on disk, huge when decoded."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + one grey byte per pixel
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real JPEG whose SOF0 frame header is patched to claim width x height."""
    data = bytearray(valid_jpeg(90))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def jpeg_with_comment_segments(seed: int, count: int) -> bytes:
    """A valid JPEG carrying `count` maximal COM segments (64 KiB each) of metadata."""
    data = valid_jpeg(seed)
    segment = b"\xff\xfe" + struct.pack(">H", 65535) + b"C" * 65533
    return data[:2] + segment * count + data[2:]


def bmp_declaring(width: int, height: int) -> bytes:
    """A BMP file header + BITMAPINFOHEADER claiming width x height 8-bit pixels, with almost no data."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 0, 0, 2835, 2835, 256, 0)
    palette = b"".join(bytes((i, i, i, 0)) for i in range(256))
    offset = 14 + len(info) + len(palette)
    header = b"BM" + struct.pack("<IHHI", 0xFFFFFFF0, 0, 0, offset)  # absurd declared file size too
    return header + info + palette + b"\x00" * 64


def tiff_with_strip_count(byte_count: int) -> bytes:
    """A TIFF whose single strip claims `byte_count` bytes (far more than the file holds)."""
    data = bytearray(tiff_declaring(64, 48))
    entry = data.index(struct.pack("<HHI", 279, 4, 1))
    data[entry + 8 : entry + 12] = struct.pack("<I", byte_count)
    return bytes(data)


def tiff_first_ifd_at(offset: int) -> bytes:
    return b"II*\x00" + struct.pack("<I", offset) + b"\x00" * 64


def tiff_with_tag(seed: int, code: int, dtype: str, payload) -> bytes:
    count = 0 if dtype == "s" else len(payload)
    return tiff_bytes(grey(seed), extratags=[(code, dtype, count, payload, True)])


def truncated(data: bytes, keep: float) -> bytes:
    return data[: int(len(data) * keep)]


SVG = (
    b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" onload="alert(document.cookie)">'
    b"<script>fetch('/api/images/')</script></svg>"
)
HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"


def _refused(id: str, filename: str, data: bytes, code: str, why: str) -> HostileFile:
    return HostileFile(id, filename, data, refused_with=code, why=why)


def _accepted(id: str, filename: str, data: bytes, stored_as: str, why: str) -> HostileFile:
    return HostileFile(id, filename, data, stored_as=stored_as, why=why)


@functools.lru_cache(maxsize=1)
def corpus() -> tuple[HostileFile, ...]:
    # Longer than the column, short enough for Django's 1 KiB multipart part-header limit (longer
    # names are refused by Django with 400 before the product sees them; tested separately).
    long_name = "x" * 400 + ".png"
    entries = [
        # Truncated files: the data ends before the image does.
        _refused("truncated_tiff", "cut.tif", truncated(valid_tiff(1), 0.6), "truncated", "strip past end of file"),
        _refused(
            "truncated_tiff_zlib",
            "cut.tif",
            truncated(valid_tiff(2, compression="zlib"), 0.9),
            "truncated",
            "compressed strip cut short",
        ),
        _refused("truncated_tiff_header_only", "head.tif", valid_tiff(3)[:8], "corrupt", "no IFD at all"),
        _refused("truncated_png", "cut.png", truncated(valid_png(4), 0.6), "truncated", "IDAT cut short"),
        _refused("truncated_png_signature_only", "sig.png", b"\x89PNG\r\n\x1a\n", "corrupt", "only the magic"),
        _refused("truncated_jpeg", "cut.jpg", truncated(valid_jpeg(5), 0.6), "truncated", "scan data cut short"),
        _refused("truncated_jpeg_soi_only", "soi.jpg", b"\xff\xd8\xff", "corrupt", "only the SOI marker"),
        # Decompression bombs: huge declared dimensions, refused before any pixel is decoded.
        _refused("png_bomb_header", "bomb.png", png_declaring(100_000, 100_000), "too_many_pixels", "10^10 px"),
        _refused(
            "png_bomb_real",
            "bomb2.png",
            png_real_bomb(12_000, 10_000),
            "too_many_pixels",
            "a complete 120 Mpx PNG in ~120 kB",
        ),
        _refused("tiff_bomb_width", "wide.tif", tiff_declaring(2**32 - 1, 1), "too_many_pixels", "ImageWidth 2^32-1"),
        _refused("tiff_bomb_square", "bomb.tif", tiff_declaring(300_000, 300_000), "too_many_pixels", "9*10^10 px"),
        _refused("jpeg_bomb", "bomb.jpg", jpeg_declaring(65_500, 65_500), "too_many_pixels", "SOF claims 4.3 Gpx"),
        _refused("bmp_bomb", "bomb.bmp", bmp_declaring(100_000, 100_000), "too_many_pixels", "DIB claims 10^10 px"),
        # Decoding bombs under the pixel limit (issue 11): absurd shapes, samples that multiply the size.
        _refused(
            "png_1x200000",
            "strip.png",
            png_strip(1, 200_000),
            "extreme_aspect_ratio",
            "470 bytes; its derivative asked for 13 GB",
        ),
        _refused(
            "tiff_1000_samples",
            "samples.tif",
            tiff_strip_bomb(1000, 1000, samples=1000),
            "too_many_bytes",
            "1,000 samples per pixel: 1 GB decoded from 13 kB",
        ),
        _refused(
            "tiff_float_rgba_strips",
            "float.tif",
            tiff_strip_bomb(6000, 6000, samples=4, bits=32, sample_format=3),
            "too_many_bytes",
            "36 Mpx x 4 float32 samples, every strip the same block",
        ),
        # Absurd declared sizes and offsets.
        _refused("tiff_zero_width", "zero.tif", tiff_declaring(0, 48), "corrupt", "ImageWidth 0"),
        _refused(
            "tiff_strip_4gb",
            "strip.tif",
            tiff_with_strip_count(0xFFFFFFF0),
            "truncated",
            "StripByteCounts 4 GB in a 140-byte file",
        ),
        _refused("tiff_ifd_past_eof", "ifd.tif", tiff_first_ifd_at(0x7FFFFFF0), "corrupt", "IFD offset 2 GB"),
        _refused(
            "png_chunk_length_2gb",
            "len.png",
            b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", b"\x00" * 13, length=0x7FFFFFF0),
            "corrupt",
            "IHDR length 2 GB",
        ),
        _refused(
            "png_ztxt_bomb",
            "ztxt.png",
            png_with_chunk_after_header(
                valid_png(6), png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"\x00" * 50_000_000, 9))
            ),
            "corrupt",
            "zTXt inflating to 50 MB",
        ),
        _refused(
            "too_large",
            "huge.tif",
            b"II*\x00" + b"\x00" * (MAX_UPLOAD_BYTES + 1024),
            "too_large",
            "over the byte limit",
        ),
        # Empty files and text.
        _refused("empty_tif", "empty.tif", b"", "empty", "0 bytes"),
        _refused("empty_png", "empty.png", b"", "empty", "0 bytes"),
        _refused("empty_no_extension", "empty", b"", "empty", "0 bytes"),
        _refused("whitespace_as_jpg", "blank.jpg", b" \n\t\r\n  \n", "disguised", "whitespace only"),
        # SVG, HTML and scripts disguised as images (or not).
        _refused("svg_as_png", "logo.png", SVG, "disguised", "SVG with onload and script"),
        _refused("svg_as_tif", "logo.tif", SVG, "disguised", "SVG with onload and script"),
        _refused("svg_named_svg", "drawing.svg", SVG, "disguised", ".svg is an image extension, not accepted"),
        _refused("html_as_tif", "page.tif", HTML, "disguised", "HTML page"),
        _refused("html_with_bom_as_jpg", "page.jpg", b"\xef\xbb\xbf \r\n" + HTML, "disguised", "BOM + whitespace"),
        _refused(
            "html_behind_nul_bytes",
            "page.png",
            b"\x00\x00\x00" + HTML,
            "disguised",
            "markup a browser might still sniff",
        ),
        _refused("php_as_jpg", "shell.jpg", b"<?php system($_GET['c']); ?>", "disguised", "PHP script"),
        _refused("html_as_txt", "notes.txt", HTML, "not_an_image", "honest name, still not an image"),
        _refused("elf_as_tif", "tool.tif", b"\x7fELF\x02\x01\x01" + b"\x00" * 200, "disguised", "executable"),
        _refused("zip_as_png", "bundle.png", b"PK\x03\x04" + b"\x00" * 200, "disguised", "ZIP/Office"),
        _refused("random_binary", "blob.bin", bytes(range(256)) * 4, "not_an_image", "no signature"),
        _refused("gif_html_polyglot_as_png", "poly.png", b"GIF89a/*" + HTML, "unsupported_format", "GIF magic + HTML"),
        _refused("png_magic_then_html", "magic.png", b"\x89PNG\r\n\x1a\n" + HTML, "corrupt", "PNG magic + HTML"),
        _refused("tiff_magic_then_html", "magic.tif", b"II*\x00" + HTML, "corrupt", "TIFF magic + HTML"),
        _refused("jpeg_magic_then_script", "magic.jpg", b"\xff\xd8\xff" + HTML, "corrupt", "JPEG magic + HTML"),
        _refused(
            "svg_with_traversal_name", "../../static/evil.svg.png", SVG, "disguised", "hostile content and hostile name"
        ),
        # Huge metadata on otherwise valid images: accepted, and the stored metadata stays bounded.
        _accepted(
            "tiff_5mb_image_description",
            "desc.tif",
            tiff_bytes(grey(10), description="A" * 5_000_000, metadata=None),
            "desc.tif",
            "5 MB ImageDescription",
        ),
        _accepted(
            "tiff_3mb_xmp",
            "xmp.tif",
            tiff_with_tag(11, 700, "B", b"<x:xmpmeta>" + b"x" * 3_000_000),
            "xmp.tif",
            "3 MB XMP packet",
        ),
        _accepted(
            "png_4mb_text_chunk",
            "text.png",
            png_with_chunk_after_header(valid_png(12), png_chunk(b"tEXt", b"Comment\x00" + b"y" * 4_000_000)),
            "text.png",
            "4 MB tEXt chunk",
        ),
        _accepted(
            "jpeg_5mb_comments",
            "comments.jpg",
            jpeg_with_comment_segments(13, 80),
            "comments.jpg",
            "80 maximal COM segments",
        ),
        # Wrong extensions: the content decides the format.
        _accepted("png_named_tif", "scan.tif", valid_png(20), "scan.tif", "PNG content"),
        _accepted("tiff_named_jpg", "scan.jpg", valid_tiff(21), "scan.jpg", "TIFF content"),
        _accepted("jpeg_named_png", "scan.png", valid_jpeg(22), "scan.png", "JPEG content"),
        _accepted("bmp_named_tiff", "scan.tiff", valid_bmp(23), "scan.tiff", "BMP content"),
        _accepted("png_named_exe", "setup.exe", valid_png(24), "setup.exe", "an image, whatever the name"),
        # Hostile names on valid images: stored under the content hash, the name sanitised.
        _accepted("name_unix_traversal", "../../etc/passwd.tif", valid_tiff(30), "passwd.tif", "../ components"),
        _accepted("name_absolute", "/etc/cron.d/evil.png", valid_png(31), "evil.png", "absolute path"),
        _accepted(
            "name_windows_traversal",
            "..\\..\\Windows\\System32\\evil.jpg",
            valid_jpeg(32),
            "evil.jpg",
            "backslash path",
        ),
        _accepted("name_nul_byte", "scan\x00.php.png", valid_png(33), "scan.php.png", "NUL truncation trick"),
        _accepted(
            "name_control_chars", "line\r\nbreak\t.png", valid_png(34), "linebreak.png", "header-splitting characters"
        ),
        _accepted(
            "name_unicode",
            "Probe_µm_日本語_😀.tif",
            valid_tiff(35),
            "Probe_µm_日本語_😀.tif",
            "non-ASCII, astral plane",
        ),
        _accepted(
            "name_rtl_override",
            "scan\u202egnp.exe.tif",
            valid_tiff(36),
            "scangnp.exe.tif",
            "right-to-left override hides the real extension",
        ),
        _accepted(
            "name_markup",
            "<img src=x onerror=alert(1)>.png",
            valid_png(37),
            "<img src=x onerror=alert(1)>.png",
            "markup in the name (escaped on display)",
        ),
        _accepted(
            "name_400_chars", long_name, valid_png(38), long_name[-MAX_FILENAME_LENGTH:], "longer than the column"
        ),
    ]
    ids = [entry.id for entry in entries]
    assert len(ids) == len(set(ids)), "corpus ids must be unique"
    return tuple(entries)


def refused() -> list[HostileFile]:
    return [entry for entry in corpus() if not entry.accepted]


def accepted() -> list[HostileFile]:
    return [entry for entry in corpus() if entry.accepted]


def by_id(entry_id: str) -> HostileFile:
    return next(entry for entry in corpus() if entry.id == entry_id)
