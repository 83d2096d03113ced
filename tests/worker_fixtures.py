"""Real Celery worker processes and a real trained model for tests (loaded by tests/conftest.py).

Fixtures
--------
``celery_worker``      a started WorkerProcess: `celery -A workers worker -Q gpu,default,maintenance --pool=prefork -c 1`
                       on the test run's broker (CELERY_BROKER_URL, purged first) and the pytest-django test
                       database (the worker's DATABASE_URL names it), with MEDIA_ROOT/MODEL_DIR of this test.
                       Implies ``transactional_db``: rows must be committed for the worker to see them.
``worker_factory``     ``worker_factory(start=True, queues="gpu,default,maintenance", beat=False, broker=None, **settings)``
                       for a worker with changed settings, e.g. ``worker_factory(SEM_CLASSIFY_BATCH_SIZE=50)``;
                       the values are applied to this test's Django settings too, so both processes agree.
                       ``beat=True`` starts `celery beat` (DatabaseScheduler) instead; ``broker="filesystem://"``
                       with ``SEM_VAR_DIR=...`` runs the embedded quick-start broker. Several may run at once.
``trained_artifact``   (session) a small real model trained once with classifier.train on synthetic
                       derivatives: TrainedArtifact(path, sha256, classes, metrics).
``production_model``   a ModelVersion in production whose artifact is a copy of ``trained_artifact`` in this
                       test's MODEL_DIR.
``nffa_categories``    the ten categories (transactional tests truncate the tables the data migration filled).
``upload_images``      ``upload_images(sample, user, count, labelled=False, seed=0)``: synthetic SEM images
                       through the real ingest_file; returns the SEMImages.

WorkerProcess
-------------
``wait_until(predicate, timeout=60, what="...")`` polls (the worker must stay alive), ``kill9()`` kills the
worker and its pool children with SIGKILL, ``start()`` starts it again on the same broker and database,
``stop()`` shuts it down, ``log()`` returns its output (shown when a wait times out).

Requirements: PostgreSQL (DATABASE_URL) and Redis (CELERY_BROKER_URL=redis://...); tests skip otherwise.
Use your own Redis DB number: the fixture empties it.

Example::

    @pytest.mark.worker
    def test_upload_is_classified(celery_worker, production_model, sample, user, upload_images):
        [image] = upload_images(sample, user, 1)
        celery_worker.wait_until(lambda: SEMImage.objects.get(pk=image.pk).status == "classified")
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 90
STOP_TIMEOUT_S = 20
# Four visually distinct synthetic categories keep the session model quick to train.
MODEL_FOLDERS = ("Fibres", "Particles", "Patterned_surface", "Porous_Sponge")
SYNTHETIC_SIZE = (192, 144)


# --- Categories --------------------------------------------------------------------------------


def ensure_nffa_categories() -> None:
    from portal.models import Category

    migration = import_module("portal.migrations.0002_nffa_categories")
    for order, (name, slug, folder, description) in enumerate(migration.NFFA_CATEGORIES):
        Category.objects.update_or_create(
            slug=slug, defaults={"name": name, "folder_name": folder, "description": description, "order": order}
        )


@pytest.fixture
def nffa_categories(db):
    ensure_nffa_categories()
    from portal.models import Category

    return {category.folder_name: category for category in Category.objects.all()}


def category_name(folder: str) -> str:
    migration = import_module("portal.migrations.0002_nffa_categories")
    return next(name for name, _, folder_name, _ in migration.NFFA_CATEGORIES if folder_name == folder)


# --- Uploads -------------------------------------------------------------------------------------


def synthetic_png(folder: str, seed: int, size=SYNTHETIC_SIZE) -> bytes:
    from classifier.synthetic import make_image

    buffer = io.BytesIO()
    make_image(folder, seed, size=size).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def upload_images(nffa_categories):
    """Upload synthetic images through the real ingestion service (which queues them on commit)."""
    from portal.services.ingestion.ingest import ingest_file

    def upload(sample, user, count: int, *, labelled: bool = False, seed: int = 0, folders=MODEL_FOLDERS) -> list:
        images = []
        for index in range(count):
            folder = folders[index % len(folders)]
            label = nffa_categories[folder] if labelled else None
            result = ingest_file(
                io.BytesIO(synthetic_png(folder, seed + index)),
                filename=f"{folder}-{seed + index}.png",
                sample=sample,
                uploaded_by=user,
                label=label,
            )
            assert result.created, "synthetic seeds must give distinct images"
            images.append(result.image)
        return images

    return upload


# --- A real trained model ------------------------------------------------------------------------------


@dataclass
class TrainedArtifact:
    path: Path
    sha256: str
    classes: list[str]
    metrics: dict
    metadata: dict


TINY_TRAIN_CONFIG = {
    "arch": "resnet18",
    "sizes": (32, 48),
    "epochs": (1, 1),
    "batch_sizes": (16, 16),
    "lrs": (3e-3, 1e-3),
    "pretrained": False,
}


def synthetic_derivatives(root: Path, folders=MODEL_FOLDERS, seeds=range(1000, 1010)) -> list[tuple[str, str]]:
    """(derivative path, category name) of synthetic micrographs, made as ingestion makes derivatives."""
    from classifier.databar import crop_databar
    from classifier.preprocess import make_derivative
    from classifier.synthetic import make_image

    items = []
    for folder in folders:
        for seed in seeds:
            path = Path(root) / f"{folder}-{seed}.png"
            make_derivative(crop_databar(make_image(folder, seed, size=SYNTHETIC_SIZE))[0]).save(path)
            items.append((str(path), category_name(folder)))
    return items


def train_artifact(items, config, path: Path, **train_args) -> TrainedArtifact:
    """classifier.train on ``items`` into ``path``, as a TrainedArtifact."""
    from classifier.train import train

    result = train(items, config, str(path), **train_args)
    return TrainedArtifact(
        Path(result.artifact_path), result.sha256, list(result.metadata["classes"]), result.evaluation, result.metadata
    )


@pytest.fixture(scope="session")
def trained_artifact(tmp_path_factory) -> TrainedArtifact:
    """Trained once per session on synthetic derivatives (about 10 s on 2 CPU cores)."""
    from classifier.config import TrainConfig

    root = tmp_path_factory.mktemp("trained-model")
    items = synthetic_derivatives(root)
    return train_artifact(
        items,
        TrainConfig.from_dict(TINY_TRAIN_CONFIG),
        root / "model.pth",
        test_items=items[::5],
        classes=[category_name(folder) for folder in MODEL_FOLDERS],
    )


def write_legacy_artifact(path, state_dict: dict, metadata: dict) -> str:
    """An artifact in format version 1 (before safetensors: MAGIC | header length | header JSON |
    torch.save payload), as older portals wrote it; returns the file's sha256."""
    import hashlib
    import json
    import struct

    import torch

    buffer = io.BytesIO()
    torch.save({key: value.detach().cpu() for key, value in state_dict.items()}, buffer)
    payload = buffer.getvalue()
    header = json.dumps(
        {
            "format_version": 1,
            "payload_length": len(payload),
            "payload_sha256": hashlib.sha256(payload).hexdigest(),
            "metadata": {**metadata, "format_version": 1},
        },
        sort_keys=True,
    ).encode()
    blob = b"SEMCLSF\x00" + struct.pack(">Q", len(header)) + header + payload
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(blob)
    return hashlib.sha256(blob).hexdigest()


