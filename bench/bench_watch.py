"""Watch-folder scan time for a share with 10,000 image files (issue 16).

    python bench/bench_watch.py [--files 10000] [--folders 100] [--ingest 20] [--quick]

Writes the files (small distinct PNGs, one sub-folder per sample) into a temporary folder and times, with the
real `portal.services.ingestion.watch.scan_folder` against the configured database (DATABASE_URL, else the embedded
SQLite), inside a transaction that is rolled back at the end:

* the bare walk (os.scandir + stat of every file);
* the first scan (every file new: one row each, bulk-inserted);
* a scan while everything is still settling (nothing due);
* the steady state: every file already stored, nothing changed (what each poll costs);
* the same with 1 % of the files rewritten (they start settling again);
* ingestion of `--ingest` settled files of 1024x768 (per file, through ingest_file).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")


class _Rollback(Exception):
    pass


def small_png(seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def big_tiff(seed: int) -> bytes:
    import numpy as np
    import tifffile

    from classifier.synthetic import make_image

    grey = np.asarray(make_image("Particles", seed, size=(1024, 768)), dtype=np.uint8)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, grey)
    return buffer.getvalue()


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--folders", type=int, default=100)
    parser.add_argument("--ingest", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="1,000 files, 5 ingested")
    options = parser.parse_args()
    if options.quick:
        options.files, options.ingest = 1000, 5

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection, transaction

    call_command("migrate", interactive=False, verbosity=0)
    from portal.models import Project, WatchedFile, WatchFolder
    from portal.services.ingestion import watch, watch_share

    with tempfile.TemporaryDirectory() as workdir:
        share = Path(workdir) / "share"
        settings.MEDIA_ROOT = str(Path(workdir) / "media")
        _, write_s = timed(
            lambda: [
                (share / f"LAB-{index % options.folders:04d}").mkdir(parents=True, exist_ok=True)
                or (share / f"LAB-{index % options.folders:04d}" / f"image{index:05d}.png").write_bytes(
                    small_png(index)
                )
                for index in range(options.files)
            ]
        )
        clock = [1_000_000.0]
        rows = []
        try:
            with transaction.atomic():
                user = get_user_model().objects.create_user("bench-watch-user")
                project = Project.objects.create(name="bench-watch-project")
                folder = WatchFolder.objects.create(
                    path=str(share), project=project, uploader=user, settle_s=10, create_missing_samples=True
                )
                found, walk_s = timed(lambda: watch_share.walk(str(share)))
                assert len(found) == options.files
                report, first_s = timed(lambda: watch.scan_folder(folder, clock=lambda: clock[0]))
                assert report.new == options.files
                clock[0] += 1
                report, settling_s = timed(lambda: watch.scan_folder(folder, clock=lambda: clock[0]))
                assert report.settling == options.files and not report.stored
                WatchedFile.objects.filter(folder=folder).update(status=WatchedFile.Status.STORED)
                clock[0] += 60
                steady = []
                for _ in range(3):
                    report, seconds = timed(lambda: watch.scan_folder(folder, clock=lambda: clock[0]))
                    assert report.settling == 0 and not report.stored
                    steady.append(seconds)
                for index in range(0, options.files, 100):  # 1 % rewritten by the instrument
                    path = share / f"LAB-{index % options.folders:04d}" / f"image{index:05d}.png"
                    path.write_bytes(small_png(index + 10**6))
                report, changed_s = timed(lambda: watch.scan_folder(folder, clock=lambda: clock[0]))
                assert report.changed == len(range(0, options.files, 100))

                # Ingestion of settled files (1024x768 TIFFs), per file.
                ingest_share = Path(workdir) / "ingest"
                for index in range(options.ingest + 1):
                    target = ingest_share / "LAB-INGEST" / f"frame{index:03d}.tif"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(big_tiff(index))
                ingest_folder = WatchFolder.objects.create(
                    path=str(ingest_share), project=project, uploader=user, settle_s=10, create_missing_samples=True
                )
                watch.scan_folder(ingest_folder, clock=lambda: clock[0])
                clock[0] += 11
                report, ingest_s = timed(lambda: watch.scan_folder(ingest_folder, clock=lambda: clock[0]))
                assert len(report.stored) == options.ingest + 1, report.summary()
                rows = [
                    ("write the files (not the scanner)", write_s),
                    ("bare walk: os.scandir + stat", walk_s),
                    ("first scan: every file new (rows inserted)", first_s),
                    ("scan while all settle (nothing due)", settling_s),
                    ("steady state: all stored, nothing changed (best of 3)", min(steady)),
                    (f"1 % rewritten ({report_changed(options.files)} files settle again)", changed_s),
                ]
                per_file = ingest_s / (options.ingest + 1)
                raise _Rollback
        except _Rollback:
            pass
    print(
        f"watch folder scan, {options.files} files in {options.folders} sample folders, database "
        f"{connection.vendor}, {os.cpu_count()} CPUs:"
    )
    for name, seconds in rows:
        print(f"  {name:60s} {seconds:7.2f} s")
    print(
        f"  ingestion of {options.ingest + 1} settled 1024x768 TIFFs through the scanner: "
        f"{per_file * 1000:.0f} ms per file"
    )


def report_changed(files: int) -> int:
    return len(range(0, files, 100))


if __name__ == "__main__":
    main()
