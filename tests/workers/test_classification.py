"""Classification service, in-process (the worker tests run the same code in real worker processes)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from portal.models import ModelVersion, Prediction, SEMImage
from portal.services.learning import (
    artifacts,
    classification,
    classification_batch,
    classification_inference,
    classification_results,
    classification_sweep,
)


def _reload(images):
    return list(SEMImage.objects.filter(pk__in=[image.pk for image in images]).order_by("pk"))


def test_batch_writes_predictions_and_denormalised_columns(production_model, sample, user, upload_images):
    images = upload_images(sample, user, 3)

    outcome = classification_batch.classify_images([image.pk for image in images])

    assert sorted(outcome.classified) == sorted(image.pk for image in images)
    for image in _reload(images):
        prediction = Prediction.objects.get(image=image, model_version=production_model)
        assert image.status == SEMImage.Status.CLASSIFIED
        assert image.predicted_by_id == production_model.pk
        assert image.predicted_category_id == prediction.category_id
        assert image.predicted_confidence == pytest.approx(prediction.confidence)
        assert image.claimed_at is None and image.classify_attempts == 1
        assert set(prediction.probabilities) == set(production_model.classes)  # jsonb keeps no key order
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        assert prediction.confidence == pytest.approx(max(prediction.probabilities.values()))
        assert 0.0 <= prediction.margin <= prediction.confidence
        assert prediction.entropy >= 0.0


def test_a_second_delivery_of_the_same_batch_writes_nothing(production_model, sample, user, upload_images):
    ids = [image.pk for image in upload_images(sample, user, 2)]
    classification_batch.classify_images(ids)

    again = classification_batch.classify_images(ids)

    assert again.claimed == 0
    assert Prediction.objects.filter(image_id__in=ids).count() == 2


def test_a_message_for_one_upload_takes_other_pending_uploads_into_its_batch(
    production_model, sample, user, upload_images, settings
):
    settings.SEM_CLASSIFY_BATCH_SIZE = 3
    images = upload_images(sample, user, 5)

    outcome = classification_batch.classify_images([images[-1].pk])

    assert images[-1].pk in outcome.classified
    assert len(outcome.classified) == 3  # the message's image plus the two oldest pending ones
    assert set(outcome.classified) - {images[-1].pk} == {images[0].pk, images[1].pk}


def test_without_a_production_model_images_wait_for_one(sample, user, upload_images):
    images = upload_images(sample, user, 2)

    outcome = classification_batch.classify_images([image.pk for image in images])

    assert outcome.parked == 2
    assert {image.status for image in _reload(images)} == {SEMImage.Status.NO_MODEL}


def test_claims_are_exclusive_until_they_go_stale(production_model, sample, user, upload_images, settings):
    ids = [image.pk for image in upload_images(sample, user, 3)]

    first = classification.claim(ids, production_model)
    second = classification.claim(ids, production_model)
    SEMImage.objects.filter(pk__in=ids).update(
        claimed_at=timezone.now() - timedelta(seconds=settings.SEM_PENDING_SWEEP_AFTER_S + 1)
    )
    after_expiry = classification.claim(ids, production_model)

    assert sorted(image.pk for image in first) == sorted(ids)
    assert second == []
    assert sorted(image.pk for image in after_expiry) == sorted(ids)


def test_bad_derivatives_fail_only_their_own_image(production_model, sample, user, upload_images, caplog):
    good, corrupt, missing = upload_images(sample, user, 3)
    with open(corrupt.derivative.path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n not really a png")
    missing.derivative.storage.delete(missing.derivative.name)

    outcome = classification_batch.classify_images([good.pk, corrupt.pk, missing.pk])

    good, corrupt, missing = _reload([good, corrupt, missing])
    assert outcome.classified == [good.pk]
    assert good.status == SEMImage.Status.CLASSIFIED
    assert corrupt.status == missing.status == SEMImage.Status.FAILED
    assert "Could not classify" in corrupt.error and "missing" in missing.error
    assert not Prediction.objects.filter(image__in=[corrupt, missing]).exists()
    # The batch's own exception is logged with its traceback before the one-by-one retry (issue 15).
    batch_failure = [record for record in caplog.records if "classification batch of 2 images failed" in record.message]
    assert len(batch_failure) == 1 and batch_failure[0].exc_info is not None


def test_an_image_deleted_during_classification_is_skipped(production_model, sample, user, upload_images):
    kept, deleted = upload_images(sample, user, 2)
    claimed = classification.claim([kept.pk, deleted.pk], production_model)
    engine = artifacts.load_engine(production_model)
    results = classification_inference.predict(engine, claimed)
    SEMImage.objects.filter(pk=deleted.pk).delete()

    outcome = classification_results.save_results(production_model, engine.classes, results)

    assert outcome.classified == [kept.pk]
    assert Prediction.objects.filter(image_id=kept.pk).count() == 1


def test_a_broken_model_releases_the_claims(production_model, sample, user, upload_images):
    ids = [image.pk for image in upload_images(sample, user, 2)]
    with open(production_model.artifact_path, "r+b") as handle:
        handle.write(b"garbage!")

    from classifier.artifact import ArtifactError
    from classifier.engine import clear_engine_cache

    clear_engine_cache()
    with pytest.raises(ArtifactError):
        classification_batch.classify_images(ids)
    clear_engine_cache()

    assert all(
        image.claimed_at is None and image.status == SEMImage.Status.PENDING
        for image in SEMImage.objects.filter(pk__in=ids)
    )


def test_sweeper_requeues_only_images_pending_too_long(
    sample, user, upload_images, settings, django_capture_on_commit_callbacks
):
    fresh, stale, stale_but_held = upload_images(sample, user, 3)
    long_ago = timezone.now() - timedelta(seconds=settings.SEM_PENDING_SWEEP_AFTER_S + 5)
    SEMImage.objects.filter(pk__in=[stale.pk, stale_but_held.pk]).update(status_changed_at=long_ago)
    SEMImage.objects.filter(pk=stale_but_held.pk).update(claimed_at=timezone.now())

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        requeued = classification_sweep.sweep_stale_images()

    assert requeued == 1
    assert len(callbacks) == 1  # one enqueue after commit
    stale.refresh_from_db()
    assert stale.status_changed_at > long_ago  # not re-queued again by the next pass
    assert classification_sweep.sweep_stale_images() == 0


def test_backlog_covers_waiting_images_and_older_models_predictions(
    production_model, trained_artifact, sample, user, upload_images, settings
):
    from tests.worker_fixtures import install_model

    images = upload_images(sample, user, 4)
    classification_batch.classify_images([image.pk for image in images])
    SEMImage.objects.filter(pk=images[0].pk).update(status=SEMImage.Status.NO_MODEL)
    newer = install_model(trained_artifact, 2, status=ModelVersion.Status.CANDIDATE)

    settings.SEM_RECLASSIFY_AFTER_PROMOTION = False
    assert set(classification.needing(newer).values_list("pk", flat=True)) == {images[0].pk}
    settings.SEM_RECLASSIFY_AFTER_PROMOTION = True
    assert set(classification.needing(newer).values_list("pk", flat=True)) == {image.pk for image in images}
    assert set(classification.needing(production_model).values_list("pk", flat=True)) == {images[0].pk}


def test_backlog_batches_stop_when_the_model_is_no_longer_production(
    production_model, sample, user, upload_images, settings
):
    settings.SEM_CLASSIFY_BATCH_SIZE = 2
    images = upload_images(sample, user, 3)
    SEMImage.objects.filter(pk__in=[image.pk for image in images]).update(status=SEMImage.Status.NO_MODEL)

    assert classification_batch.classify_backlog_batch(production_model.pk) is True
    assert classification_batch.classify_backlog_batch(production_model.pk) is False
    assert SEMImage.objects.filter(status=SEMImage.Status.CLASSIFIED).count() == 3
    assert classification_batch.classify_backlog_batch(production_model.pk + 1) is False


def test_rolled_back_model_reuses_its_stored_predictions(production_model, sample, user, upload_images):
    images = upload_images(sample, user, 2)
    classification_batch.classify_images([image.pk for image in images])
    before = {p.image_id: p.confidence for p in Prediction.objects.all()}
    SEMImage.objects.filter(pk__in=before).update(
        status=SEMImage.Status.PENDING, predicted_by=None, predicted_confidence=None
    )

    outcome = classification_batch.classify_images(list(before))

    assert sorted(outcome.classified) == sorted(before)
    assert Prediction.objects.count() == 2
    for image in SEMImage.objects.filter(pk__in=before):
        assert image.predicted_confidence == pytest.approx(before[image.pk])


def test_an_old_format_artifact_loads_once_and_is_rewritten(
    production_model, sample, user, upload_images, django_capture_on_commit_callbacks
):
    """Issue 15: a format version 1 artifact (torch pickle) of a registered model is upgraded to the
    safetensors format before the worker loads it; the row points at the new file, the old one goes."""
    from pathlib import Path

    from classifier.artifact import format_version, load_artifact, read_metadata
    from classifier.engine import clear_engine_cache
    from tests.worker_fixtures import write_legacy_artifact

    current = load_artifact(production_model.artifact_path, production_model.artifact_sha256)
    old_path = Path(production_model.artifact_path).with_name("model.pth")
    Path(production_model.artifact_path).unlink()
    old_sha = write_legacy_artifact(old_path, current.state_dict, current.metadata)
    ModelVersion.objects.filter(pk=production_model.pk).update(artifact_path=str(old_path), artifact_sha256=old_sha)
    clear_engine_cache()
    [image] = upload_images(sample, user, 1)

    with django_capture_on_commit_callbacks(execute=True):
        outcome = classification_batch.classify_images([image.pk])

    assert outcome.classified == [image.pk]
    model = ModelVersion.objects.get(pk=production_model.pk)
    assert Path(model.artifact_path) == old_path.with_suffix(".safetensors") and model.artifact_sha256 != old_sha
    assert format_version(model.artifact_path) == 2 and not old_path.exists()
    assert read_metadata(model.artifact_path)["classes"] == current.metadata["classes"]
    # Next time it is the new file, loaded as it is.
    clear_engine_cache()
    assert artifacts.load_engine(model).classes == current.metadata["classes"]


def test_a_replaced_old_format_artifact_is_never_unpickled(production_model, monkeypatch):
    from pathlib import Path

    import torch

    from classifier.artifact import ArtifactError, load_artifact
    from portal.services.learning.artifacts import ensure_current_format
    from tests.worker_fixtures import write_legacy_artifact

    current = load_artifact(production_model.artifact_path, production_model.artifact_sha256)
    old_path = Path(production_model.artifact_path).with_name("model.pth")
    write_legacy_artifact(old_path, current.state_dict, current.metadata)
    ModelVersion.objects.filter(pk=production_model.pk).update(artifact_path=str(old_path))  # sha of another file
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("unpickled a file that does not match"))
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        ensure_current_format(ModelVersion.objects.get(pk=production_model.pk))
    assert old_path.exists()


def test_a_batch_whose_model_was_demoted_meanwhile_writes_nothing_and_hands_its_images_back(
    production_model, trained_artifact, sample, user, upload_images, django_capture_on_commit_callbacks
):
    from portal.services.learning import promotion
    from tests.worker_fixtures import install_model

    ids = [image.pk for image in upload_images(sample, user, 2)]
    claimed = classification.claim(ids, production_model)
    engine = artifacts.load_engine(production_model)
    results = classification_inference.predict(engine, claimed)
    newer = install_model(trained_artifact, 2, status=ModelVersion.Status.CANDIDATE)
    promotion.promote(newer)  # while the batch computed

    with django_capture_on_commit_callbacks() as callbacks:
        outcome = classification_results.save_results(production_model, engine.classes, results)

    assert outcome.claimed == 0 and not Prediction.objects.filter(image_id__in=ids).exists()
    assert (
        list(SEMImage.objects.filter(pk__in=ids).values_list("status", "predicted_by", "claimed_at"))
        == [(SEMImage.Status.PENDING, None, None)] * 2
    )
    assert len(callbacks) == 1  # production's re-classification is queued for them


def test_classification_flags_a_blank_derivative_stored_before_ingestion_did(
    production_model, sample, user, upload_images
):
    import io

    from PIL import Image

    [image] = upload_images(sample, user, 1)
    black = io.BytesIO()
    Image.new("L", (256, 192), 0).save(black, format="PNG")
    with open(image.derivative.path, "wb") as derivative:  # an image ingested before blank frames were flagged
        derivative.write(black.getvalue())
    assert SEMImage.objects.get(pk=image.pk).blank is False

    classification_batch.classify_images([image.pk])

    image.refresh_from_db()
    assert image.blank is True and image.status == SEMImage.Status.OUT_OF_SCOPE  # nothing in it to classify
