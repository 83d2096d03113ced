"""Ingestion time per image for a 1024x768 16-bit greyscale TIFF (the issue's reference case).

    python bench/bench_ingest.py [--count 20] [--with-fei-metadata]

Runs the real `ingest_file` against the configured database (DATABASE_URL, else the embedded
SQLite) inside a transaction that is rolled back at the end, with MEDIA_ROOT in a temporary folder,
so it leaves nothing behind. Each image has different pixels (no dedup short-cut).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")


class _Rollback(Exception):
    pass


def make_tiff(seed: int, with_fei: bool) -> bytes:
    import numpy as np
    import tifffile

    from classifier.synthetic import make_image

    grey = np.asarray(make_image("Particles", seed, size=(1024, 768)), dtype=np.uint16) * 257
    grey = grey + np.random.default_rng(seed).integers(0, 200, grey.shape, dtype=np.uint16)
    extratags = []
    if with_fei:
        fei = (
            "[System]\nSystemType=Helios NanoLab 650\n[Beam]\nHV=5000\n[EBeam]\nHV=5000\nWD=0.0045\n"
            "[Scan]\nPixelWidth=2.7e-09\nHorFieldsize=2.76e-06\n[Image]\nMagCanvasRealWidth=0.2072\n"
            "[Detectors]\nName=TLD\n"
        )
        extratags = [(34682, "s", 0, fei, True)]
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, grey, extratags=extratags)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--with-fei-metadata", action="store_true")
    options = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)  # a fresh clone's embedded database is empty
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from portal.models import Project, Sample
    from portal.services.ingestion.ingest import ingest_file

    files = [make_tiff(seed, options.with_fei_metadata) for seed in range(options.count + 1)]
    timings = []
    with tempfile.TemporaryDirectory() as media:
        settings.MEDIA_ROOT = media
        try:
            with transaction.atomic():
                user = get_user_model().objects.create_user("bench-ingest-user")
                project = Project.objects.create(name="bench-ingest-project")
                sample = Sample.objects.create(project=project, lab_sample_id="BENCH-INGEST", name="bench", owner=user)
                for index, data in enumerate(files):
                    start = time.perf_counter()
                    result = ingest_file(
                        io.BytesIO(data), filename=f"bench{index}.tif", sample=sample, uploaded_by=user
                    )
                    elapsed = time.perf_counter() - start
                    assert result.created
                    if index:  # the first call warms imports and caches
                        timings.append(elapsed)
                raise _Rollback
        except _Rollback:
            pass
    size_mb = len(files[0]) / 1e6
    print(
        f"ingest_file, 1024x768 16-bit TIFF ({size_mb:.1f} MB), {len(timings)} images, "
        f"database {connection.vendor}{', FEI metadata' if options.with_fei_metadata else ''}:"
    )
    print(
        f"  median {statistics.median(timings) * 1000:.1f} ms, mean {statistics.mean(timings) * 1000:.1f} ms, "
        f"min {min(timings) * 1000:.1f} ms, max {max(timings) * 1000:.1f} ms per image"
    )


if __name__ == "__main__":
    main()
