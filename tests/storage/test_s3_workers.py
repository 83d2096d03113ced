"""Workers on hosts without a shared disk: media and models on S3 (a real S3 API over HTTP), two real Celery
workers, each with its own empty media folder, model folder and cache, classify, train, promote and
re-classify; everything they read comes from the buckets through their caches."""

from __future__ import annotations

import pytest
from django.core.files import File

from portal.models import ModelVersion, SEMImage, TrainingRun
from portal.services.learning import promotion, training
from portal.storage import model_storage
from tests.storage.conftest import local_files

pytestmark = pytest.mark.worker

TINY_TRAINING = {"SEM_TRAIN_ARCH": "resnet18", "SEM_TRAIN_SIZES": [32, 48], "SEM_TRAIN_EPOCHS": [1, 1]}


def _host(s3, worker_factory, tmp_path, name: str, **overrides):
    """A worker as on its own host: empty media and model folders, its own cache, the buckets shared."""
    return worker_factory(
        **s3.env,
        MEDIA_ROOT=tmp_path / name / "media",
        MODEL_DIR=tmp_path / name / "models",
        SEM_WORKER_CACHE_DIR=tmp_path / name / "cache",
        SEM_GATE_FIRST_MODEL_FLOOR=0.0,
        **TINY_TRAINING,
        **overrides,
    )


def _install_in_bucket(artifact, version: int) -> ModelVersion:
    with open(artifact.path, "rb") as handle:
        name = model_storage().save(f"v{version}/model.safetensors", File(handle))
    return ModelVersion.objects.create(
        version=version,
        status=ModelVersion.Status.PRODUCTION,
        artifact_path=name,
        artifact_sha256=artifact.sha256,
        arch=artifact.metadata["arch"],
        classes=artifact.classes,
        metrics=artifact.metrics,
    )


def _all_classified_by(ids, model) -> bool:
    rows = SEMImage.objects.filter(pk__in=ids).values_list("status", "predicted_by")
    return len(rows) == len(ids) and all(row == (SEMImage.Status.CLASSIFIED, model.pk) for row in rows)


def _cached(tmp_path, name: str, suffix: str) -> list[str]:
    return [path for path in local_files(tmp_path / name / "cache") if path.endswith(suffix)]


def test_two_workers_without_a_shared_disk_classify_and_retrain(
    s3, worker_factory, trained_artifact, nffa_categories, sample, user, upload_images, tmp_path
):
    v1 = _install_in_bucket(trained_artifact, 1)

    # Host A classifies new uploads with v1, read from the models bucket.
    host_a = _host(s3, worker_factory, tmp_path, "host-a")
    labelled = upload_images(sample, user, 16, labelled=True)
    ids = [image.pk for image in labelled]
    host_a.wait_until(lambda: _all_classified_by(ids, v1), timeout=120, what="uploads classified by v1 on host A")
    assert len(_cached(tmp_path, "host-a", ".png")) == len(ids)  # every derivative came through its cache
    assert _cached(tmp_path, "host-a", ".safetensors") == [
        f"{trained_artifact.sha256[:2]}/{trained_artifact.sha256}.safetensors"
    ]

    # Host B (its cache empty) trains v2 on the derivatives from the bucket, and re-classifies with it.
    host_b = _host(s3, worker_factory, tmp_path, "host-b")
    host_a.stop()
    run = training.request_training(trigger=TrainingRun.Trigger.API, force=True).run
    run = host_b.wait_until(
        lambda: TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.SUCCEEDED).first(),
        timeout=300,
        what="the training run on host B",
    )
    v2 = ModelVersion.objects.get(pk=run.model_version_id)
    assert v2.version == 2 and v2.artifact_path == "v2/model.safetensors"
    assert {"v1/model.safetensors", "v2/model.safetensors", "v2/train_labels.json"} <= s3.keys(s3.model_bucket)
    assert model_storage().stored_sha256(v2.artifact_path) == v2.artifact_sha256
    train_shas = {image.sha256 for image in labelled if image.split == SEMImage.Split.TRAIN}
    assert set(training.load_label_set(v2)) == train_shas  # read back from the bucket
    if v2.status != ModelVersion.Status.PRODUCTION:  # the gate may keep a tiny model out: promote it by hand
        promotion.promote(v2)
    assert training.new_label_count() == 0
    host_b.wait_until(lambda: _all_classified_by(ids, v2), timeout=120, what="re-classification by v2 on host B")
    assert f"{v2.artifact_sha256[:2]}/{v2.artifact_sha256}.safetensors" in _cached(tmp_path, "host-b", ".safetensors")
    assert len(_cached(tmp_path, "host-b", ".png")) == len(ids)  # training read its data through the cache

    # Host A comes back and classifies a new upload with v2, fetched into its own cache.
    host_b.stop()
    host_a.start()
    [new] = upload_images(sample, user, 1, seed=900)
    host_a.wait_until(lambda: _all_classified_by([new.pk], v2), timeout=120, what="a new upload classified by v2")
    assert f"{v2.artifact_sha256[:2]}/{v2.artifact_sha256}.safetensors" in _cached(tmp_path, "host-a", ".safetensors")

    for host in ("host-a", "host-b"):
        assert local_files(tmp_path / host / "media") == []  # nothing written to, or read from, a media folder
        assert local_files(tmp_path / host / "models") == []  # training's scratch folder is gone too
