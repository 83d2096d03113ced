"""Head refits after a review session (issue 25, item 3): production's stored embeddings, a new head in
seconds, the same gate; the nightly full training still counts the labels."""

from __future__ import annotations

from pathlib import Path

import pytest

from portal.models import ModelVersion, SEMImage, TrainingRun
from portal.services.delivery import maintenance
from portal.services.learning import classification_batch, promotion, training, training_run
from tests.worker_fixtures import (
    MODEL_FOLDERS,
    TrainedArtifact,
    category_name,
    install_model,
    synthetic_derivatives,
    train_artifact,
)

BASE_FOLDERS = MODEL_FOLDERS[:3]  # the base model never saw the fourth category
NEW_FOLDER = MODEL_FOLDERS[3]


@pytest.fixture(scope="module")
def frozen_base(tmp_path_factory) -> TrainedArtifact:
    """The product's frozen-feature recipe (ImageNet Lite0 body, 64 px for speed) on three categories."""
    from classifier.config import TrainConfig

    root = tmp_path_factory.mktemp("frozen-base")
    items = synthetic_derivatives(root, BASE_FOLDERS, range(2000, 2008))
    config = TrainConfig(seed=3, sizes=(64,), epochs=(1,), batch_sizes=(16,))
    return train_artifact(items, config, root / "model.safetensors", classes=[category_name(f) for f in BASE_FOLDERS])


@pytest.fixture
def base_in_production(db, frozen_base, nffa_categories, settings):
    settings.SEM_REFIT_QUIET_S = 0
    settings.SEM_REFIT_MIN_NEW_LABELS = 10
    settings.SEM_RETRAIN_MIN_NEW_LABELS = 10
    settings.SEM_TRAIN_SIZES = [64]
    return install_model(frozen_base, 1, status=ModelVersion.Status.PRODUCTION, with_metadata=True)


def _review_session(sample, user, upload_images, count=48):
    """Curated uploads of all four categories, classified (and embedded) by production."""
    images = upload_images(sample, user, count, labelled=True, seed=300)
    ids = [image.pk for image in images]
    classified = sum(len(classification_batch.classify_images(ids[i : i + 16]).classified) for i in range(0, count, 16))
    assert classified == count
    return images


def test_a_review_session_ends_in_a_head_refit_that_learns_the_new_category(
    base_in_production, sample, user, upload_images
):
    images = _review_session(sample, user, upload_images)
    base = base_in_production
    unembedded = images[:3]
    base.embeddings.filter(image__in=unembedded).delete()  # classified before embeddings were stored, say

    requested = training.refit_after_review()
    assert requested is not None and requested.run is not None
    run = training_run.run_training(requested.run.pk)

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert run.kind == TrainingRun.Kind.HEAD_REFIT and run.trigger == TrainingRun.Trigger.REVIEW
    refit = run.model_version
    curated_train = [image for image in images if image.split == SEMImage.Split.TRAIN]
    assert refit.metadata["refit_of"]["version"] == base.version
    assert refit.metadata["refit_of"]["computed_embeddings"] == sum(i in curated_train for i in unembedded) + sum(
        i.split == SEMImage.Split.TEST for i in unembedded
    )
    assert category_name(NEW_FOLDER) in refit.classes and category_name(NEW_FOLDER) not in base.classes
    assert "head refit" in run.stages[0]["kind"]
    # The gate does not compare models offering other categories: an admin promotes the refit by hand.
    assert refit.status == ModelVersion.Status.REJECTED and "other categories" in refit.gate_reason
    promotion.promote(refit)

    # The backlog re-classified by the refit model answers the new category for its images, from the
    # embeddings v1 stored: their derivatives are not read (gone here), only the three v1 never embedded fail.
    for image in images:
        image.derivative.storage.delete(image.derivative.name)
    while classification_batch.classify_backlog_batch(refit.pk):
        pass
    assert set(SEMImage.objects.filter(status=SEMImage.Status.FAILED).values_list("pk", flat=True)) == {
        image.pk for image in unembedded
    }
    new = SEMImage.objects.filter(curated_category__name=category_name(NEW_FOLDER), predicted_by=refit)
    assert new.count() >= 8
    assert sum(image.predicted_category_id == image.curated_category_id for image in new) >= 0.75 * new.count()
    assert refit.embeddings.count() == len(images) - len(unembedded)  # stored again for similar-image search

    # The session is refitted: the next minutely check queues nothing more.
    assert training.refit_after_review() is None
    # The nightly full training still counts these labels (against the last fully trained model).
    full = training.request_training(trigger=TrainingRun.Trigger.SCHEDULE, enqueue=False)
    assert full.run is not None and full.run.kind == TrainingRun.Kind.FULL


