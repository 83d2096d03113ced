"""Imported once, in the forkserver that forks the capped decoding children (portal.services.decode_guard),
never in a web or worker process: Django is set up, the decoders imported and every lazy first use done
there (Pillow's plugin registry, tifffile, numpy's percentile code), so no child pays for any of it.
"""

import io
import os
import tempfile

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django.setup()

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from portal.services.ingest import examine  # noqa: E402
from portal.web.renditions import render_file  # noqa: E402


def _warm_up() -> None:
    """One small 8-bit PNG and one 16-bit TIFF through the upload and the rendition code paths."""
    ramp = (np.arange(96 * 64) % 251).reshape(64, 96)
    for array, image_format in ((ramp.astype(np.uint8), "PNG"), (ramp.astype(np.uint16) * 200, "TIFF")):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, image_format)
        with tempfile.NamedTemporaryFile(suffix=".bin") as handle:
            handle.write(buffer.getvalue())
            handle.flush()
            examine(handle.name, buffer.getvalue()[:1024], "warm-up")
            render_file(handle.name, 64)


_warm_up()
