"""POST/GET /api/images/{id}/heatmap/: where the model looked, computed once by a worker (issue 24, item 5)."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from portal.models import HeatMap, ModelVersion, SEMImage
from portal.services.delivery import queueing
from portal.services.learning import heatmaps
from portal.storage import media_storage
from tests.api.conftest import ingest_png, make_model


def url(image, version=None) -> str:
    return f"/api/images/{image.pk}/heatmap/" + (f"?version={version}" if version is not None else "")


@pytest.fixture
def sent(monkeypatch):
    """The heat map tasks sent to the broker (still sent: a worker may be listening)."""
    names = []
    real_send = queueing.send

    def send(name, args, **options):
        if name == queueing.COMPUTE_HEATMAP:
            names.append(args)
        return real_send(name, args, **options)

    monkeypatch.setattr(queueing, "send", send)
    return names


@pytest.fixture
def post(django_capture_on_commit_callbacks):
    """A POST whose on-commit callbacks (the task sent) run, as after a real commit."""

    def call(client, path):
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(path)

    return call


@pytest.mark.worker
@pytest.mark.slow
def test_a_worker_computes_the_map_once_and_a_second_request_is_answered_from_the_stored_png(
    celery_worker, production_model, sample, user, member_api, sent
):
    image = ingest_png(sample, user, seed=31)
    classified = celery_worker.wait_until(
        lambda: SEMImage.objects.filter(pk=image.pk, status="classified").select_related("predicted_category").first(),
        timeout=120,
        what="the classification",
    )

    first = member_api.post(url(image))
    assert first.status_code == 202, first.content
    assert first.json()["status"] == "pending" and first.json()["model_version"] == production_model.version
    heatmap = celery_worker.wait_until(
        lambda: HeatMap.objects.exclude(status=HeatMap.Status.PENDING).filter(image=image).first(),
        timeout=180,
        what="the heat map",
    )
    assert heatmap.status == HeatMap.Status.READY, heatmap.error
    assert heatmap.target_class == classified.predicted_category.name  # it explains the prediction shown
    assert heatmap.target_layer == "0.7"  # resnet's layer4

    png = member_api.get(first.json()["url"])
    assert png.status_code == 200 and png["Content-Type"] == "image/png"
    picture = Image.open(io.BytesIO(b"".join(png.streaming_content)))
    with Image.open(image.derivative.path) as derivative:
        assert (picture.mode, picture.size) == ("RGBA", derivative.size)
    stamp = media_storage().get_modified_time(heatmap.file)

    second = member_api.post(url(image))
    assert second.status_code == 200 and second.json()["status"] == "ready"
    assert second.json()["seconds"] == heatmap.seconds
    assert len(sent) == 1, "the second request queued no work"
    time.sleep(1)  # time for a worker to recompute, had anything been queued
    assert HeatMap.objects.get(pk=heatmap.pk).finished_at == heatmap.finished_at
    assert media_storage().get_modified_time(heatmap.file) == stamp


@pytest.fixture
def production(db):
    return make_model(1, status=ModelVersion.Status.PRODUCTION)


def test_another_projects_image_is_not_found_and_nothing_is_queued(
    image, production, outsider_api, anon_api, sent, post
):
    for client, expected in ((outsider_api, 404), (anon_api, 401)):
        assert post(client, url(image)).status_code == expected
        assert client.get(url(image)).status_code == expected
        assert post(client, url(image, production.version)).status_code == expected
    assert not HeatMap.objects.exists() and sent == []


def test_the_states_before_the_map_is_ready(image, production, member_api, sent, post):
    before = member_api.get(url(image))
    assert before.status_code == 409 and before.json()["error"]["code"] == "heatmap_not_requested"
    assert post(member_api, url(image, version=99)).status_code == 404

    assert post(member_api, url(image)).status_code == 202
    assert post(member_api, url(image)).status_code == 202  # on its way: not queued twice
    pending = member_api.get(url(image))
    assert pending.status_code == 202 and pending.json()["status"] == "pending"
    assert len(sent) == 1


def test_a_failure_is_reported_and_a_new_request_queues_it_again(image, production, member_api, sent, post):
    post(member_api, url(image))
    heatmap = HeatMap.objects.get()

    assert heatmaps.compute_heatmap(heatmap.pk) == "failed"  # the fake model has no artifact file

    failed = member_api.get(url(image))
    assert failed.status_code == 409 and failed.json()["error"]["code"] == "heatmap_failed"
    assert "could not be computed" in failed.json()["error"]["message"]
    again = post(member_api, url(image))
    assert again.status_code == 202 and again.json()["status"] == "pending" and len(sent) == 2


def test_a_deleted_image_leaves_the_task_nothing_to_do(image, production, member_api, sent, post):
    post(member_api, url(image))
    heatmap = HeatMap.objects.get()
    HeatMap.objects.filter(pk=heatmap.pk).delete()

    assert heatmaps.compute_heatmap(heatmap.pk) == "gone"


def test_a_ready_map_whose_file_is_gone_is_computed_again(image, production, member_api, sent, post):
    post(member_api, url(image))
    HeatMap.objects.update(status=HeatMap.Status.READY, file="heatmaps/gone.png")

    again = post(member_api, url(image))

    assert again.status_code == 202 and again.json()["status"] == "pending" and len(sent) == 2
