"""Browser-displayable renditions of SEM originals (browsers cannot show 16-bit TIFF).

A rendition is an 8-bit greyscale PNG made once from the original with classifier.imageio
(numpy + Pillow, no torch) and cached under MEDIA_ROOT/renditions/, keyed by the content hash,
so it never goes stale: the original of a given sha256 never changes.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from django.conf import settings
from PIL import Image

from portal.models import SEMImage

# Long side in pixels of each rendition; "full" keeps the original's resolution up to a cap that
# keeps the PNG a reasonable download (a 6144 x 4096 frame is well within it).
RENDITION_LONG_SIDE = {"full": 8192, "preview": 1280}


def rendition_path(image: SEMImage, kind: str) -> Path:
    """Path of the cached PNG, made on first use."""
    path = Path(settings.MEDIA_ROOT) / "renditions" / kind / image.sha256[:2] / f"{image.sha256}.png"
    if not path.exists():
        _write_atomically(_render(image, RENDITION_LONG_SIDE[kind]), path)
    return path


def _render(image: SEMImage, long_side: int) -> Image.Image:
    from classifier.imageio import load_grey8

    with image.original.open("rb") as original:
        grey = load_grey8(original)
    if max(grey.size) > long_side:
        grey.thumbnail((long_side, long_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return grey


def _write_atomically(picture: Image.Image, path: Path) -> None:
    # Two requests may render the same image at once: write to a temporary file and rename, so a
    # reader never sees a half-written PNG.
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            picture.save(out, format="PNG", optimize=False, compress_level=3)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
