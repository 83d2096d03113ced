"""Browser-displayable renditions of SEM originals (browsers cannot show 16-bit TIFF).

A rendition is an 8-bit greyscale PNG made once from the original with classifier.imageio
(numpy + Pillow, no torch) and cached in the media storage under renditions/, keyed by the content
hash, so it never goes stale: the original of a given sha256 never changes.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from django.core.files.base import ContentFile
from PIL import Image

from portal.models import SEMImage
from portal.services.ingestion.decode_guard import run_guarded
from portal.services.ingestion.validation import inspect_image
from portal.services.ingestion.validation_sniff import SNIFF_BYTES, sniff_format
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
        storage.save_content_addressed(name, ContentFile(_render(image, RENDITION_LONG_SIDE[kind])))
    return name


def _render(image: SEMImage, long_side: int) -> bytes:
    """The rendition's PNG, decoded in a capped child process like an upload: the original was checked
    when it was stored, but by the checks of that day (ValidationError when today's refuse it)."""
    with _local_copy(image) as path:
        return run_guarded(render_file, path, long_side)


@contextmanager
def _local_copy(image: SEMImage) -> Iterator[str]:
    """A path to the original on the local disk: its own on a disk storage, a temporary copy otherwise."""
    try:
        path = image.original.path
    except NotImplementedError:  # object storage has no local path
        path = None
    if path:
        yield path
        return
    with tempfile.NamedTemporaryFile(prefix="sem-rendition-", suffix=".bin") as copy:
        with image.original.open("rb") as original:
            shutil.copyfileobj(original, copy, 1024 * 1024)
        copy.flush()
        yield copy.name


def render_file(path: str, long_side: int) -> bytes:
    """In the child: the upload's header, structure and truncation checks, the decode, the PNG."""
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    _info, grey = inspect_image(path, sniff_format(head, os.path.basename(path)))
    if max(grey.size) > long_side:
        grey.thumbnail((long_side, long_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return _png(grey)


def _png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False, compress_level=3)
    return buffer.getvalue()
