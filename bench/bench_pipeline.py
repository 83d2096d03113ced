"""Classification pipeline throughput, and the duration of one retraining on the demo data.

    python bench/bench_pipeline.py [--per-class 24] [--repeats 3] [--skip-celery] [--database-url URL]
                                   [--reuse BENCH_FOLDER] [--quick]

In a throw-away SEM_VAR_DIR (embedded SQLite and the filesystem broker unless --database-url names
a PostgreSQL database, which must be empty or disposable):

1. `make_demo_data --import` (the quick start's demo set), then one retraining with the default
   configuration from settings (SEM_TRAIN_*), timed: this is what the quick start's first run does.
2. Throughput of the classification pipeline on the demo images with that model, measured three ways
   with the same model and the same torch thread count:
   - bare forward: the network alone on ready, normalised, channels-last tensors (the limit);
   - worker path in-process: classification.classify_images (claim, decode the derivatives, engine,
     write Prediction rows and the denormalised columns) in batches of SEM_CLASSIFY_BATCH_SIZE;
   - through Celery: a real `celery worker` process on the broker, from enqueue to the last image
     classified (adds the broker, task overhead and polling).
   and prints the ratios to the bare forward.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


def configure_environment(var_dir: Path, database_url: str | None) -> None:
    os.environ["SEM_VAR_DIR"] = str(var_dir)
    os.environ["CELERY_BROKER_URL"] = "filesystem://"
    os.environ.setdefault("SECRET_KEY", "bench")
    os.environ["DATABASE_URL"] = database_url or f"sqlite:///{var_dir / 'bench.sqlite3'}"
    os.environ.pop("MEDIA_ROOT", None)
    os.environ.pop("MODEL_DIR", None)
    os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings"


def prepare_data(per_class: int) -> int:
    from django.core.management import call_command

    from portal.models import SEMImage

    call_command("migrate", verbosity=0)
    call_command("make_demo_data", "--import", "--per-class", str(per_class), "--no-progress")
    return SEMImage.objects.count()


def retrain_once():
    from portal.models import TrainingRun
    from portal.services.learning import training, training_run

    run = training.request_training(trigger=TrainingRun.Trigger.COMMAND, force=True, enqueue=False).run
    started = time.perf_counter()
    training_run.run_training(run.pk)
    wall = time.perf_counter() - started
    run.refresh_from_db()
    if run.status != TrainingRun.Status.SUCCEEDED:
        raise SystemExit(f"training failed: {run.error}\n{run.log[-3000:]}")
    return run, wall


def reset_predictions() -> list[int]:
    from portal.models import Prediction, SEMImage

    Prediction.objects.all().delete()
    SEMImage.objects.update(
        status=SEMImage.Status.PENDING,
        claimed_at=None,
        predicted_by=None,
        predicted_category=None,
        predicted_confidence=None,
        predicted_margin=None,
    )
    return list(SEMImage.objects.order_by("pk").values_list("pk", flat=True))


def bare_forward_pass(engine, images: int, batch_size: int) -> float:
    """images/s of the network alone on ready tensors (the limit)."""
    import numpy as np
    import torch

    from classifier import transforms

    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, (batch_size, engine.input_size, engine.input_size), dtype=np.uint8)
    batch = transforms.normalise_batch(torch.from_numpy(arrays).to(engine.device), engine.mean, engine.std)
    batch = batch.contiguous(memory_format=torch.channels_last)
    batches = max(1, images // batch_size)
    with torch.inference_mode():
        engine.model(batch)  # warm-up
        started = time.perf_counter()
        for _ in range(batches):
            engine.model(batch)
    return batches * batch_size / (time.perf_counter() - started)


def in_process_pass(batch_size: int) -> float:
    """images/s of the worker's code path, called directly (no broker)."""
    from portal.services.learning import classification

    ids = reset_predictions()
    started = time.perf_counter()
    for start in range(0, len(ids), batch_size):
        classification.classify_images(ids[start : start + batch_size])
    return len(ids) / (time.perf_counter() - started)


