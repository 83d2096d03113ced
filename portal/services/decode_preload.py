"""Imported once, in the forkserver that forks the capped decoding children (portal.services.decode_guard),
never in a web or worker process: Django is set up and the decoders imported there, so no child pays for it.
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django.setup()

import portal.services.ingest  # noqa: E402, F401  (Pillow, numpy, tifffile, the derivative code)
import portal.web.renditions  # noqa: E402, F401
