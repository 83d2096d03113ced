"""Fault-injection helpers: a media disk that fills up, an API client with a token, and a listing of
every file under MEDIA_ROOT (to prove that nothing half-stored stays behind)."""

from __future__ import annotations

import errno
import io
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from django.core.files.storage import filesystem
from PIL import Image
from rest_framework.test import APIClient

from portal.services.delivery.tokens import create_token


def tiff_bytes(seed: int, size: int = 160) -> bytes:
    """A unique 8-bit greyscale TIFF (random pixels, so the sha256 differs per seed)."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="TIFF")
    return buffer.getvalue()


def media_files(media_root) -> set[str]:
    """Every file under MEDIA_ROOT, relative, partial files included."""
    root = Path(media_root)
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()} if root.exists() else set()


def stored_names(images) -> set[str]:
    return {name for image in images for name in (image.original.name, image.derivative.name, image.thumbnail.name)}


@pytest.fixture
def api_client(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {create_token(user, 'faults').secret}")
    return client


class _FullDisk:
    """Stands in for the `os` module of Django's FileSystemStorage: files it opens for writing share
    `capacity` bytes; the write that crosses it stores what fits, then fails with ENOSPC, as a
    full filesystem does."""

    def __init__(self, capacity: int) -> None:
        self.free = capacity

    def __getattr__(self, name):
        return getattr(os, name)

    def fdopen(self, fd, mode="wb", *args, **kwargs):
        return _FillingFile(os.fdopen(fd, mode, *args, **kwargs), self)


class _FillingFile:
    def __init__(self, handle, disk: _FullDisk) -> None:
        self.handle, self.disk = handle, disk

    def write(self, data):
        fits = data[: max(self.disk.free, 0)]
        self.handle.write(fits)
        self.handle.flush()
        self.disk.free -= len(fits)
        if len(fits) < len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return len(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()

    def __getattr__(self, name):
        return getattr(self.handle, name)


@contextmanager
def media_disk_with(capacity: int):
    """The media filesystem has `capacity` free bytes while the block runs: for the storage (uploads, and
    the web UI's cached renditions, portal/web/renditions.py, which it stores too)."""
    from unittest import mock

    disk = _FullDisk(capacity)
    with mock.patch.object(filesystem, "os", disk):
        yield


def free_port() -> int:
    """A loopback port nobody listens on (bound and released at once)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisProcess:
    """This test's own redis-server on a free loopback port, never the system Redis on 6379:
    `stop()` kills it (an outage), `start()` brings it back on the same port."""

    def __init__(self, workdir) -> None:
        self.port = free_port()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import subprocess
        import time

        import redis

        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--logfile",
                str(self.workdir / "redis.log"),
            ]
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=20)
        self.process = None

    def client(self):
        import redis

        return redis.Redis(port=self.port, socket_connect_timeout=1)


@pytest.fixture
def redis_process(tmp_path):
    import shutil

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisProcess(tmp_path / "redis")
    server.start()
    yield server
    server.stop()
