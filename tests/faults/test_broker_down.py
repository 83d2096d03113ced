"""Redis is unreachable when an image is uploaded: the upload is still stored (pending), the client
gets its 201, and the sweeper has it classified once a worker and the broker are back."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import timedelta

import pytest
import requests
from django.conf import settings as django_settings
from django.utils import timezone

from portal.models import Prediction, SEMImage
from portal.services.delivery.tokens import create_token
from tests.faults.conftest import media_files, stored_names, tiff_bytes
from tests.worker_fixtures import REPO_ROOT, database_url

pytestmark = [pytest.mark.worker, pytest.mark.slow]

SERVER_READY_TIMEOUT_S = 60


def _free_port() -> int:
    """A loopback port nobody listens on (bound and released at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def portal_server(broker_url: str, log_path, **extra_env: str):
    """The portal under gunicorn, on this test's database and media, with the given broker."""
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": broker_url,
        "MEDIA_ROOT": str(django_settings.MEDIA_ROOT),
        "MODEL_DIR": str(django_settings.MODEL_DIR),
        "SECRET_KEY": "test-only-secret-key",
        "PYTHONUNBUFFERED": "1",
        **extra_env,
    }
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "portal.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
                "--timeout",
                "60",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_serving(url, server, log_path)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_until_serving(url: str, server: subprocess.Popen, log_path) -> None:
    deadline = time.monotonic() + SERVER_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{log_path.read_text(errors='replace')[-3000:]}")
        try:
            requests.get(f"{url}/api/", timeout=10)
            return
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or a first answer slow under load
            time.sleep(0.2)
    raise TimeoutError(f"gunicorn not serving after {SERVER_READY_TIMEOUT_S} s")


def test_an_upload_while_the_broker_is_down_is_stored_and_classified_later(
    worker_factory, production_model, sample, user, tmp_path
):
    worker = worker_factory(start=False)
    secret = create_token(user, "lims").secret
    data = tiff_bytes(20)

    with portal_server(f"redis://127.0.0.1:{_free_port()}/0", tmp_path / "gunicorn.log") as url:
        response = requests.post(
            f"{url}/api/images/",
            headers={"Authorization": f"Bearer {secret}"},
            data={"sample": sample.pk},
            files={"file": ("down.tif", data, "image/tiff")},
            timeout=120,
        )

    assert response.status_code == 201, response.text
    image = SEMImage.objects.get(pk=response.json()["id"])
    assert image.status == SEMImage.Status.PENDING
    assert media_files(django_settings.MEDIA_ROOT) == stored_names([image])
    assert "could not queue classification" in (tmp_path / "gunicorn.log").read_text()

    # The broker is back (the worker uses the real one). The message was never sent; the sweeper finds
    # the image once it has been pending for SEM_PENDING_SWEEP_AFTER_S: let that time pass.
    SEMImage.objects.filter(pk=image.pk).update(status_changed_at=timezone.now() - timedelta(hours=1))
    worker.start()
    from workers.tasks import sweep

    sweep.delay()  # what beat sends every minute
    worker.wait_until(
        lambda: SEMImage.objects.get(pk=image.pk).status == SEMImage.Status.CLASSIFIED,
        what="the swept image classified",
    )
    assert Prediction.objects.filter(image=image).count() == 1
    assert Prediction.objects.get(image=image).model_version_id == production_model.pk
