"""Decoding bombs that pass a pixel limit (issue 11, item 2), built in memory at test time.

Each is a small, structurally valid file whose decoded form is huge or whose shape is absurd:

- extreme aspect ratios (a 1 x 200,000 PNG of a few hundred bytes; 1 x 5,000);
- TIFFs whose samples per pixel or bits per sample multiply the decoded size (1,000 samples per pixel);
- strip bombs: every strip of a 10,000 x 10,000 TIFF points at the same tiny deflated block, so a file
  of a few kilobytes decodes to the whole pixel limit.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

# TIFF field types
SHORT, LONG = 3, 4


def png_strip(width: int, height: int) -> bytes:
    """A complete, valid 8-bit grey PNG of width x height black pixels (e.g. 1 x 200,000: ~470 bytes)."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + one grey byte per pixel
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def tiff_chained_ifds(count: int) -> bytes:
    """A TIFF of `count` tiny chained IFDs (18 bytes each): a page-count bomb for whatever walks the chain."""
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for index in range(count):
        following = len(out) + 18 if index < count - 1 else 0
        out += struct.pack("<H", 1) + struct.pack("<HHII", 256, LONG, 1, 1) + struct.pack("<I", following)
    return bytes(out)


def tiff_strip_bomb(
    width: int,
    height: int,
    *,
    samples: int = 1,
    bits: int = 8,
    rows_per_strip: int | None = None,
    photometric: int | None = None,
    sample_format: int = 1,
    ramp: bool = False,
) -> bytes:
    """A valid, deflate-compressed, chunky TIFF whose strips all point at one deflated block.

    The block is zeros, or with `ramp` rows of a grey ramp (so that a percentile stretch has a range to
    work on and every decoding step does its full work). The file is a few kilobytes (zeros) to a few
    megabytes (ramp); decoding it yields width x height x samples x bits/8 bytes.
    """
    if photometric is None:
        photometric = 2 if samples in (3, 4) and bits in (8, 16) else 1
    bytes_per_row = width * samples * bits // 8
    if rows_per_strip is None:
        rows_per_strip = max(1, min(height, (1 << 20) // max(1, bytes_per_row)))
    strip_count = -(-height // rows_per_strip)
    if ramp:
        dtype = {(1, 8): "<u1", (1, 16): "<u2", (1, 32): "<u4", (3, 32): "<f4", (2, 16): "<i2"}[(sample_format, bits)]
        row = (np.arange(width * samples) % 4099).astype(dtype).tobytes()
        block = zlib.compress(row * rows_per_strip, 6)
    else:
        block = zlib.compress(b"\x00" * (bytes_per_row * rows_per_strip), 9)

    entries: list[tuple[int, int, list[int]]] = [
        (256, LONG, [width]),
        (257, LONG, [height]),
        (258, SHORT, [bits] * samples),
        (259, SHORT, [8]),  # Adobe deflate
        (262, SHORT, [photometric]),
        (273, LONG, [0] * strip_count),  # patched below
        (277, SHORT, [samples]),
        (278, LONG, [rows_per_strip]),
        (279, LONG, [len(block)] * strip_count),
        (284, SHORT, [1]),  # chunky
    ]
    extra = samples - (3 if photometric == 2 else 1)
    if extra > 0:
        entries.append((338, SHORT, [0] * extra))  # extra samples: unspecified
    if sample_format != 1:
        entries.append((339, SHORT, [sample_format] * samples))
    return _tiff(entries, block)


def _tiff(entries: list[tuple[int, int, list[int]]], block: bytes) -> bytes:
    ifd_offset = 8
    ifd_size = 2 + 12 * len(entries) + 4
    arrays_at = ifd_offset + ifd_size
    # Lay out the out-of-line arrays, then the data block.
    layout: dict[int, int] = {}
    cursor = arrays_at
    for tag, kind, values in entries:
        size = len(values) * (2 if kind == SHORT else 4)
        if size > 4:
            layout[tag] = cursor
            cursor += size + (size & 1)
    block_at = cursor
    entries = [(tag, kind, [block_at] * len(values) if tag == 273 else values) for tag, kind, values in entries]

    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_offset))
    out += struct.pack("<H", len(entries))
    arrays = bytearray()
    for tag, kind, values in entries:
        code = "H" if kind == SHORT else "I"
        packed = struct.pack(f"<{len(values)}{code}", *values)
        if tag in layout:
            out += struct.pack("<HHII", tag, kind, len(values), layout[tag])
            arrays += packed + (b"\x00" if len(packed) & 1 else b"")
        else:
            out += struct.pack("<HHI", tag, kind, len(values)) + packed.ljust(4, b"\x00")
    out += struct.pack("<I", 0)
    out += arrays
    assert len(out) == block_at, (len(out), block_at)
    return bytes(out + block)


def bombs() -> dict[str, tuple[bytes, str | None]]:
    """The issue's bombs, by name: (file, the refusal code, or None when it is an acceptable image whose
    decoding must merely stay within the memory bound)."""
    return {
        "png_1x200000": (png_strip(1, 200_000), "extreme_aspect_ratio"),
        "png_1x5000": (png_strip(1, 5_000), "extreme_aspect_ratio"),
        "png_5000x1": (png_strip(5_000, 1), "extreme_aspect_ratio"),
        "tiff_1000_samples": (tiff_strip_bomb(1000, 1000, samples=1000), "too_many_bytes"),
        "tiff_rgba_float": (tiff_strip_bomb(6000, 6000, samples=4, bits=32, sample_format=3), "too_many_bytes"),
        "tiff_strip_10k": (tiff_strip_bomb(10_000, 10_000), None),
    }


def at_the_limits() -> dict[str, bytes]:
    """Acceptable images as expensive as the default limits allow (100 Mpx, 256 MiB decoded, aspect 20),
    one per decoding path: each is probed for the worst-case memory of one upload."""
    return {
        "grey8_100mpx": tiff_strip_bomb(10_000, 10_000, ramp=True),
        "grey16_100mpx": tiff_strip_bomb(10_000, 10_000, bits=16, ramp=True),
        "rgb8_89mpx": tiff_strip_bomb(10_900, 8_200, samples=3, ramp=True),
        "rgb16_44mpx": tiff_strip_bomb(7_700, 5_800, samples=3, bits=16, ramp=True),
        "float32_67mpx": tiff_strip_bomb(9_400, 7_100, bits=32, sample_format=3, ramp=True),
        "grey8_aspect_20": tiff_strip_bomb(44_700, 2_235, ramp=True),
        "png_grey8_100mpx": png_strip(10_000, 10_000),
    }


# ---------------------------------------------------------------------------------------------------------
# Structure bombs (issue 22): tiles larger than the image, strip tables larger than the image, truncations.
# Each is built for one TIFF compression; the chunk data is valid for that compression, so only the
# structure (tile size, number of chunks, chunks present) is wrong.
# ---------------------------------------------------------------------------------------------------------

COMPRESSIONS = {"none": 1, "lzw": 5, "jpeg": 7, "zlib": 8, "packbits": 32773}


def encode_chunk(raw: bytes, compression: str, width: int, height: int) -> bytes:
    """`raw` (8-bit grey, width x height) encoded as one TIFF strip or tile of `compression`."""
    if compression == "none":
        return raw
    if compression == "zlib":
        return zlib.compress(raw, 9)
    if compression == "packbits":
        return _packbits(raw)
    if compression == "lzw":
        return _lzw(raw)
    if compression == "jpeg":
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.frombytes("L", (width, height), raw).save(buffer, "JPEG", quality=90)
        return buffer.getvalue()
    raise ValueError(compression)


def _packbits(data: bytes) -> bytes:
    out, index = bytearray(), 0
    while index < len(data):
        run = 1
        while index + run < len(data) and run < 128 and data[index + run] == data[index]:
            run += 1
        if run >= 2:
            out += bytes([257 - run, data[index]])
        else:
            out += bytes([0, data[index]])
        index += run
    return bytes(out)


def _lzw(data: bytes) -> bytes:
    """TIFF LZW, 9-bit codes only: the table is cleared before any reader would widen the codes."""
    clear, end = 256, 257
    bits = [f"{clear:09b}"]
    table: dict[tuple[int, int], int] = {}
    following, code = 258, None
    for byte in data:
        if code is None:
            code = byte
        elif (code, byte) in table:
            code = table[(code, byte)]
        else:
            bits.append(f"{code:09b}")
            table[(code, byte)] = following
            following, code = following + 1, byte
            if following >= 500:
                bits.append(f"{clear:09b}")
                table.clear()
                following = 258
    if code is not None:
        bits.append(f"{code:09b}")
    bits.append(f"{end:09b}")
    stream = "".join(bits)
    stream += "0" * (-len(stream) % 8)
    return int(stream, 2).to_bytes(len(stream) // 8, "big") if stream else b""


def tiff_chunked(
    width: int,
    height: int,
    chunks: list[bytes],
    *,
    compression: str = "zlib",
    tile: tuple[int, int] | None = None,
    rows_per_strip: int | None = None,
    samples: int = 1,
    chunk_count: int | None = None,
    missing_after: int | None = None,
) -> bytes:
    """An 8-bit TIFF whose chunk table has `chunk_count` entries (default: len(chunks)); entry i points at
    chunks[i % len(chunks)]. With `missing_after`, entries from that index on have offset 0 and 0 bytes
    (chunks that were never written: a truncated file)."""
    count = chunk_count if chunk_count is not None else len(chunks)
    entries: list[tuple[int, int, list[int]]] = [
        (256, LONG, [width]),
        (257, LONG, [height]),
        (258, SHORT, [8] * samples),
        (259, SHORT, [COMPRESSIONS[compression]]),
        (262, SHORT, [1]),
        (277, SHORT, [samples]),
        (284, SHORT, [1]),
    ]
    if samples > 1:
        entries.append((338, SHORT, [0] * (samples - 1)))
    if tile:
        entries += [(322, LONG, [tile[0]]), (323, LONG, [tile[1]])]
        offsets_tag, counts_tag = 324, 325
    else:
        entries.append((278, LONG, [rows_per_strip or height]))
        offsets_tag, counts_tag = 273, 279
    sizes = [len(chunks[index % len(chunks)]) for index in range(count)]
    if missing_after is not None:
        sizes[missing_after:] = [0] * (count - missing_after)
    entries += [(offsets_tag, LONG, [0] * count), (counts_tag, LONG, sizes)]
    entries.sort()
    return _tiff_with_chunks(entries, offsets_tag, chunks, missing_after)


def _tiff_with_chunks(entries, offsets_tag: int, chunks: list[bytes], missing_after: int | None) -> bytes:
    ifd_size = 2 + 12 * len(entries) + 4
    cursor = 8 + ifd_size
    layout: dict[int, int] = {}
    for tag, kind, values in entries:
        size = len(values) * (2 if kind == SHORT else 4)
        if size > 4:
            layout[tag] = cursor
            cursor += size + (size & 1)
    chunk_at, position = [], cursor
    for chunk in chunks:
        chunk_at.append(position)
        position += len(chunk)
    patched = []
    for tag, kind, values in entries:
        if tag == offsets_tag:
            values = [chunk_at[index % len(chunks)] for index in range(len(values))]
            if missing_after is not None:
                values[missing_after:] = [0] * (len(values) - missing_after)
        patched.append((tag, kind, values))
    out = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(patched)))
    arrays = bytearray()
    for tag, kind, values in patched:
        packed = np.array(values, dtype="<u2" if kind == SHORT else "<u4").tobytes()
        if tag in layout:
            out += struct.pack("<HHII", tag, kind, len(values), layout[tag])
            arrays += packed + (b"\x00" if len(packed) & 1 else b"")
        else:
            out += struct.pack("<HHI", tag, kind, len(values)) + packed.ljust(4, b"\x00")
    out += struct.pack("<I", 0) + arrays
    assert len(out) == cursor, (len(out), cursor)
    return bytes(out) + b"".join(chunks)


