"""Load and fault tolerance of the whole upload path: gunicorn + PostgreSQL + Redis + one Celery worker + beat.

Starts everything on loopback against a dedicated database (sem_bench_load, dropped and re-created)
and Redis db 9, installs a small trained model as production, then runs N concurrent API clients
uploading distinct ~1 MB TIFFs (1024x1024, 8-bit, random pixels) for --seconds. Prints uploads/s,
latency percentiles and errors; waits until the worker has drained the queue; then checks that every
upload is stored exactly once (rows, sha256, files on disk), classified exactly once by the
production model, and that the production model did not change. Exit status 1 when a check fails.

Clients retry failed uploads (connection errors, 5xx, 429) with the same Idempotency-Key, as
docs/api.md tells LIMS clients to, so a retry never stores a second copy.

--fault injects one fault at --fault-at seconds into the load:
  redis        `redis-cli shutdown nosave`, --outage seconds (60) without Redis, then a fresh redis-server:
               broker and cache (CACHE_URL) are gone, queued messages are lost
  postgres     `pg_ctlcluster ... restart` (every open connection is dropped)
  worker       kill -9 the worker's process group, then start a new worker
  kill-commit  uploads are held between writing their files and their commit (the bench holds the
               advisory lock every ingestion takes just before it commits), then every gunicorn worker
               is killed with -9; the clients retry; the sweeper must reconcile what was left
  disk-full    the media folder is a real tmpfs; a ballast file fills it for --outage seconds
               (uploads must answer 507 and store nothing half), then the space comes back
The run then also reports the errors clients saw during the fault and how long until uploads
succeeded again. A webhook subscription to a receiver in this process gets every image.classified
event: a delivery received twice is redundant work, as is a message the sweeper re-sends while the
original still waits in the queue (the sweeper's counts, from the worker log, against the messages the
fault really lost). Checks also fail on any client 500 and on any file under MEDIA_ROOT without a row.
Lost classification messages are re-queued by the sweeper that beat sends every minute (SEM_PENDING_SWEEP_AFTER_S is lowered to 30 s here so that a run takes minutes, not ten).

--s3 puts media and models in a bucket of moto's S3 server (started in this process; MinIO cannot be installed
here): uploads, classification and the checks go through the object store, workers through their cache.

NOTE: the redis and postgres faults restart the machine's shared servers: other test runs see them too.

    .venv/bin/python bench/bench_load.py                      # 60 s, 20 clients
    .venv/bin/python bench/bench_load.py --fault worker --seconds 40
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import load_faults
import numpy as np
import requests
from load_checks import (
    DRAIN_TIMEOUT_S,
    check_outcome,
    expect,
    wait_for_drain,
    wait_for_orphans_reconciled,
    wait_for_webhooks,
)
from load_faults import WebhookReceiver, wait_for
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = REPO_ROOT / ".venv" / "bin"
# Dropped and re-created by each run: a run beside another checkout's names its own (SEM_BENCH_DATABASE).
DATABASE_NAME = os.environ.get("SEM_BENCH_DATABASE", "sem_bench_load")
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DATABASE_NAME}"
BROKER_URL = os.environ.get("SEM_BENCH_BROKER_URL", "redis://127.0.0.1:6379/9")
SWEEP_AFTER_S = 30
ORPHAN_GRACE_S = 60  # SEM_INTERRUPTED_UPLOAD_GRACE_S: an hour by default; minutes would make a slow bench
CACHE_URL = "redis://127.0.0.1:6379/12"
TMPFS_SIZE = "4g"
IMAGE_SIDE = 1024  # 1024 x 1024 x 8 bit = 1 MiB of pixels
CLIENT_TIMEOUT_S = 120
RETRY_FOR_S = 180  # a client gives an upload up after retrying this long


# ---------------------------------------------------------------------------------------------
# Environment: database, Django in this process, the servers as subprocesses
# ---------------------------------------------------------------------------------------------


def portal_env(root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": DATABASE_URL,
        "CELERY_BROKER_URL": BROKER_URL,
        "SECRET_KEY": "bench-only-secret-key",
        "MEDIA_ROOT": str(root / "media"),
        "MODEL_DIR": str(root / "models"),
        "SEM_VAR_DIR": str(root / "var"),
        "SEM_PENDING_SWEEP_AFTER_S": str(SWEEP_AFTER_S),
        "SEM_INTERRUPTED_UPLOAD_GRACE_S": str(ORPHAN_GRACE_S),
        "CACHE_URL": CACHE_URL,  # the API's throttles read it, as in production
        "SEM_WEBHOOK_ALLOW_LOOPBACK": "true",
        # The bench measures the pipeline, not the per-token throttle (600 uploads/min by default).
        "SEM_API_UPLOAD_RATE": "100000/min",
        "SEM_API_RATE": "100000/min",
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "PYTHONUNBUFFERED": "1",
    }


def recreate_database() -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE_NAME} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DATABASE_NAME}")


def flush_broker() -> None:
    import redis

    redis.Redis.from_url(BROKER_URL).flushdb()


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    sys.path.insert(0, str(REPO_ROOT))
    import django

    django.setup()


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [str(VENV_BIN / "python"), "manage.py", *args], cwd=REPO_ROOT, env=env, check=True, stdout=subprocess.DEVNULL
    )


class Service:
    """A server subprocess in its own process group, logging to a file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_dir: Path, ready: str) -> None:
        self.name, self.command, self.env, self.ready = name, command, env, ready
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> Service:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while self.ready not in self.log()[offset:]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        return self

    def kill9(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # the main process only: a warm shutdown of its children
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill9()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_services(env, log_dir: Path, args) -> tuple[dict[str, Service], str]:
    port = free_port()
    gunicorn = Service(
        "gunicorn",
        [
            str(VENV_BIN / "gunicorn"),
            "portal.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(args.web_workers),
            "--timeout",
            "120",
        ],
        env,
        log_dir,
        ready="Booting worker",
    )
    services = {
        "gunicorn": gunicorn,
        "worker": new_worker(env, log_dir, args),
        "beat": Service(
            "beat",
            [
                str(VENV_BIN / "celery"),
                "-A",
                "workers",
                "beat",
                "--loglevel=INFO",
                "--schedule",
                str(log_dir / "beat.schedule"),
            ],
            env,
            log_dir,
            ready="beat: Starting",
        ),
    }
    for service in services.values():
        service.start()
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: answers(url), "gunicorn")
    return services, url


def answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/api/", timeout=5).status_code < 500
    except requests.RequestException:
        return False


def new_worker(env, log_dir: Path, args) -> Service:
    return Service(
        "worker",
        [
            str(VENV_BIN / "celery"),
            "-A",
            "workers",
            "worker",
            "-Q",
            "gpu,default,maintenance",
            f"--concurrency={args.worker_concurrency}",
            "--loglevel=INFO",
        ],
        env,
        log_dir,
        ready=" ready.",
    )


# ---------------------------------------------------------------------------------------------
# Fixtures in the database: model, user, token, sample
# ---------------------------------------------------------------------------------------------


def install_production_model(root: Path, args_s3: bool = False):
    """A small real model (trained as the worker tests train theirs), promoted to production."""
    from classifier.config import TrainConfig
    from classifier.databar import crop_databar
    from classifier.preprocess import make_derivative
    from classifier.synthetic import make_image
    from classifier.train import train
    from portal.models import ModelVersion
    from portal.services.learning.promotion import promote
    from tests.worker_fixtures import (
        MODEL_FOLDERS,
        SYNTHETIC_SIZE,
        TINY_TRAIN_CONFIG,
        TrainedArtifact,
        category_name,
        install_model,
    )

    train_dir = root / "train"
    train_dir.mkdir()
    items = []
    for folder in MODEL_FOLDERS:
        for seed in range(10):
            path = train_dir / f"{folder}-{seed}.png"
            make_derivative(crop_databar(make_image(folder, 1000 + seed, size=SYNTHETIC_SIZE))[0]).save(path)
            items.append((str(path), category_name(folder)))
    result = train(
        items,
        TrainConfig.from_dict(TINY_TRAIN_CONFIG),
        str(train_dir / "model.pth"),
        test_items=items[::5],
        classes=[category_name(folder) for folder in MODEL_FOLDERS],
    )
    artifact = TrainedArtifact(
        Path(result.artifact_path), result.sha256, list(result.metadata["classes"]), result.evaluation, result.metadata
    )
    if args_s3:
        from django.core.files import File

        from portal.storage import model_storage

        with open(artifact.path, "rb") as handle:
            name = model_storage().save("v1/model.safetensors", File(handle))
        model = install_model(artifact, 1, status=ModelVersion.Status.CANDIDATE)
        ModelVersion.objects.filter(pk=model.pk).update(artifact_path=name)  # the bucket's copy, not MODEL_DIR's
        model.refresh_from_db()
        return promote(model)
    return promote(install_model(artifact, 1, status=ModelVersion.Status.CANDIDATE))


