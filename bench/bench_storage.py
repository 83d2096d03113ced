"""Upload and classification throughput with media on S3 vs on the local disk, side by side in one run.

    python bench/bench_storage.py [--count 30] [--rounds 2] [--quick]

The S3 side is moto's standalone S3 server on loopback (MinIO cannot be installed here), reached over
HTTP through boto3 and django-storages as production reaches MinIO; a real store adds its network
round trips on top. Each round runs both backends in turn (local first, then S3 first in the next round)
on the same distinct 1024x768 16-bit TIFFs:

- upload: the real `ingest_file` (validation, metadata, derivative, thumbnail, three stored files, the
  row), inside a transaction rolled back after the round (DATABASE_URL, else the embedded SQLite);
- classification: what `portal.services.learning.classification_inference.predict` does, in its two steps, on those images:
  the derivatives to local paths (`local_derivatives`: on the local disk the files themselves, on S3 the
  worker cache), then inference with a small real model (resnet18 at 64 px, trained here on synthetic
  derivatives). The first pass ("cold") fetches every derivative into an empty cache folder (each copy
  hashed); the best of the next three ("warm") reuses them (each checked). The local disk gets the same
  passes. Inference does the same work for both backends, so its time is pooled over both.
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

KEYS = {"access_key": "bench", "secret_key": "bench-secret"}
WARM_PASSES = 3  # after the first pass; the best of them is reported (the machine is shared)


class _Rollback(Exception):
    pass


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_s3() -> str:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = _free_port()
    ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False).start()
    return f"http://127.0.0.1:{port}"


def s3_storages(settings, endpoint: str) -> dict:
    import boto3

    bucket = f"bench-{secrets.token_hex(4)}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="x").create_bucket(
        Bucket=bucket
    )
    options = {**settings.S3_OPTIONS, **KEYS, "endpoint_url": endpoint, "bucket_name": bucket}
    backend = "portal.s3_storage.S3MediaStorage"
    return {
        **settings.STORAGES,
        "default": {"BACKEND": backend, "OPTIONS": {**options, "location": "media"}},
        "models": {"BACKEND": backend, "OPTIONS": {**options, "location": "models"}},
    }


def make_tiffs(count: int) -> list[bytes]:
    from bench.bench_ingest import make_tiff

    return [make_tiff(seed, False) for seed in range(count)]


def tiny_engine(workdir: Path):
    """A real (small) model, trained on synthetic derivatives; its engine."""
    from classifier.config import TrainConfig
    from classifier.databar import crop_databar
    from classifier.engine import Engine
    from classifier.preprocess import make_derivative
    from classifier.synthetic import make_image
    from classifier.train import train

    items = []
    for folder in ("Fibres", "Particles"):
        for seed in range(8):
            path = workdir / f"{folder}-{seed}.png"
            make_derivative(crop_databar(make_image(folder, seed, size=(192, 144)))[0]).save(path)
            items.append((str(path), folder))
    config = {"arch": "resnet18", "sizes": (64,), "epochs": (1,), "batch_sizes": (8,), "pretrained": False}
    result = train(items, TrainConfig.from_dict(config), str(workdir / "model.safetensors"))
    return Engine.from_artifact(result.artifact_path, expected_sha256=result.sha256)


def one_round(label: str, files: list[bytes], engine, cache_root: Path) -> dict:
    """Upload every file, then classify them (cold and warm cache); rolled back afterwards."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from portal.models import Project, Sample
    from portal.services.delivery.file_cache import local_derivatives
    from portal.services.ingestion.ingest import ingest_file
    from portal.storage import media_storage

    timings: dict = {}
    try:
        with transaction.atomic():
            user = get_user_model().objects.create_user(f"bench-storage-{secrets.token_hex(4)}")
            project = Project.objects.create(name=f"bench-storage-{secrets.token_hex(4)}")
            sample = Sample.objects.create(project=project, lab_sample_id="BENCH-S3", name="bench", owner=user)
            start = time.perf_counter()
            images = [
                ingest_file(io.BytesIO(data), filename=f"b{i}.tif", sample=sample, uploaded_by=user).image
                for i, data in enumerate(files)
            ]
            timings["upload"] = time.perf_counter() - start
            settings.SEM_WORKER_CACHE_DIR = cache_root / secrets.token_hex(4)  # an empty cache
            rows = [(image.derivative.name, image.sha256) for image in images]
            fetches, inferences = [], []
            for _ in range(1 + WARM_PASSES):
                start = time.perf_counter()
                local = local_derivatives(media_storage(), rows)  # what predict() does before inference
                fetches.append(time.perf_counter() - start)
                start = time.perf_counter()
                engine.predict_paths([local[name] for name, _sha in rows])
                inferences.append(time.perf_counter() - start)
            timings["cold"], timings["warm"], timings["inference"] = fetches[0], min(fetches[1:]), inferences
            raise _Rollback
    except _Rollback:
        pass
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="8 images, 1 round")
    options = parser.parse_args()
    count, rounds = (8, 1) if options.quick else (options.count, options.rounds)

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.test import override_settings

    call_command("migrate", interactive=False, verbosity=0)
    endpoint = start_s3()
    files = make_tiffs(count)
    measured: dict[str, list[dict]] = {"local": [], "s3": []}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        engine = tiny_engine(root)
        backends = {
            "local": override_settings(MEDIA_ROOT=str(root / "media"), MODEL_DIR=str(root / "models")),
            "s3": override_settings(STORAGES=s3_storages(settings, endpoint)),
        }
        one_round("warm-up", files[:2], engine, root / "cache")
        for index in range(rounds):
            order = list(backends) if index % 2 == 0 else list(reversed(backends))  # neither always goes first
            for label in order:
                with backends[label]:
                    measured[label].append(one_round(label, files, engine, root / "cache"))
    report(measured, count, len(files[0]) / 1e6, connection.vendor)


def report(measured: dict, count: int, size_mb: float, vendor: str) -> None:
    def seconds(label: str, kind: str) -> float:
        return statistics.median(run[kind] for run in measured[label])

    # Inference is the same computation on the same bytes whichever backend stored them: its time is pooled
    # over both backends, so the machine's noise (it is shared) is not charged to one of them.
    inference = statistics.median(t for label in measured for run in measured[label] for t in run["inference"])
    print(f"{count} distinct 1024x768 16-bit TIFFs ({size_mb:.1f} MB), database {vendor}, median of rounds:")
    print(f"{'':36}{'local disk':>12}{'S3 (moto)':>12}{'S3 / local':>12}")
    rows = [
        ("upload (ingest_file)", "upload", 0.0),
        ("derivatives to local paths, cold", "cold", 0.0),
        ("derivatives to local paths, warm", "warm", 0.0),
        ("classification, cold cache", "cold", inference),
        ("classification, warm cache", "warm", inference),
    ]
    for title, kind, extra in rows:
        local, s3 = count / (seconds("local", kind) + extra), count / (seconds("s3", kind) + extra)
        print(f"{title:36}{local:>10.1f}/s {s3:>10.1f}/s {s3 / local:>11.2f}")
    print(f"(inference alone: {count / inference:.1f} images/s, resnet18 at 64 px on the CPU)")


if __name__ == "__main__":
    main()