def _ramp(width: int, height: int) -> bytes:
    return (np.add.outer(np.arange(height), np.arange(width)) % 251).astype(np.uint8).tobytes()


def tile_bomb(compression: str, *, side: int = 2000, tile: int = 32768) -> bytes:
    """A side x side image declared as tiles of tile x tile pixels (one tile covers it all): the data of
    one small tile, but a decoder that believes the header allocates tile x tile bytes per tile."""
    per_tile = -((-side // tile) ** 2)
    chunk = encode_chunk(_ramp(64, 64), compression, 64, 64)
    return tiff_chunked(side, side, [chunk], compression=compression, tile=(tile, tile), chunk_count=per_tile)


def strip_table_bomb(compression: str, *, side: int = 1000, entries: int = 1_000_000) -> bytes:
    """A side x side image of one row per strip whose strip table holds `entries` entries (a decoder
    that believes the table decodes every one of them), all pointing at one valid one-row strip."""
    chunk = encode_chunk(_ramp(side, 1), compression, side, 1)
    return tiff_chunked(side, side, [chunk], compression=compression, rows_per_strip=1, chunk_count=entries)


def truncated_tiles(compression: str, *, side: int = 4000, tile: int = 16) -> bytes:
    """A tiled image with only its first tile written (1 of 62,500 for 4000 x 4000 in 16 x 16 tiles)."""
    count = (-(-side // tile)) ** 2
    chunk = encode_chunk(_ramp(tile, tile), compression, tile, tile)
    return tiff_chunked(
        side, side, [chunk], compression=compression, tile=(tile, tile), chunk_count=count, missing_after=1
    )


def truncated_strips(compression: str, *, side: int = 1000, rows: int = 8) -> bytes:
    """A stripped image with only its first strip written."""
    count = -(-side // rows)
    chunk = encode_chunk(_ramp(side, rows), compression, side, rows)
    return tiff_chunked(
        side, side, [chunk], compression=compression, rows_per_strip=rows, chunk_count=count, missing_after=1
    )


def valid_tiled(compression: str, *, side: int = 100, tile: int = 64) -> bytes:
    """A valid tiled image (tiles larger than the image are fine when they only pad it)."""
    across = -(-side // tile)
    chunks = [encode_chunk(_ramp(tile, tile), compression, tile, tile) for _ in range(across * across)]
    return tiff_chunked(side, side, chunks, compression=compression, tile=(tile, tile))


def valid_stripped(compression: str, *, side: int = 100, rows: int = 16) -> bytes:
    count = -(-side // rows)
    chunks = [encode_chunk(_ramp(side, rows), compression, side, rows) for _ in range(count)]
    return tiff_chunked(side, side, chunks, compression=compression, rows_per_strip=rows)


def jpeg_truncated(*, declared: int = 10_000, real: int = 64) -> bytes:
    """A JPEG whose frame header declares declared x declared pixels but whose scan holds real x real."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.frombytes("L", (real, real), _ramp(real, real)).save(buffer, "JPEG", quality=90)
    data = bytearray(buffer.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", declared, declared)
    return bytes(data)


def many_samples(*, side: int = 800, samples: int = 400) -> bytes:
    """800 x 800 with 400 samples per pixel: 256 MB decoded, just under the bytes budget."""
    raw = bytes(side * samples)
    chunks = [zlib.compress(raw, 9)] * side
    return tiff_chunked(side, side, chunks[:1], samples=samples, rows_per_strip=1, chunk_count=side)
