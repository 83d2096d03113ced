"""Imported once, in the forkserver that forks the capped decoding children (portal.services.ingestion.decode_guard),
never in a web or worker process: Django is set up, the decoders imported and every lazy first use done
there (Pillow's plugin registry, tifffile, numpy's percentile code), so no child pays for any of it.
"""

import io
import os
import sys
import tempfile

import django

# multiprocessing makes each child import the parent's main script unless this process's __main__ already
# claims to be it: the children need nothing from that script (they run functions of portal and the
# standard library), and re-running it per child would cost time and, unguarded, start its work again.
if os.environ.get("SEM_DECODE_PARENT_MAIN"):
    sys.modules["__main__"].__file__ = os.environ["SEM_DECODE_PARENT_MAIN"]

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django.setup()

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from portal.services.ingestion.ingest_examine import examine  # noqa: E402
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
