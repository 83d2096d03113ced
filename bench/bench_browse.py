"""Web UI pages with many images: browse (several filters and sorts), dashboard and review queue.

    DATABASE_URL=postgres://... python bench/bench_browse.py [--images 100000] [--repeat 5]

Bulk-creates the image rows (no files: the pages never open them) inside a transaction that is
rolled back at the end, runs ANALYZE so PostgreSQL plans with real statistics, then renders each
page through Django's test client as an admin (all projects) and as a member (one project of two).
Ten model versions with real evaluation JSON (one production). Prints the median and p95 time and the
number of SQL queries per page.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")


MODEL_VERSIONS = 10


class _Rollback(Exception):
    pass


def populate(count: int):
    from django.contrib.auth import get_user_model
    from django.db import connection

    from portal.models import Category, Membership, ModelVersion, Project, Sample, SEMImage

    user_model = get_user_model()
    admin = user_model.objects.create_user("bench-admin", is_staff=True)
    member = user_model.objects.create_user("bench-member")
    projects = [Project.objects.create(name=f"Bench project {i}") for i in range(2)]
    Membership.objects.create(project=projects[0], user=member, role=Membership.Role.CURATOR)
    samples = [
        Sample.objects.create(project=projects[i % 2], lab_sample_id=f"BENCH-{i:04d}", name=f"Sample {i}", owner=admin)
        for i in range(50)
    ]
    categories = list(Category.objects.all())
    rng = random.Random(1)
    model = None
    for index in range(MODEL_VERSIONS):  # the last one is production; the dashboard charts them all
        model = ModelVersion.objects.create(
            version=990001 + index,
            status="production" if index == MODEL_VERSIONS - 1 else "retired",
            artifact_path="/x",
            artifact_sha256="0" * 64,
            arch="resnet34",
            classes=[c.name for c in categories],
            metrics=fake_evaluation(categories, rng),
            train_image_count=count,
            test_image_count=count // 7,
        )
    batch = []
    for index in range(count):
        sha = hashlib.sha256(f"bench-{index}".encode()).hexdigest()
        classified = rng.random() < 0.9
        confidence = rng.uniform(0.2, 1.0) if classified else None
        batch.append(
            SEMImage(
                sample=samples[index % len(samples)],
                sha256=sha,
                original=f"originals/{sha}.png",
                original_filename=f"img-{index}.png",
                extension=".png",
                format="PNG",
                file_size=1000,
                width=1024,
                height=768,
                bit_depth=8,
                mode="L",
                uploaded_by=admin,
                thumbnail=f"thumbnails/{sha}.jpg",
                derivative=f"derivatives/{sha}.png",
                split="test" if index % 7 == 0 else "train",
                status="classified" if classified else "pending",
                vendor=rng.choice(["Zeiss", "Thermo Fisher (FEI)", ""]),
                magnification=rng.choice([None, 1000.0, 5000.0, 20000.0]),
                predicted_category=rng.choice(categories) if classified else None,
                predicted_confidence=confidence,
                predicted_margin=confidence * rng.random() if classified else None,
                predicted_by=model if classified else None,
                curated_category=rng.choice(categories) if rng.random() < 0.3 else None,
            )
        )
        if len(batch) == 5000:
            SEMImage.objects.bulk_create(batch)
            batch = []
    SEMImage.objects.bulk_create(batch)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return admin, member, categories


def fake_evaluation(categories, rng) -> dict:
    """A real `classifier.metrics.evaluate` output for random predictions over the 10 classes."""
    import numpy as np

    from classifier.metrics import evaluate

    names = [c.name for c in categories]
    truth = [rng.choice(names) for _ in range(500)]
    probabilities = np.random.default_rng(rng.randrange(1000)).dirichlet(np.ones(len(names)), size=len(truth))
    return evaluate(truth, probabilities, names)


def measure(client, url: str, repeat: int) -> tuple[float, float, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    times = []
    for _ in range(repeat):
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            response = client.get(url)
            times.append(time.perf_counter() - started)
        assert response.status_code == 200, (url, response.status_code)
    times.sort()
    p95 = times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)]
    return statistics.median(times) * 1000, p95 * 1000, len(queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    import django

    django.setup()
    from django.db import connection, transaction
    from django.test import Client
    from django.test.utils import setup_test_environment

    setup_test_environment()
    print(f"database: {connection.vendor}, images: {args.images}")
    try:
        with transaction.atomic():
            started = time.perf_counter()
            admin, member, categories = populate(args.images)
            print(f"populated in {time.perf_counter() - started:.1f} s\n")
            fibres = next(c for c in categories if c.name == "Fibres")
            pages = [
                ("browse, newest first", "/browse/"),
                ("browse, page 200", "/browse/?page=200"),
                ("browse, predicted + confidence >= 90 %", f"/browse/?predicted={fibres.pk}&conf_min=90"),
                ("browse, not labelled, most uncertain", "/browse/?curated=none&sort=uncertain"),
                ("browse, instrument contains 'zeiss'", "/browse/?instrument=zeiss&sort=magnification"),
                ("browse, sample BENCH-0002", "/browse/?sample=BENCH-0002"),
                ("dashboard", "/dashboard/"),
                ("review queue", "/review/"),
            ]
            print(f"{args.repeat} requests per page and user; median and p95 in ms")
            print(
                f"{'page':45s} {'admin p50':>9s} {'p95':>7s} {'queries':>8s} {'member p50':>10s} {'p95':>7s} "
                f"{'queries':>8s}"
            )
            for name, url in pages:
                row = []
                for user in (admin, member):
                    client = Client()
                    client.force_login(user)
                    row += measure(client, url, args.repeat)
                print(f"{name:45s} {row[0]:9.1f} {row[1]:7.1f} {row[2]:8d} {row[3]:10.1f} {row[4]:7.1f} {row[5]:8d}")
            raise _Rollback
    except _Rollback:
        pass


if __name__ == "__main__":
    main()
