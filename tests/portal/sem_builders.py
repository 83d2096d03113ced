"""Builders for test images: every accepted format, vendor metadata TIFFs and broken files."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from classifier.synthetic import make_image

FEI_INI = """[User]
Date=03/14/2024
Time=02:15:09 PM
User=tester
[System]
Type=SEM
SystemType=Quanta 250 FEG
[Beam]
HV=15000
Beam=EBeam
Scan=EScan
[EBeam]
HV=15000
HFW=2.56e-05
WD=0.0101
[Scan]
PixelWidth=2.5e-08
PixelHeight=2.5e-08
HorFieldsize=2.56e-05
[Image]
ResolutionX=1024
ResolutionY=768
MagCanvasRealWidth=0.128
[Detectors]
Number=1
Name=ETD
Mode=SE
"""

ZEISS_CZ_SEM = "\r\n".join(
    [
        "0",
        "AP_ACTUALKV",
        "EHT = 5.00 kV",
        "AP_WD",
        "WD = 4.9 mm",
        "AP_MAG",
        "Mag = 20.00 K X",
        "AP_IMAGE_PIXEL_SIZE",
        "Image Pixel Size = 4.4 nm",
        "DP_DETECTOR_CHANNEL",
        "Signal A = SE2",
        "SV_SERIAL_NUMBER",
        "Serial No. = Sigma 300-62-11",
        "AP_DATE",
        "Date :07 Feb 2022",
        "AP_TIME",
        "Time :16:05:33",
        "",
    ]
)

TESCAN_INI = """[MAIN]
Company=TESCAN
Date=2021-06-30
Device=MIRA
DeviceModel=MIRA3 LMH
Magnification=25000
PixelSizeX=8.5e-09
PixelSizeY=8.5e-09
SoftwareVersion=4.2.29.0
Time=09:41:12
[SEM]
Detector=SE
HV=10000
WD=0.00652
"""

JEOL_TXT = """$CM_FORMAT JEOL/SEM
$CM_VERSION 1.0
$CM_INSTRUMENT JSM-7600F
$CM_SIGNAL LEI
$CM_MAG 8000
$CM_ACCEL_VOLT 15.00
$CM_DATE 2019/11/05
$CM_TIME 10:20:30
$$SM_WD 8.0
$$SM_MICRON_BAR 160
$$SM_MICRON_MARKER 2um
"""

HITACHI_TXT = """[SemImageFile]
InstructName=SU8230
Date=2020/02/17
Time=11:12:13
AcceleratingVoltage=3000 Volt
Magnification=50000
WorkingDistance=8100 um
PixelSize=1.984
SignalName=SE(U)
"""


def grey_pattern(height: int, width: int, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    """A textured image (not constant, so derivatives and detectors see real content)."""
    rng = np.random.default_rng(seed)
    base = np.asarray(make_image("Porous_Sponge", seed, size=(width, height), databar=False), dtype=np.float64)
    noise = rng.normal(0, 3, base.shape)
    scaled = np.clip(base + noise, 0, 255) / 255.0
    top = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1.0
    return (scaled * top).astype(dtype)


def tiff_bytes(array: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **kwargs)
    return buffer.getvalue()


def pillow_bytes(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def tiff_with_text_tag(
    code: int, text: str, *, dtype: str = "s", array: np.ndarray | None = None, encoding: str = "utf-8"
) -> bytes:
    """A TIFF carrying ``text`` in tag ``code``: as an ASCII tag ('s', 7-bit, ends at a NUL) or as
    raw bytes ('B', how vendors store non-ASCII text such as cp1252 'µ')."""
    array = grey_pattern(96, 128) if array is None else array
    payload = text if dtype == "s" else text.encode(encoding)
    count = 0 if dtype == "s" else len(payload)
    return tiff_bytes(array, extratags=[(code, dtype, count, payload, True)])


def accepted_samples() -> dict[str, tuple[str, bytes, dict]]:
    """name -> (file name, bytes, expected SEMImage fields)."""
    grey8 = grey_pattern(300, 400)
    grey16 = grey_pattern(300, 400, np.uint16, seed=1)
    rgb = np.stack([grey8, np.roll(grey8, 5, axis=1), 255 - grey8], axis=-1)
    palette = (np.arange(256, dtype=np.uint16)[None, :] * 257).repeat(3, axis=0)
    pages = np.stack([grey8, 255 - grey8])
    return {
        "tiff_grey8": ("a.tif", tiff_bytes(grey8), {"format": "TIFF", "mode": "L", "bit_depth": 8}),
        "tiff_grey16": ("b.tiff", tiff_bytes(grey16), {"format": "TIFF", "mode": "I;16", "bit_depth": 16}),
        "tiff_rgb": ("c.tif", tiff_bytes(rgb, photometric="rgb"), {"format": "TIFF", "mode": "RGB", "bit_depth": 8}),
        "tiff_palette": (
            "d.tif",
            tiff_bytes(grey8, photometric="palette", colormap=palette),
            {"format": "TIFF", "mode": "P", "bit_depth": 8},
        ),
        "tiff_multipage": ("e.tif", tiff_bytes(pages), {"format": "TIFF", "page_count": 2, "mode": "L"}),
        "tiff_zlib16": ("f.tif", tiff_bytes(grey16, compression="zlib"), {"format": "TIFF", "bit_depth": 16}),
        "png_grey8": ("g.png", pillow_bytes(Image.fromarray(grey8), "PNG"), {"format": "PNG", "mode": "L"}),
        "png_grey16": (
            "h.png",
            pillow_bytes(Image.fromarray(grey16), "PNG"),
            {"format": "PNG", "mode": "I;16", "bit_depth": 16},
        ),
        "png_rgb": ("i.png", pillow_bytes(Image.fromarray(rgb), "PNG"), {"format": "PNG", "mode": "RGB"}),
        "jpeg": ("j.jpg", pillow_bytes(Image.fromarray(grey8), "JPEG", quality=90), {"format": "JPEG", "mode": "L"}),
        "jpeg_rgb": ("k.jpeg", pillow_bytes(Image.fromarray(rgb), "JPEG"), {"format": "JPEG", "mode": "RGB"}),
        "bmp": ("l.bmp", pillow_bytes(Image.fromarray(grey8), "BMP"), {"format": "BMP", "extension": ".bmp"}),
    }


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def tiff_declaring(width: int, height: int) -> bytes:
    """A little-endian TIFF header (one strip) declaring width x height 8-bit grey pixels."""
    entries = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, 1, 8 + 2 + 12 * 9 + 4),
        (277, 3, 1, 1),
        (278, 4, 1, height),
        (279, 4, 1, 16),
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack("<HHI", tag, kind, count) + (
            struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        )
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + b"\x00" * 16


def files_under(root: Path) -> list[Path]:
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []
