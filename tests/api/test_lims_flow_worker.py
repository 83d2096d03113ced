"""End to end with a real Celery worker: webhook retries through the broker, and the LIMS flow
(examples/lims_client.py uploads -> the worker classifies -> signed image.classified webhooks)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from portal.models import Label, WebhookDelivery, WebhookSubscription
from portal.services.curation.labels import set_label
from portal.services.delivery import webhooks
from portal.services.delivery.tokens import create_token
from portal.services.ingestion.ingest import ingest_file
from tests.api.conftest import token_client
from tests.webhook_receiver import Receiver
from tests.worker_fixtures import REPO_ROOT, synthetic_png
from workers.tasks import sweep

pytestmark = [pytest.mark.worker, pytest.mark.slow]

SECRET = "worker-test-secret-0123456789abcdef"
FAST_RETRIES = {"SEM_WEBHOOK_BACKOFF_S": 0.2, "SEM_WEBHOOK_MAX_ATTEMPTS": 4}


def test_worker_retries_a_failed_delivery_with_backoff(worker_factory, nffa_categories, sample, user):
    worker = worker_factory(**FAST_RETRIES)
    with Receiver([500, 200]) as receiver:
        WebhookSubscription.objects.create(owner=user, url=receiver.url, events=["label.changed"], secret=SECRET)
        label = set_label(_image(sample, user), nffa_categories["Fibres"], source=Label.Source.API, user=user)
        delivery = worker.wait_until(
            lambda: WebhookDelivery.objects.filter(status=WebhookDelivery.Status.DELIVERED).first(),
            timeout=60,
            what="the webhook delivery",
        )
    assert delivery.attempts == 2 and delivery.response_status == 200
    assert len(receiver.received) == 2
    for request in receiver.received:
        headers = request.headers
        assert webhooks.verify(SECRET, headers["X-SEM-Timestamp"], request.body, headers["X-SEM-Signature"])
        assert json.loads(request.body)["data"]["label"]["id"] == label.pk


def test_sweeper_sends_a_delivery_whose_message_was_lost(worker_factory, user):
    """As after a broker outage at enqueue time: a pending delivery with no attempt and no message."""
    worker = worker_factory(SEM_PENDING_SWEEP_AFTER_S=10)
    with Receiver([200]) as receiver:
        subscription = WebhookSubscription.objects.create(
            owner=user, url=receiver.url, events=["label.changed"], secret=SECRET
        )
        lost = WebhookDelivery.objects.create(
            subscription=subscription, event="label.changed", payload={"event": "label.changed", "data": {}}
        )
        WebhookDelivery.objects.filter(pk=lost.pk).update(created_at=timezone.now() - timedelta(minutes=5))
        assert sweep()["webhooks_requeued"] == 1
        worker.wait_until(lambda: receiver.received, timeout=60, what="the swept delivery")
        lost.refresh_from_db()
    assert lost.status == WebhookDelivery.Status.DELIVERED and lost.attempts == 1


def _image(sample, user):
    return ingest_file(io.BytesIO(synthetic_png("Fibres", 7)), filename="f.png", sample=sample, uploaded_by=user).image


def test_example_lims_client_uploads_waits_and_prints(
    worker_factory, production_model, live_server, sample, user, tmp_path
):
    """The LIMS flow as a LIMS runs it: examples/lims_client.py uploads through the API of a live portal,
    a real worker classifies, the client prints the results, and signed image.classified webhooks arrive."""
    worker_factory(**FAST_RETRIES)
    folder = tmp_path / "upload"
    folder.mkdir()
    for index, name in enumerate(["Fibres", "Particles"]):
        (folder / f"{name}.png").write_bytes(synthetic_png(name, 50 + index))
    (folder / "notes.txt").write_text("not an image: skipped by suffix")
    (folder / "fake.png").write_bytes(b"<html>not an image</html>")
    client = token_client(user)
    with Receiver([]) as receiver:
        secret = client.post(
            "/api/webhooks/", {"url": receiver.url, "events": ["image.classified"]}, format="json"
        ).json()["secret"]
        command = [
            sys.executable,
            str(REPO_ROOT / "examples" / "lims_client.py"),
            str(folder),
            "--url",
            live_server.url,
            "--token",
            create_token(user, "lims").secret,
            "--sample",
            sample.lab_sample_id,
            "--interval",
            "0.5",
            "--timeout",
            "90",
        ]
        first = subprocess.run(command, capture_output=True, text=True, timeout=150)
        assert first.returncode == 0, first.stderr
        assert "fake.png: refused: HTTP 400" in first.stderr
        rows = [line for line in first.stdout.splitlines()[1:] if line.strip()]
        assert len(rows) == 2 and all(" classified " in row for row in rows), first.stdout
        assert stored_image_count() == 2

        again = subprocess.run(command, capture_output=True, text=True, timeout=150)
        assert again.returncode == 0 and again.stderr.count("already stored") == 2
        assert stored_image_count() == 2
        for _ in range(100):  # the webhooks are sent right after the classification commits
            if len(receiver.received) >= 2:
                break
            time.sleep(0.2)

    assert len(receiver.received) == 2
    classified = {}
    for request in receiver.received:
        headers = request.headers
        assert headers["X-SEM-Event"] == "image.classified"
        assert webhooks.verify(secret, headers["X-SEM-Timestamp"], request.body, headers["X-SEM-Signature"])
        image = json.loads(request.body)["data"]["image"]
        classified[image["id"]] = image["predicted_category"]
    assert classified == {
        item["id"]: item["predicted_category"] for item in client.get("/api/images/").json()["results"]
    }


def stored_image_count() -> int:
    from portal.models import SEMImage

    return SEMImage.objects.count()