def test_the_gate_compares_a_refit_with_production_on_their_stored_embeddings(
    base_in_production, sample, user, upload_images
):
    """Same categories: the paired bootstrap needs both models' answers on every test image; both come
    from the embeddings production stored (its own, and the refit's base's), so no derivative is decoded
    (here they could not be: overwritten with bytes that are no image)."""
    images = upload_images(sample, user, 36, labelled=True, seed=700, folders=BASE_FOLDERS)
    ids = [image.pk for image in images]
    for start in range(0, len(ids), 16):
        classification_batch.classify_images(ids[start : start + 16])
    for image in images:
        Path(image.derivative.path).write_bytes(b"not an image any more")

    run = training_run.run_training(training.refit_after_review().run.pk)

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    gate = run.model_version.metrics["gate"]
    assert gate["rule"] == "bootstrap", run.model_version.gate_reason


def test_a_heat_map_of_a_default_recipe_model_and_of_its_refit(base_in_production, sample, user, upload_images):
    """The default recipe's artifact carries the out-of-scope bank (and a refit's its base statistics)
    beside the network: Grad-CAM loads the network alone (it failed on every such model before)."""
    from portal.models import HeatMap
    from portal.services.learning import heatmaps

    images = _review_session(sample, user, upload_images, count=16)
    first = heatmaps.request_heatmap(images[0], base_in_production)
    assert heatmaps.compute_heatmap(first.pk) == HeatMap.Status.READY, HeatMap.objects.get(pk=first.pk).error

    refit = training_run.run_training(training.request_head_refit(trigger="command", force=True).run.pk).model_version
    second = heatmaps.request_heatmap(images[1], refit)
    assert heatmaps.compute_heatmap(second.pk) == HeatMap.Status.READY, HeatMap.objects.get(pk=second.pk).error


def test_no_refit_while_the_session_goes_on_or_with_too_few_labels(
    base_in_production, sample, user, upload_images, settings
):
    settings.SEM_REFIT_QUIET_S = 3600
    _review_session(sample, user, upload_images, count=12)
    assert training.refit_after_review() is None  # the last label is seconds old

    settings.SEM_REFIT_QUIET_S = 0
    settings.SEM_REFIT_MIN_NEW_LABELS = 40
    assert training.refit_after_review() is None  # 12 labels, 40 needed
    refused = training.request_head_refit(trigger=TrainingRun.Trigger.COMMAND)
    assert refused.run is None and refused.refusal == "no_new_labels" and "40 needed" in refused.reason
    assert not TrainingRun.objects.exists()

    settings.SEM_REFIT_MIN_NEW_LABELS = 0  # off
    assert training.refit_after_review() is None


def test_a_fine_tuned_production_model_is_not_refitted(production_model, nffa_categories):
    requested = training.request_head_refit(trigger=TrainingRun.Trigger.COMMAND, force=True)
    assert requested.refusal == "refit_unavailable" and "not a frozen-feature model" in requested.reason
    assert not TrainingRun.objects.exists()


@pytest.mark.slow
def test_the_minutely_sweep_queues_the_refit_and_a_worker_runs_it(
    worker_factory, frozen_base, nffa_categories, sample, user, upload_images, settings
):
    settings.SEM_TRAIN_SIZES = [64]
    model = install_model(frozen_base, 1, status=ModelVersion.Status.PRODUCTION, with_metadata=True)
    worker = worker_factory(SEM_REFIT_QUIET_S=0, SEM_REFIT_MIN_NEW_LABELS=10, SEM_TRAIN_SIZES=[64])
    images = upload_images(sample, user, 24, labelled=True, seed=500)  # the worker classifies them
    worker.wait_until(
        lambda: SEMImage.objects.filter(pk__in=[i.pk for i in images], predicted_by=model).count() == 24,
        timeout=300,
    )

    assert maintenance.sweep()["head_refit_queued"] is True

    worker.wait_until(
        lambda: TrainingRun.objects.filter(kind="head_refit", status=TrainingRun.Status.SUCCEEDED).exists(),
        timeout=300,
    )
    run = TrainingRun.objects.get(kind="head_refit")
    assert run.model_version.metadata["refit_of"]["computed_embeddings"] == 0
    assert "gate" in run.model_version.metrics