class CeleryWorker:
    """A real worker process on the bench's broker; `timed_pass` measures enqueue -> all classified."""

    def __init__(self, var_dir: Path, threads: int) -> None:
        for message in (var_dir / "broker" / "out").glob("*.msg"):
            message.unlink()  # the demo import's own classification messages
        self.log = open(var_dir / "worker.log", "wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers",
                "worker",
                "-Q",
                "gpu,default,maintenance",
                "--pool=prefork",
                "-c",
                "1",
                "--loglevel=WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=REPO_ROOT,
            env={**os.environ, "OMP_NUM_THREADS": str(threads)},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def timed_pass(self) -> float:
        from portal.models import SEMImage
        from portal.services.delivery.queueing import enqueue_classification

        ids = reset_predictions()
        enqueue_classification(ids[:1])  # warm-up: the pool process loads the model
        self._wait_classified(ids[:1])
        warm_up = SEMImage.objects.filter(status=SEMImage.Status.CLASSIFIED).count()  # a topped-up batch
        started = time.perf_counter()
        enqueue_classification(ids[warm_up:])
        self._wait_classified(ids)
        return (len(ids) - warm_up) / (time.perf_counter() - started)

    def _wait_classified(self, ids: list[int], timeout: float = 900) -> None:
        from portal.models import SEMImage

        deadline = time.monotonic() + timeout
        while SEMImage.objects.filter(pk__in=ids, status=SEMImage.Status.CLASSIFIED).count() < len(ids):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the worker died or stalled; see worker.log in the bench folder")
            time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


def measure_throughput(engine, images: int, batch_size: int, repeats: int, var_dir: Path | None, threads: int) -> dict:
    """Passes interleaved (bare, in-process, bare, celery, ...) so load from other processes hits all
    alike; the best pass of each counts. The celery worker's own warm-up is its first image."""
    rates: dict[str, list[float]] = {"bare": [], "in_process": [], "celery": []}
    in_process_pass(batch_size)  # untimed warm-up: oneDNN builds its kernels per batch shape on first use
    worker = CeleryWorker(var_dir, threads) if var_dir else None
    try:
        for _ in range(repeats):
            rates["bare"].append(bare_forward_pass(engine, images, batch_size))
            rates["in_process"].append(in_process_pass(batch_size))
            if worker:
                rates["bare"].append(bare_forward_pass(engine, images, batch_size))
                rates["celery"].append(worker.timed_pass())
    finally:
        if worker:
            worker.stop()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=24, help="demo images per category (default 24)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per measurement; the best counts")
    parser.add_argument("--skip-celery", action="store_true", help="skip the measurement through a worker")
    parser.add_argument("--database-url", help="PostgreSQL database to use instead of a temporary SQLite file")
    parser.add_argument("--reuse", type=Path, help="bench folder of an earlier run: skip the data and the training")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch threads for every measurement (default: all cores)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 8 images per category, one epoch per stage, 2 passes"
    )
    args = parser.parse_args()
    if args.quick:
        args.per_class, args.repeats = 8, 2
        os.environ.setdefault("SEM_TRAIN_EPOCHS", "1")  # one epoch in every stage

    var_dir = args.reuse or Path(tempfile.mkdtemp(prefix="sem-bench-pipeline-"))
    configure_environment(var_dir, args.database_url)
    import django

    django.setup()
    import torch
    from django.conf import settings
    from django.db import connection

    from portal.models import SEMImage
    from portal.services.learning import classification

    images = SEMImage.objects.count() if args.reuse else prepare_data(args.per_class)
    print(
        f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"database: {connection.vendor}; broker: {settings.CELERY_BROKER_URL}"
    )
    if not args.reuse:
        run, wall = retrain_once()
        print(
            f"retraining on the demo data ({images} images, {run.train_image_count} train / "
            f"{run.test_image_count} test): {wall:.1f} s wall ({run.duration_s:.1f} s recorded), "
            f"{run.model_version.arch} sizes {run.config['sizes']} epochs {run.config['epochs']} on {run.device}; "
            f"test macro-F1 {run.model_version.macro_f1:.3f}, accuracy {run.model_version.accuracy:.3f}"
        )

    engine = classification.load_engine(classification.production_model())
    batch_size = settings.SEM_CLASSIFY_BATCH_SIZE
    torch.set_num_threads(args.threads)  # training may have changed it; the worker gets OMP_NUM_THREADS
    rates = measure_throughput(
        engine, images, batch_size, args.repeats, None if args.skip_celery else var_dir, args.threads
    )
    bare = max(rates["bare"])
    print(
        f"\nclassification at {engine.input_size} px, batch {batch_size}, {torch.get_num_threads()} torch threads, "
        f"{images} images, best of {args.repeats} interleaved passes"
    )
    print(f"  bare forward on ready tensors   {bare:8.1f} images/s")
    for key, label in (("in_process", "worker path, in-process"), ("celery", "through a celery worker")):
        if rates[key]:
            print(f"  {label:<31} {max(rates[key]):8.1f} images/s   ratio {max(rates[key]) / bare:.2f}")
    print(f"\n(bench folder: {var_dir}; rerun the throughput part with --reuse {var_dir})")


if __name__ == "__main__":
    main()