def install_model(
    artifact: TrainedArtifact, version: int, *, status: str, metrics: dict | None = None, with_metadata: bool = False
):
    """A ModelVersion whose artifact is a copy of `artifact` under settings.MODEL_DIR/v{version}/; with
    `with_metadata`, its artifact metadata stored as a training run stores it (the recipe, the calibration)."""
    from django.conf import settings
    from django.utils import timezone

    from portal.models import ModelVersion

    target = Path(settings.MODEL_DIR) / f"v{version}" / "model.pth"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(artifact.path, target)
    return ModelVersion.objects.create(
        version=version,
        status=status,
        artifact_path=str(target),
        artifact_sha256=artifact.sha256,
        arch=artifact.metadata["arch"],
        classes=artifact.classes,
        metrics=metrics or artifact.metrics,
        promoted_at=timezone.now() if status == ModelVersion.Status.PRODUCTION else None,
        metadata={key: value for key, value in artifact.metadata.items() if key != "evaluation"}
        if with_metadata
        else {},
    )


@pytest.fixture
def production_model(db, trained_artifact, nffa_categories):
    from portal.models import ModelVersion

    return install_model(trained_artifact, 1, status=ModelVersion.Status.PRODUCTION)


# --- Worker processes ----------------------------------------------------------------------------


def _env_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)
    return str(value)


