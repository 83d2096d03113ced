"""Overhead of storing embeddings in the classification pipeline (issue 24, item 1).

    python bench/bench_embeddings.py [--images 64] [--repeats 2] [--views 8] [--size 224] [--database-url URL]

In a throw-away SEM_VAR_DIR (SQLite unless --database-url names a disposable PostgreSQL database):
ingests synthetic SEM images, installs a real frozen-feature model (the installed ImageNet
EfficientNet-Lite0 body, texture statistics, a seeded linear head) as production, and times the worker
path in-process (classification.classify_images: claim, decode, forward pass, write rows) over all
images, alternating passes that store the embeddings (the product) and passes whose embedding rows are
left out (the bench replaces classification._embedding for that pass only). Between passes the
predictions and embeddings are deleted and the images set pending again. Prints both medians, the
overhead in percent, and the write alone (save_results of one batch with and without embeddings).
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

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


def configure(var_dir: Path, database_url: str | None) -> None:
    os.environ["SEM_VAR_DIR"] = str(var_dir)
    os.environ["CELERY_BROKER_URL"] = "filesystem://"
    os.environ.setdefault("SECRET_KEY", "bench")
    os.environ["DATABASE_URL"] = database_url or f"sqlite:///{var_dir / 'bench.sqlite3'}"
    os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings"
    import django

    django.setup()


def ingest(count: int) -> list[int]:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from classifier.synthetic import make_image
    from portal.models import Project, Sample
    from portal.services.ingestion.ingest import ingest_file

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench", "bench@example.org", "bench-pw-123")
    sample = Sample.objects.create(
        project=Project.objects.create(name="Bench"), lab_sample_id="B-1", name="b", owner=user
    )
    folders = ["Fibres", "Particles", "Powder", "Nanowires"]
    ids = []
    for index in range(count):
        buffer = io.BytesIO()
        make_image(folders[index % len(folders)], index, size=(512, 384)).save(buffer, format="PNG")
        buffer.seek(0)
        ids.append(ingest_file(buffer, filename=f"bench-{index}.png", sample=sample, uploaded_by=user).image.pk)
    return ids


def install_feature_model(size: int, views: int):
    import torch
    from django.conf import settings

    from classifier.artifact import save_artifact
    from classifier.backbones import get_backbone, load_pretrained_body
    from classifier.feature_head import build_classifier
    from portal.models import Category, ModelVersion

    classes = [category.name for category in Category.objects.order_by("order")]
    backbone = get_backbone("efficientnet_lite0")
    torch.manual_seed(0)
    model = build_classifier(backbone, len(classes), load_pretrained_body(backbone)[0], tta_views=views)
    path = Path(settings.MODEL_DIR) / "v1" / "model.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"arch": backbone.name, "classes": classes, "input_size": size, "tta_views": views}
    sha256 = save_artifact(path, model.state_dict(), metadata)
    return ModelVersion.objects.create(
        version=1,
        status="production",
        artifact_path=str(path),
        artifact_sha256=sha256,
        arch=backbone.name,
        classes=classes,
    )


def reset(ids: list[int]) -> None:
    from portal.models import Embedding, Prediction, SEMImage

    Prediction.objects.all().delete()
    Embedding.objects.all().delete()
    SEMImage.objects.filter(pk__in=ids).update(status="pending", predicted_by=None, claimed_at=None)


def one_pass(ids: list[int], store: bool) -> float:
    from django.conf import settings

    from portal.models import Embedding
    from portal.services.learning import classification

    original = classification._embedding
    if not store:
        classification._embedding = lambda *args: []
    try:
        reset(ids)
        started = time.perf_counter()
        size = settings.SEM_CLASSIFY_BATCH_SIZE
        for start in range(0, len(ids), size):
            classification.classify_images(ids[start : start + size])
        elapsed = time.perf_counter() - started
    finally:
        classification._embedding = original
    assert Embedding.objects.count() == (len(ids) if store else 0)
    return elapsed


def write_only(model, ids: list[int], repeats: int) -> tuple[float, float]:
    """Median seconds of save_results for one batch with and without the embedding rows."""
    from django.conf import settings

    from portal.services.learning import classification

    batch = ids[: settings.SEM_CLASSIFY_BATCH_SIZE]
    engine = classification.load_engine(model)
    images = list(classification.SEMImage.objects.filter(pk__in=batch))
    results = classification.predict(engine, images)
    timings = {True: [], False: []}
    for _ in range(repeats):
        for store in (True, False):
            reset(ids)
            kept = {key: value for key, value in results.items()}
            if not store:
                kept = {key: _without_embedding(value) for key, value in results.items()}
            started = time.perf_counter()
            classification.save_results(model, engine.classes, kept)
            timings[store].append(time.perf_counter() - started)
    return statistics.median(timings[True]), statistics.median(timings[False])


def _without_embedding(prediction):
    from dataclasses import replace

    return replace(prediction, embedding=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--views", type=int, default=8, help="dihedral views per image (the default model: 8)")
    parser.add_argument("--size", type=int, default=224, help="input size (the default model: 224)")
    parser.add_argument("--database-url")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-embeddings-") as folder:
        configure(Path(folder), args.database_url)
        import torch
        from django.conf import settings

        ids = ingest(args.images)
        model = install_feature_model(args.size, args.views)
        one_pass(ids[: settings.SEM_CLASSIFY_BATCH_SIZE], True)  # warm-up: model load, first-call costs
        timings = {True: [], False: []}
        for _ in range(args.repeats):
            for store in (False, True):
                timings[store].append(one_pass(ids, store))
        with_s, without_s = statistics.median(timings[True]), statistics.median(timings[False])
        write_with, write_without = write_only(model, ids, max(3, args.repeats))
        print(
            f"{len(ids)} images, batches of {settings.SEM_CLASSIFY_BATCH_SIZE}, input {args.size} px, "
            f"{args.views} views, {torch.get_num_threads()} torch threads, {settings.DATABASES['default']['ENGINE']}"
        )
        print(f"worker path without embeddings: {without_s:.3f} s ({len(ids) / without_s:.1f} images/s)")
        print(f"worker path with embeddings:    {with_s:.3f} s ({len(ids) / with_s:.1f} images/s)")
        print(f"overhead of storing embeddings: {100 * (with_s - without_s) / without_s:+.1f} % (whole path)")
        print(
            f"save_results of one batch: {1000 * write_without:.1f} ms without, {1000 * write_with:.1f} ms with "
            f"(+{1000 * (write_with - write_without):.1f} ms per batch)"
        )
        # The whole-path difference is within the noise of a shared machine; the write is the part that
        # changed (the engine computes the embeddings in the same forward pass either way).
        per_batch = without_s / -(-len(ids) // settings.SEM_CLASSIFY_BATCH_SIZE)
        print(f"write delta / path time per batch: {100 * (write_with - write_without) / per_batch:+.2f} %")


if __name__ == "__main__":
    main()
