"""Similar-image search at scale (issue 24, item 4): exact cosine over N stored embeddings.

    python bench/bench_similar.py [--rows 100000] [--dimension 2048] [--queries 200] [--projects 10]
                                  [--database] [--database-url URL]

1. In memory: N random float16 embeddings of the real dimension (the default model's 2,048) as the
   database stores them (bytes), the per-process matrix built from them (portal.services.curation.similar.
   build_index: decode, float32, unit rows), then query latency p50/p95 of SearchIndex.search for an
   administrator (all rows) and for a member of one project of --projects.
2. --database: the same rows written to a throw-away database (SQLite unless --database-url names a
   disposable PostgreSQL database), the matrix loaded from it (current_index), and end-to-end latency
   of similar_images (production model, the query's embedding, visible projects, search, the rows
   re-read through the viewer's visible images) for the same two viewers.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


def percentiles(samples: list[float]) -> str:
    ms = np.array(samples) * 1000
    return f"p50 {np.percentile(ms, 50):.1f} ms, p95 {np.percentile(ms, 95):.1f} ms, max {ms.max():.1f} ms"


def random_rows(rows: int, dimension: int, projects: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((rows, dimension), dtype=np.float32).astype("<f2")
    return [(index + 1, index % projects + 1, vectors[index].tobytes()) for index in range(rows)]


def time_queries(search, queries: int) -> list[float]:
    timings = []
    for index in range(queries):
        started = time.perf_counter()
        search(index)
        timings.append(time.perf_counter() - started)
    return timings


def in_memory(args) -> None:
    from portal.services.curation.similar import DEFAULT_K, SPARE_ROWS, build_index, decode

    rows = random_rows(args.rows, args.dimension, args.projects)
    index = build_index(1, "bench", rows)
    print(
        f"matrix of {args.rows:,} x {args.dimension} built in {index.loaded_in_s:.2f} s "
        f"({index.matrix.nbytes / 2**20:.0f} MiB float32)"
    )
    take = DEFAULT_K + SPARE_ROWS
    for viewer, projects in (("admin (all rows)", None), (f"member of 1 of {args.projects} projects", {1})):
        timings = time_queries(
            lambda i, projects=projects: index.search(
                decode(rows[i * 37 % args.rows][2]), take, exclude=i, projects=projects
            ),
            args.queries,
        )
        print(f"search, {viewer}: {percentiles(timings)}")


def configure(var_dir: Path, database_url: str | None) -> None:
    os.environ["SEM_VAR_DIR"] = str(var_dir)
    os.environ["CELERY_BROKER_URL"] = "filesystem://"
    os.environ.setdefault("SECRET_KEY", "bench")
    os.environ["DATABASE_URL"] = database_url or f"sqlite:///{var_dir / 'bench.sqlite3'}"
    os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings"
    import django

    django.setup()


def in_database(args) -> None:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from portal.models import Category, Embedding, Membership, ModelVersion, Project, Sample, SEMImage
    from portal.services.curation import similar

    call_command("migrate", verbosity=0)
    users = get_user_model().objects
    admin, member = users.create_user("admin", is_staff=True), users.create_user("member")
    projects = [Project.objects.create(name=f"P{index}") for index in range(args.projects)]
    Membership.objects.create(project=projects[0], user=member)
    samples = [Sample.objects.create(project=p, lab_sample_id=p.name, name=p.name, owner=admin) for p in projects]
    model = ModelVersion.objects.create(version=1, status="production", arch="efficientnet_lite0", classes=["a"])
    category = Category.objects.order_by("pk").first()
    started = time.perf_counter()
    rows = random_rows(args.rows, args.dimension, args.projects)
    for start in range(0, args.rows, 2000):
        chunk = rows[start : start + 2000]
        images = SEMImage.objects.bulk_create(
            [_image(samples[project - 1], admin, category, pk) for pk, project, _ in chunk], batch_size=500
        )
        Embedding.objects.bulk_create(
            [
                Embedding(image=image, model_version=model, dimension=args.dimension, vector=vector)
                for image, (_, _, vector) in zip(images, chunk)
            ],
            batch_size=500,
        )
    print(f"{args.rows:,} images and embeddings written in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    similar.current_index(model)
    print(f"matrix loaded from the database in {time.perf_counter() - started:.2f} s")
    queries = list(SEMImage.objects.filter(sample=samples[0]).order_by("pk")[: args.queries])
    for viewer in (admin, member):
        timings = time_queries(
            lambda i, viewer=viewer: similar.similar_images(viewer, queries[i % len(queries)]), args.queries
        )
        print(f"similar_images end to end, {viewer.username}: {percentiles(timings)}")


def _image(sample, user, category, pk):
    from portal.models import SEMImage

    return SEMImage(
        pk=pk,
        sample=sample,
        original_filename=f"{pk}.png",
        sha256=f"{pk:064x}",
        extension=".png",
        format="PNG",
        file_size=1,
        width=1,
        height=1,
        bit_depth=8,
        mode="L",
        uploaded_by=user,
        split="train",
        status="classified",
        curated_category=category,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dimension", type=int, default=2048)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--projects", type=int, default=10)
    parser.add_argument("--database", action="store_true")
    parser.add_argument("--database-url")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-similar-") as folder:
        configure(Path(folder), args.database_url)
        print(f"numpy {np.__version__}, {os.cpu_count()} CPUs")
        in_memory(args)
        if args.database:
            in_database(args)


if __name__ == "__main__":
    main()