def database_url() -> str:
    """URL of the database this test process uses (the pytest-django test database)."""
    from django.db import connection

    params = connection.settings_dict
    if params["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("real worker tests need PostgreSQL (set DATABASE_URL)")
    auth = params["USER"] + (f":{params['PASSWORD']}" if params["PASSWORD"] else "")
    return f"postgres://{auth}@{params['HOST'] or '127.0.0.1'}:{params['PORT'] or 5432}/{params['NAME']}"


def purge_broker(url: str) -> None:
    """Empty this test run's Redis database: queued, unacknowledged and scheduled messages alike."""
    import redis

    redis.Redis.from_url(url).flushdb()


class WorkerProcess:
    """One `celery worker` subprocess in its own process group."""

    counter = 0

    def __init__(
        self, env: dict[str, str], log_dir: Path, queues: str = "gpu,default,maintenance", app: str = "workers"
    ) -> None:
        WorkerProcess.counter += 1
        self.app = app  # a test's own Celery app module (tests/hold_training_worker.py) may wrap the workers' one
        self.name = f"test{WorkerProcess.counter}-{os.getpid()}"
        self.env = env
        self.queues = queues
        self.log_path = log_dir / f"worker-{self.name}.log"
        self.process: subprocess.Popen | None = None

    ready_marker = " ready."

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            self.app,
            "worker",
            "-Q",
            self.queues,
            "--pool=prefork",
            "--concurrency=1",
            "--loglevel=INFO",
            "-n",
            f"{self.name}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]

    def start(self) -> WorkerProcess:
        log = open(self.log_path, "ab")
        start_offset = self.log_path.stat().st_size
        self.process = subprocess.Popen(
            self.command(), cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self._wait_ready(start_offset)
        return self

    def _wait_ready(self, offset: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.ready_marker in self.log()[offset:]:
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"celery worker exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"celery worker not ready after {READY_TIMEOUT_S} s:\n{self.log()[-4000:]}")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> None:
        """SIGKILL the worker and its pool children at once, as a crash or the OOM killer would."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if not self.alive:
            return
        self.process.send_signal(signal.SIGTERM)  # warm shutdown: finish the current task
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
        self.kill9()  # and any pool child left behind

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_until(
        self,
        predicate: Callable[[], object],
        timeout: float = 60,
        what: str = "condition",
        interval: float = 0.2,
        require_alive: bool = True,
    ):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if require_alive and not self.alive:
                raise AssertionError(f"worker died while waiting for {what}:\n{self.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}; worker log:\n{self.log()[-4000:]}"
                )
            time.sleep(interval)


class BeatProcess(WorkerProcess):
    """`celery beat` with the django-celery-beat DatabaseScheduler (settings.CELERY_BEAT_SCHEDULER)."""

    ready_marker = "beat: Starting"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers",
            "beat",
            "--loglevel=INFO",
            "--schedule",
            str(self.log_path.with_suffix(".schedule")),
        ]


@pytest.fixture
def worker_factory(transactional_db, settings, tmp_path):
    from django.conf import settings as django_settings

    broker_url = django_settings.CELERY_BROKER_URL
    if not broker_url.startswith("redis"):
        pytest.skip("real worker tests need Redis (set CELERY_BROKER_URL=redis://...)")
    database = database_url()
    purge_broker(broker_url)
    workers: list[WorkerProcess] = []

    def make(
        start: bool = True,
        queues: str = "gpu,default,maintenance",
        *,
        beat: bool = False,
        broker: str | None = None,
        app: str = "workers",
        **overrides,
    ) -> WorkerProcess:
        """A worker (or with beat=True a beat scheduler); `broker` replaces the test run's broker URL, `app`
        the Celery app module."""
        for name, value in overrides.items():
            setattr(settings, name, value)
        env = {
            **os.environ,
            "DATABASE_URL": database,
            "CELERY_BROKER_URL": broker or broker_url,
            "MEDIA_ROOT": str(django_settings.MEDIA_ROOT),
            "MODEL_DIR": str(django_settings.MODEL_DIR),
            "SECRET_KEY": os.environ.get("SECRET_KEY", "test"),
            "PYTHONUNBUFFERED": "1",
            **{name: _env_value(value) for name, value in overrides.items()},
        }
        worker = (BeatProcess if beat else WorkerProcess)(env, tmp_path, queues, app)
        workers.append(worker)
        return worker.start() if start else worker

    yield make
    for worker in workers:
        worker.stop()
    purge_broker(broker_url)


@pytest.fixture
def celery_worker(worker_factory) -> WorkerProcess:
    return worker_factory()


def request_training_twice_at_once() -> list:
    """Two forced API triggers released by one barrier in two threads (own DB connections): what
    request_training returned to each."""
    from django.db import connection

    from portal.models import TrainingRun
    from portal.services.learning.training import request_training

    barrier, results = threading.Barrier(2), []

    def trigger():
        try:
            barrier.wait()
            results.append(request_training(trigger=TrainingRun.Trigger.API, force=True, enqueue=False).run)
        finally:
            connection.close()

    threads = [threading.Thread(target=trigger) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results