def create_uploader() -> tuple[str, int]:
    """A project member with an API token and a sample: returns (token secret, sample id)."""
    from django.contrib.auth import get_user_model

    from portal.models import Membership, Project, Sample
    from portal.services.delivery.tokens import create_token

    user = get_user_model().objects.create_user("lims-bench", "lims@example.org", "pw-bench-12345")
    project = Project.objects.create(name="Load bench")
    Membership.objects.create(project=project, user=user, role=Membership.Role.MEMBER)
    sample = Sample.objects.create(project=project, lab_sample_id="LOAD-1", name="Load bench", owner=user)
    return create_token(user, "bench").secret, sample.pk


# ---------------------------------------------------------------------------------------------
# The load: clients that retry with their idempotency key
# ---------------------------------------------------------------------------------------------


@dataclass
class Upload:
    key: str
    sha256: str
    image_id: int | None = None  # set once a request succeeded
    attempts: int = 0


@dataclass
class Record:
    """What all clients saw (lists are appended to from the client threads)."""

    latencies: list[float] = field(default_factory=list)  # successful requests, seconds
    errors: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, status or exception)
    uploads: list[Upload] = field(default_factory=list)
    successes_at: list[float] = field(default_factory=list)


def tiff_bytes(client: int, number: int) -> bytes:
    """A unique 1024x1024 8-bit TIFF: random pixels seeded by (client, number)."""
    pixels = np.random.default_rng((client, number)).integers(0, 256, (IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="TIFF")
    return buffer.getvalue()


def run_client(client: int, url: str, token: str, sample_id: int, deadline: float, record: Record) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    number = 0
    while time.monotonic() < deadline:
        data = tiff_bytes(client, number)
        upload = Upload(f"bench-{client}-{number}", hashlib.sha256(data).hexdigest())
        record.uploads.append(upload)
        upload_with_retries(session, url, sample_id, data, upload, record)
        number += 1


def upload_with_retries(session, url: str, sample_id: int, data: bytes, upload: Upload, record: Record) -> None:
    give_up_at = time.monotonic() + RETRY_FOR_S
    while time.monotonic() < give_up_at:
        upload.attempts += 1
        started = time.monotonic()
        try:
            response = session.post(
                f"{url}/api/images/",
                data={"sample": sample_id},
                files={"file": (f"{upload.key}.tif", data, "image/tiff")},
                headers={"Idempotency-Key": upload.key},
                timeout=CLIENT_TIMEOUT_S,
            )
            outcome = str(response.status_code)
        except requests.RequestException as error:
            response, outcome = None, type(error).__name__
        if response is not None and response.status_code in (200, 201):
            record.latencies.append(time.monotonic() - started)
            record.successes_at.append(time.monotonic())
            upload.image_id = response.json()["id"]
            return
        record.errors.append((time.monotonic(), outcome))
        if response is not None and response.status_code < 500 and response.status_code != 429:
            return  # the client's own fault: retrying would not help (counted as an error)
        time.sleep(retry_delay(response))


def retry_delay(response) -> float:
    retry_after = response.headers.get("Retry-After", "") if response is not None else ""
    return min(float(retry_after), 5.0) if retry_after.isdigit() else 0.5


# ---------------------------------------------------------------------------------------------
# Faults (bench/load_faults.py)
# ---------------------------------------------------------------------------------------------


def inject_fault(args, services: dict[str, Service], env, log_dir: Path) -> str:
    if args.fault == "redis":
        return load_faults.redis_outage(BROKER_URL, args.outage)
    if args.fault == "postgres":
        return load_faults.postgres_restart()
    if args.fault == "worker":
        return load_faults.kill_worker(services, lambda: new_worker(env, log_dir, args).start())
    if args.fault == "kill-commit":
        return load_faults.kill_web_workers_before_commit(services, DATABASE_URL)
    return load_faults.disk_full(Path(env["MEDIA_ROOT"]).parent, args.outage)


def subscribe_webhook(url: str) -> None:
    """image.classified events of the bench project to the receiver in this process."""
    from django.contrib.auth import get_user_model

    from portal.models import WebhookSubscription

    owner = get_user_model().objects.get(username="lims-bench")
    WebhookSubscription.objects.create(owner=owner, url=url, events=["image.classified"], secret="bench-" * 6)


# ---------------------------------------------------------------------------------------------
# After the load: drain and checks
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    return float(np.percentile(values, fraction * 100)) if values else float("nan")


def print_load(record: Record, seconds: float, clients: int) -> None:
    done = [upload for upload in record.uploads if upload.image_id is not None]
    ms = [latency * 1000 for latency in record.latencies]
    print(
        f"load: {clients} clients, {seconds:.0f} s, {len(done)} uploads stored "
        f"({len(done) * 1.0 / seconds:.2f} uploads/s, {len(done) * IMAGE_SIDE**2 / seconds / 2**20:.1f} MiB/s)"
    )
    print(
        f"latency of successful requests: p50 {percentile(ms, 0.5):.0f} ms  p95 {percentile(ms, 0.95):.0f} ms  "
        f"max {max(ms, default=0):.0f} ms"
    )
    statuses = Counter(outcome for _, outcome in record.errors)
    print(
        f"errors: {sum(statuses.values())} {dict(statuses) or ''}  (retries that then succeeded: "
        f"{sum(upload.attempts - 1 for upload in done)})"
    )
    # The machine may be shared: a high load average from others explains a slow run.
    print(f"machine: {os.cpu_count()} cores, load average now {os.getloadavg()[0]:.1f}")


def print_fault(kind: str, record: Record, fault_started: float, fault_done: float) -> None:
    errors = [(at, outcome) for at, outcome in record.errors if at >= fault_started]
    during = Counter(outcome for _, outcome in errors)
    last_error = max((at for at, _ in errors), default=None)
    recovered = min((at for at in record.successes_at if last_error and at > last_error), default=None)
    print(
        f"fault {kind}: injected in {fault_done - fault_started:.1f} s; client errors from then on: "
        f"{sum(during.values())} {dict(during) or ''}"
        + (
            f"; last error {last_error - fault_started:.1f} s after the fault started, next success "
            f"{recovered - fault_started:.1f} s after"
            if last_error and recovered
            else ""
        )
    )


# ---------------------------------------------------------------------------------------------


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--fault", choices=["redis", "postgres", "worker", "kill-commit", "disk-full"])
    parser.add_argument("--s3", action="store_true", help="media and models on S3 (moto's server in this process)")
    parser.add_argument("--outage", type=float, default=60, help="seconds the redis and disk-full faults last")
    parser.add_argument("--fault-at", type=float, help="seconds into the load (default: a third of it)")
    parser.add_argument("--web-workers", type=int, default=4, help="gunicorn sync workers (the Dockerfile's 4)")
    parser.add_argument("--worker-concurrency", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, media)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    root = Path(tempfile.mkdtemp(prefix="sem-bench-load-"))
    env = portal_env(root)
    if args.s3:
        env.update(load_faults.start_s3_server("bench-load"))
    if args.fault == "disk-full":
        load_faults.mount_tmpfs(root / "media-disk", TMPFS_SIZE)
        env["MEDIA_ROOT"] = str(root / "media-disk" / "media")
    recreate_database()
    flush_broker()
    setup_django(env)
    manage(env, "migrate", "--noinput")
    manage(env, "setup_schedules")
    model = install_production_model(root, args.s3)
    model_before = (model.pk, model.artifact_sha256)
    token, sample_id = create_uploader()
    receiver = WebhookReceiver()
    subscribe_webhook(receiver.url)
    services, url = start_services(env, root, args)
    try:
        return run(args, env, root, services, url, (token, sample_id), model_before, receiver)
    finally:
        for service in services.values():
            service.stop()
        receiver.stop()
        if args.fault == "disk-full":
            load_faults.unmount(root / "media-disk")
        print(f"logs and media: {root}" if args.keep else "", end="\n" if args.keep else "")
        if not args.keep:
            subprocess.run(["rm", "-rf", str(root)], check=False)


def run(args, env, root: Path, services, url: str, uploader: tuple, model_before, receiver) -> int:
    record = Record()
    started = time.monotonic()
    deadline = started + args.seconds
    threads = [
        threading.Thread(target=run_client, args=(client, url, *uploader, deadline, record))
        for client in range(args.clients)
    ]
    for thread in threads:
        thread.start()
    fault_times = None
    if args.fault:
        time.sleep(max(0.0, started + (args.fault_at or args.seconds / 3) - time.monotonic()))
        fault_started = time.monotonic()
        print(f"fault {args.fault}: {inject_fault(args, services, env, root)}")
        fault_times = (fault_started, time.monotonic())
    for thread in threads:
        thread.join()
    print_load(record, time.monotonic() - started, args.clients)
    if fault_times:
        print_fault(args.fault, record, *fault_times)
        unqueued = services["gunicorn"].log().count("could not queue classification")
        print(f"fault {args.fault}: {unqueued} uploads stored while the broker could not take their message")
    failures = drain_and_check(args, env, services, record, model_before, receiver)
    images = len([upload for upload in record.uploads if upload.image_id is not None])
    for failure in failures:
        print(f"CHECK FAILED: {failure}")
    if not failures:
        print(
            f"checks: OK: {images} uploads stored once (rows, sha256, files on disk match, nothing "
            f"half-stored, no orphan), each classified once by production model v1, production unchanged, "
            f"no client 500, no webhook delivered twice"
        )
    else:
        print(f"worker log tail:\n{services['worker'].log()[-2000:]}")
    return 1 if failures else 0


def drain_and_check(args, env, services, record: Record, model_before, receiver) -> list[str]:
    failures = []
    drained = wait_for_drain(DRAIN_TIMEOUT_S)
    print(
        f"drain: all images classified {drained:.1f} s after the load ended"
        if drained is not None
        else f"drain: NOT drained after {DRAIN_TIMEOUT_S} s"
    )
    expect(failures, drained is not None, "not drained")
    media_root = Path(env["MEDIA_ROOT"])
    reconciled = wait_for_orphans_reconciled(media_root, ORPHAN_GRACE_S + 240)
    print(
        f"orphans: none under MEDIA_ROOT {reconciled:.0f} s after the drain"
        if reconciled is not None
        else "orphans: files without rows are still there"
    )
    pending = wait_for_webhooks()
    resends = load_faults.sweeper_resends(services["worker"].log())
    print(
        f"webhooks: {sum(receiver.received.values())} received, {len(receiver.received)} distinct deliveries, "
        f"{receiver.duplicates()} received twice, {pending} still pending; sweeper re-sent: {dict(resends) or 'nothing'}"
    )
    server_errors = sum(1 for _, outcome in record.errors if outcome == "500")
    print(f"client 500s: {server_errors}")
    expect(failures, server_errors == 0, f"{server_errors} client requests answered 500")
    expect(failures, receiver.duplicates() == 0, f"{receiver.duplicates()} webhook deliveries received twice")
    expect(failures, pending == 0, f"{pending} webhook deliveries never sent")
    return failures + check_outcome(record, media_root, model_before)


if __name__ == "__main__":
    sys.exit(main())
