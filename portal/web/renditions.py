"""Browser-displayable renditions of SEM originals (browsers cannot show 16-bit TIFF).

A rendition is an 8-bit greyscale PNG made once from the original with classifier.imageio
(numpy + Pillow, no torch) and cached in the media storage under renditions/, keyed by the content
hash, so it never goes stale: the original of a given sha256 never changes.
"""

from __future__ import annotations

import io

from django.core.files.base import ContentFile
from PIL import Image

from portal.models import SEMImage
from portal.storage import media_storage

# Long side in pixels of each rendition; "full" keeps the original's resolution up to a cap that
# keeps the PNG a reasonable download (a 6144 x 4096 frame is well within it).
RENDITION_LONG_SIDE = {"full": 8192, "preview": 1280}


def rendition_name(image: SEMImage, kind: str) -> str:
    """Name of the cached PNG in the media storage, made on first use."""
    name = f"renditions/{kind}/{image.sha256[:2]}/{image.sha256}.png"
    storage = media_storage()
    if not storage.exists(name):
        # Two requests may render the same image at once: the storage publishes only complete files,
        # and the same bytes under the same name are stored once.
        storage.save_content_addressed(name, ContentFile(_png(_render(image, RENDITION_LONG_SIDE[kind]))))
    return name


def _render(image: SEMImage, long_side: int) -> Image.Image:
    from classifier.imageio import load_grey8

    with image.original.open("rb") as original:
        grey = load_grey8(original)
    if max(grey.size) > long_side:
        grey.thumbnail((long_side, long_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return grey


def _png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False, compress_level=3)
    return buffer.getvalue()
