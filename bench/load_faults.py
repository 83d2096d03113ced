"""The faults bench_load.py injects, and the webhook receiver that counts redundant deliveries.

Each fault function takes the running services (bench_load.Service by name) and returns a short line
for the report. They run in bench_load's process, which has Django set up against the bench database.
"""

from __future__ import annotations

import ast
import os
import subprocess
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REDIS_START = [
    "redis-server",
    "--daemonize",
    "yes",
    "--bind",
    "127.0.0.1",
    "-::1",
    "--port",
    "6379",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    "/var/lib/redis",
    "--logfile",
    "/var/log/redis/ci.log",
]
# The advisory lock every ingestion takes just before its commit (portal.services.ingestion.ingest_store.take_near_duplicate_turn).
NEAR_DUPLICATE_LOCK_KEY = 0x5E4D0D0B
HOLD_BEFORE_KILL_S = 4


def wait_for(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come back")
        time.sleep(0.2)


def redis_answers() -> bool:
    return subprocess.run(["redis-cli", "-h", "127.0.0.1", "ping"], capture_output=True).stdout.strip() == b"PONG"


# --- Faults ----------------------------------------------------------------------------------------


def redis_outage(broker_url: str, outage_s: float) -> str:
    """Redis (broker and cache) down for `outage_s`, then back empty: what was queued is lost."""
    lost = queued_messages(broker_url)
    subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", "6379", "shutdown", "nosave"], check=False)
    time.sleep(outage_s)
    subprocess.run(REDIS_START, check=True)
    wait_for(redis_answers, "Redis")
    return f"Redis down {outage_s:.0f} s; {lost} messages were waiting in it and are lost"


def postgres_restart() -> str:
    version = sorted(os.listdir("/etc/postgresql"))[0]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True)
    wait_for(lambda: subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"]).returncode == 0, "PostgreSQL")
    return "PostgreSQL restarted"


def kill_worker(services, restart) -> str:
    """kill -9 the Celery worker mid-batch (waiting briefly until it holds claimed images)."""
    in_flight = 0
    for _ in range(50):
        in_flight = claimed_unfinished()
        if in_flight:
            break
        time.sleep(0.1)
    services["worker"].kill9()
    services["worker"] = restart()
    return f"kill -9 of the worker with {in_flight} images claimed by its batch in flight"


def kill_web_workers_before_commit(services, database_url: str) -> str:
    """Hold every upload between its files and its commit, then kill -9 every gunicorn worker."""
    import psycopg

    with psycopg.connect(database_url.replace("postgres://", "postgresql://"), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [NEAR_DUPLICATE_LOCK_KEY])
        time.sleep(HOLD_BEFORE_KILL_S)  # uploads pile up behind the lock with their files written
        held = ingesting_markers()
        killed = kill_children(services["gunicorn"].process.pid)
    # The master starts new workers; the killed ones' transactions were rolled back with their connections.
    return f"kill -9 of {killed} gunicorn workers holding {held} uploads with files written, not committed"


def disk_full(media_mount: Path, outage_s: float) -> str:
    """Fill the media tmpfs with a ballast file for `outage_s`, then free it."""
    ballast = media_mount / "ballast"
    free = os.statvfs(media_mount).f_bavail * os.statvfs(media_mount).f_frsize
    with open(ballast, "wb") as handle:
        chunk = b"\0" * (16 * 2**20)
        try:
            while True:
                handle.write(chunk)
                handle.flush()
        except OSError:
            pass  # ENOSPC: the disk is full
    time.sleep(outage_s)
    ballast.unlink()
    return f"media disk ({free / 2**20:.0f} MiB free) full for {outage_s:.0f} s"


def ingesting_markers() -> int:
    """Uploads between their files and their commit (their markers in the media storage's .ingesting/)."""
    from portal.storage import media_storage

    try:
        return len(media_storage().listdir(".ingesting")[1])
    except FileNotFoundError:
        return 0


def kill_children(pid: int) -> int:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    for child in children:
        subprocess.run(["kill", "-9", child], check=False)
    return len(children)


def mount_tmpfs(folder: Path, size: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)


def unmount(folder: Path) -> None:
    subprocess.run(["umount", "--lazy", str(folder)], check=False)


def claimed_unfinished() -> int:
    from django.db import connection

    from portal.models import SEMImage

    try:
        return SEMImage.objects.filter(claimed_at__isnull=False).exclude(status=SEMImage.Status.CLASSIFIED).count()
    finally:
        connection.close()  # this thread's connection; the checks later use their own


def queued_messages(broker_url: str) -> int:
    """Messages in the broker's queues and unacknowledged hash (all of them are lost when Redis dies)."""
    import redis

    from portal.services.delivery.broker_queue import REDIS_PRIORITY_SEPARATOR, REDIS_UNACKED_KEY

    client = redis.Redis.from_url(broker_url)
    keys = [
        f"{queue}{REDIS_PRIORITY_SEPARATOR}{step}" if step else queue
        for queue in ("gpu", "default", "maintenance")
        for step in (0, 3, 6, 9)
    ]
    return sum(client.llen(key) for key in keys) + client.hlen(REDIS_UNACKED_KEY)


def start_s3_server(bucket: str) -> dict[str, str]:
    """moto's standalone S3 server in this process (MinIO cannot be installed here), with `bucket`; returns
    the portal's settings for media and models in it."""
    import logging
    import socket

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the S3 server logs every request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False).start()
    env = {
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "S3_ACCESS_KEY_ID": "bench",
        "S3_SECRET_ACCESS_KEY": "bench-secret",
        "S3_REGION": "us-east-1",
        "MEDIA_STORAGE_URL": f"s3://{bucket}/media",
        "MODEL_STORAGE_URL": f"s3://{bucket}/models",
    }
    boto3.client(
        "s3",
        endpoint_url=env["S3_ENDPOINT_URL"],
        aws_access_key_id="bench",
        aws_secret_access_key="bench-secret",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    return env


# --- The sweeper's re-sends, from the worker log ------------------------------------------------


def sweeper_resends(worker_log: str) -> Counter:
    """Sum of what every sweep re-sent: images, webhook deliveries, backlog restarts."""
    total: Counter = Counter()
    for line in worker_log.splitlines():
        if "workers.sweep[" not in line or "succeeded" not in line or ": {" not in line:
            continue
        result = ast.literal_eval(line[line.index("{") :])
        total["images"] += result.get("requeued", 0)
        total["webhooks"] += result.get("webhooks_requeued", 0)
        total["backlog restarts"] += int(bool(result.get("backlog_restarted")))
    return total


# --- A webhook receiver --------------------------------------------------------------------------


class WebhookReceiver:
    """Counts the deliveries (X-SEM-Delivery) it receives; answers 204."""

    def __init__(self) -> None:
        self.received: Counter = Counter()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.received[self.headers.get("X-SEM-Delivery", "")] += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def duplicates(self) -> int:
        return sum(count - 1 for count in self.received.values() if count > 1)

    def stop(self) -> None:
        self.server.shutdown()
