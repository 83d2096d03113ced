"""Torch-free image handling: decoding, data-bar detection, derivatives, fingerprint."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from classifier.databar import crop_databar, detect_databar
from classifier.fingerprint import data_fingerprint, file_sha256
from classifier.imageio import load_grey8
from classifier.preprocess import DERIVATIVE_SHORT_SIDE, make_derivative, prepare_raw

SHARED = Path(__file__).resolve().parents[2].parent / "shared"


def natural_texture(width=640, height=480, seed=0, blur=3.0, dark_bottom=False) -> np.ndarray:
    """Blurred noise with bright blobs: a stand-in for a micrograph."""
    rng = np.random.default_rng(seed)
    noise = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))
    base = np.asarray(noise.filter(ImageFilter.GaussianBlur(blur)), dtype=np.float32)
    base = (base - base.mean()) * 4 + 110
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(25):
        x, y, r = rng.integers(0, width), rng.integers(0, height), rng.integers(5, 30)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=int(rng.integers(170, 240)))
    array = np.asarray(img.filter(ImageFilter.GaussianBlur(1)), dtype=np.float32)
    if dark_bottom:  # shadowed lower part, a classic false-positive trap
        array *= np.linspace(1.0, 0.1, height)[:, None]
    array += rng.normal(0, 6, array.shape)
    return np.clip(array, 0, 255).astype(np.uint8)


def add_banner(image: np.ndarray, fraction: float, dark: bool, separator: bool, seed=1) -> tuple[np.ndarray, int]:
    """Append a vendor-like banner: uniform background, text blocks, scale bar."""
    height, width = image.shape
    bar_height = int(height * fraction)
    background, ink = (0, 255) if dark else (255, 0)
    bar = Image.new("L", (width, bar_height), background)
    draw = ImageDraw.Draw(bar)
    rng = np.random.default_rng(seed)
    for column in range(6):
        x = 10 + column * width // 7
        draw.text((x, bar_height // 4), f"HV {rng.integers(1, 30)} kV", fill=ink)
        if bar_height > 30:
            draw.text((x, bar_height // 2 + 2), f"WD {rng.integers(1, 20)} mm", fill=ink)
    draw.rectangle((width * 3 // 4, bar_height // 2, width * 3 // 4 + 80, bar_height // 2 + 2), fill=ink)
    if separator:
        draw.line((0, 0, width, 0), fill=ink, width=2)
    result = np.vstack([image[: height - bar_height], np.asarray(bar)])
    return result, height - bar_height


@pytest.mark.parametrize("fraction", [0.05, 0.09, 0.15, 0.2])
@pytest.mark.parametrize("dark", [True, False], ids=["white-on-black", "black-on-white"])
@pytest.mark.parametrize("separator", [False, True], ids=["plain", "ruled"])
def test_detects_banners_of_different_heights_and_polarities(fraction, dark, separator):
    image, top = add_banner(natural_texture(seed=int(fraction * 100)), fraction, dark, separator)
    found = detect_databar(image)
    assert found is not None
    assert abs(found - top) <= 2


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dark_bottom", [False, True])
@pytest.mark.parametrize("blur", [1.0, 4.0])
def test_no_false_positive_without_banner(seed, dark_bottom, blur):
    assert detect_databar(natural_texture(seed=seed, blur=blur, dark_bottom=dark_bottom)) is None


def test_no_false_positive_on_flat_or_blank_images():
    assert detect_databar(np.zeros((300, 400), np.uint8)) is None
    assert detect_databar(np.full((300, 400), 255, np.uint8)) is None
    gradient = np.tile(np.linspace(0, 255, 300, dtype=np.uint8)[:, None], (1, 400))
    assert detect_databar(gradient) is None


def test_crop_databar_removes_rows():
    image, top = add_banner(natural_texture(), 0.1, True, False)
    cropped, removed = crop_databar(Image.fromarray(image))
    assert cropped.height == top and removed == image.shape[0] - top
    untouched, none_removed = crop_databar(Image.fromarray(natural_texture()))
    assert none_removed == 0 and untouched.size == (640, 480)


def _roundtrip(img: Image.Image, fmt: str, **kwargs) -> io.BytesIO:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kwargs)
    buffer.seek(0)
    return buffer


def test_load_grey8_16bit_png_is_percentile_stretched():
    ramp = (np.arange(200 * 100, dtype=np.uint32).reshape(100, 200) % 4000 + 1000).astype(np.uint16)
    img = Image.fromarray(ramp)
    assert img.mode.startswith("I;16")
    grey = load_grey8(_roundtrip(img, "PNG"))
    array = np.asarray(grey)
    assert grey.mode == "L" and grey.size == (200, 100)
    assert array.min() == 0 and array.max() == 255  # stretched, not shifted by >> 8
    assert np.all(np.diff(array[0, :100].astype(int)) >= 0)  # monotonic mapping


def test_load_grey8_blank_16bit_is_zero_not_nan():
    blank = Image.fromarray(np.zeros((50, 60), np.uint16))
    assert np.asarray(load_grey8(_roundtrip(blank, "TIFF"))).max() == 0


def test_load_grey8_palette_rgb_rgba_and_bilevel():
    base = Image.fromarray(natural_texture(120, 90))
    for mode in ("P", "RGB", "RGBA", "1", "LA"):
        converted = base.convert(mode)
        fmt = "PNG"
        grey = load_grey8(_roundtrip(converted, fmt))
        assert grey.mode == "L" and grey.size == (120, 90), mode
    rgb = load_grey8(_roundtrip(base.convert("RGB"), "PNG"))
    assert np.abs(np.asarray(rgb, int) - np.asarray(base, int)).max() <= 1


def test_load_grey8_multipage_tiff_takes_first_page(tmp_path):
    first = Image.fromarray(np.full((40, 50), 10, np.uint8))
    second = Image.fromarray(np.full((40, 50), 200, np.uint8))
    path = tmp_path / "multi.tif"
    first.save(path, save_all=True, append_images=[second])
    assert np.asarray(load_grey8(path)).max() == 10


def test_load_grey8_tifffile_fallback_for_float_tiff(tmp_path):
    import tifffile

    data = np.linspace(-1.0, 3.0, 64 * 48, dtype=np.float64).reshape(48, 64)
    path = tmp_path / "float64.tif"
    tifffile.imwrite(path, data)  # float64 TIFFs are not decodable by Pillow
    grey = load_grey8(path)
    assert grey.mode == "L" and grey.size == (64, 48) and np.asarray(grey).max() == 255


def test_load_grey8_reduce_to_uses_draft_for_jpeg():
    big = Image.fromarray(natural_texture(1024, 768)).convert("RGB")
    grey = load_grey8(_roundtrip(big, "JPEG", quality=90), reduce_to=256)
    assert grey.mode == "L" and min(grey.size) >= 256 and min(grey.size) < 768


def test_make_derivative_keeps_aspect_and_short_side():
    derivative = make_derivative(Image.fromarray(natural_texture(1024, 768)))
    assert derivative.mode == "L" and derivative.size == (341, DERIVATIVE_SHORT_SIDE)
    tall = make_derivative(Image.fromarray(natural_texture(300, 900)), short_side=64)
    assert tall.size == (64, 192)


def test_prepare_raw_crops_the_bar(tmp_path):
    image, top = add_banner(natural_texture(1024, 768), 0.1, False, True)
    path = tmp_path / "raw.tif"
    Image.fromarray(image).save(path)
    derivative = prepare_raw(path)
    assert derivative.height == 256
    assert derivative.width == round(1024 * 256 / top)


def test_data_fingerprint_is_order_independent_and_label_sensitive(tmp_path):
    pairs = [("a" * 64, "Fibres"), ("b" * 64, "Powder")]
    assert data_fingerprint(pairs) == data_fingerprint(list(reversed(pairs)))
    assert data_fingerprint(pairs) != data_fingerprint([("a" * 64, "Powder"), ("b" * 64, "Powder")])
    assert len(data_fingerprint(pairs)) == 64
    path = tmp_path / "x.bin"
    path.write_bytes(b"abc")
    assert file_sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_package_import_is_torch_free():
    import subprocess
    import sys

    code = (
        "import sys, classifier, classifier.imageio, classifier.databar, classifier.preprocess, "
        "classifier.fingerprint; bad=[m for m in sys.modules if m.split('.')[0] in ('torch','fastai','django')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _real_images():
    root = SHARED / "sem-real"
    if not root.is_dir():
        pytest.skip("shared/sem-real not present")
    return sorted(p for p in root.glob("*/*") if p.is_file())


# Files whose banner we checked by eye (FEI banners on the FEBID pillars and one AgNWN image).
REAL_WITH_BAR = {"structuralgt_AgNWN_slice0001.tif"} | {
    f"febid_pillar_array_{name}_001.tif"
    for name in ("A3_50i1T45", "A3_50k1T", "A3_50m1T", "D1_49b1T", "D1_49c1T", "D1_49g1T", "D1_49h1T")
}


def test_real_images_decode_and_bars_match_inspection():
    for path in _real_images():
        grey = load_grey8(path)
        assert grey.mode == "L"
        top = detect_databar(np.asarray(grey))
        has_bar = path.name in REAL_WITH_BAR
        assert (top is not None) == has_bar, path.name
        if has_bar:
            assert 0.8 * grey.height < top < 0.97 * grey.height


def test_vendor_tiffs_bars():
    root = SHARED / "sem-vendor-tiff"
    if not root.is_dir():
        pytest.skip("shared/sem-vendor-tiff not present")
    expected = {
        "test_tiff_Zeiss_SEM_1k.tif": True,
        "test_tiff_Zeiss_SEM_512pix.tif": True,
        "FEBID_A3_50g1T_001.tif": True,
        "FEI-Helios-Ebeam-8bits.tif": True,
        "FEI-Helios-Ebeam-16bits.tif": True,
        "FEI-Helios-navcam.tif": False,
        "ZEISS_SEM_multipage.tif": False,
    }
    for name, has_bar in expected.items():
        grey = load_grey8(root / name)
        assert (detect_databar(np.asarray(grey)) is not None) == has_bar, name
