"""Training service in-process: when to train, the lock, a real tiny training, failures, the gate."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from classifier.fingerprint import file_sha256
from portal.models import ModelVersion, Prediction, SEMImage, TrainingRun
from portal.services.curation.labels import set_label
from portal.services.learning import classification_batch, promotion, training, training_run, training_sweep
from tests.worker_fixtures import TINY_TRAIN_CONFIG, install_model, request_training_twice_at_once

TINY_SETTINGS = {"SEM_TRAIN_ARCH": "resnet18", "SEM_TRAIN_SIZES": [32, 48], "SEM_TRAIN_EPOCHS": [1, 1]}


@pytest.fixture
def tiny_training(settings):
    for name, value in TINY_SETTINGS.items():
        setattr(settings, name, value)
    settings.SEM_GATE_FIRST_MODEL_FLOOR = 0.0
    return settings


def _train_now(**request) -> TrainingRun:
    run = training.request_training(trigger=TrainingRun.Trigger.COMMAND, force=True, enqueue=False, **request).run
    assert run is not None
    training_run.run_training(run.pk)
    return TrainingRun.objects.select_related("model_version").get(pk=run.pk)


# --- Real training -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_first_training_records_everything_and_promotes_v1(tiny_training, sample, user, upload_images):
    images = upload_images(sample, user, 20, labelled=True)
    train_count = sum(image.split == SEMImage.Split.TRAIN for image in images)

    run = _train_now()

    model = run.model_version
    assert run.status == TrainingRun.Status.SUCCEEDED and run.active is None and run.error == ""
    assert run.train_image_count == train_count == model.train_image_count
    assert run.config["sizes"] == [32, 48] and run.config["arch"] == "resnet18"
    assert run.progress_fraction == 1.0 and run.progress["event"] == "done"
    assert [stage["size"] for stage in run.stages] == [32, 48]  # progressive resizing, per-stage summaries
    assert [stage["epochs"] for stage in run.stages] == [1, 1]
    # The epoch events stay after the run: one per epoch, the same losses as the summaries' results.
    assert [(e["event"], e["stage"], e["epochs"]) for e in run.history] == [("epoch_end", 0, 1), ("epoch_end", 1, 1)]
    assert [e["train_loss"] for e in run.history] == [s["epoch_results"][0]["train_loss"] for s in run.stages]
    assert all(event["train_loss"] is not None for event in run.history)
    assert run.duration_s > 0 and run.device == "cpu" and "train and" in run.log
    assert model.version == 1 and model.status == ModelVersion.Status.PRODUCTION and model.gate_passed
    assert Path(model.artifact_path) == Path(tiny_training.MODEL_DIR) / "v1" / "model.safetensors"
    assert file_sha256(model.artifact_path) == model.artifact_sha256
    assert set(model.classes) == {image.curated_category.name for image in images if image.split == "train"}
    assert "macro_avg" in model.metrics and "per_class" in model.metrics
    assert model.data_fingerprint == run.data_fingerprint != ""
    labels = json.loads((Path(model.artifact_path).parent / training.LABEL_SET_FILE).read_text())
    assert len(labels) == train_count
    assert not (Path(tiny_training.MODEL_DIR) / f"run-{run.pk}").exists()


@pytest.mark.slow
def test_retraining_waits_for_enough_new_labels(tiny_training, sample, user, upload_images, nffa_categories):
    tiny_training.SEM_RETRAIN_MIN_NEW_LABELS = 3
    images = upload_images(sample, user, 16, labelled=True)
    _train_now()

    assert training.new_label_count() == 0
    assert training.request_training(trigger=TrainingRun.Trigger.SCHEDULE).refusal == "no_new_labels"
    skipped = TrainingRun.objects.get(status=TrainingRun.Status.SKIPPED)
    assert "0 new or changed" in skipped.log and skipped.active is None

    train_images = [image for image in images if image.split == SEMImage.Split.TRAIN]
    for image in train_images[:2]:  # two corrections: not enough yet
        set_label(image, nffa_categories["Tips"], source="review", user=user)
    assert training.new_label_count() == 2
    assert training.request_training(trigger=TrainingRun.Trigger.SCHEDULE).refusal == "no_new_labels"

    set_label(train_images[2], nffa_categories["Powder"], source="review", user=user)
    run = training.request_training(trigger=TrainingRun.Trigger.SCHEDULE, enqueue=False).run
    assert run is not None and run.status == TrainingRun.Status.QUEUED and run.active is True


def test_new_labels_are_counted_against_the_newest_model_when_none_is_in_production(
    trained_artifact, sample, user, upload_images, settings
):
    upload_images(sample, user, 8, labelled=True)
    assert training.new_label_count() == SEMImage.objects.filter(split=SEMImage.Split.TRAIN).count()
    rejected = install_model(trained_artifact, 1, status=ModelVersion.Status.REJECTED)
    (Path(rejected.artifact_path).parent / training.LABEL_SET_FILE).write_text(
        json.dumps(training.current_train_labels())
    )

    assert training.new_label_count() == 0


# --- Failures leave production alone -------------------------------------------------------------------------


def _classified_production(production_model, sample, user, upload_images):
    images = upload_images(sample, user, 6, labelled=True)
    classification_batch.classify_images([image.pk for image in images])
    return {p.image_id: (p.category_id, p.confidence) for p in Prediction.objects.all()}


def _assert_production_untouched(production_model, predictions_before):
    production_model.refresh_from_db()
    assert production_model.status == ModelVersion.Status.PRODUCTION
    assert ModelVersion.objects.count() == 1
    assert {p.image_id: (p.category_id, p.confidence) for p in Prediction.objects.all()} == predictions_before
    assert set(SEMImage.objects.values_list("predicted_by", flat=True)) == {production_model.pk}
    assert training.active_run() is None  # the lock is released


def test_a_failing_training_leaves_production_untouched(production_model, tiny_training, sample, user, upload_images):
    before = _classified_production(production_model, sample, user, upload_images)

    run = _train_now(config={"arch": "no-such-architecture"})

    assert run.status == TrainingRun.Status.FAILED and run.finished_at is not None
    assert "no-such-architecture" in run.error
    assert "Traceback" in run.log
    _assert_production_untouched(production_model, before)


@pytest.mark.slow
def test_a_timed_out_training_is_stopped_and_recorded(production_model, tiny_training, sample, user, upload_images):
    before = _classified_production(production_model, sample, user, upload_images)
    tiny_training.SEM_TRAINING_TIMEOUT_S = 0

    run = _train_now()

    assert run.status == TrainingRun.Status.FAILED and run.error.startswith("Timed out")
    _assert_production_untouched(production_model, before)


@pytest.mark.slow
def test_a_cancelled_training_is_recorded_as_cancelled(production_model, tiny_training, sample, user, upload_images):
    before = _classified_production(production_model, sample, user, upload_images)
    run = training.request_training(trigger=TrainingRun.Trigger.MANUAL, force=True, enqueue=False).run
    run = training_run.claim_run(run.pk)  # running now: cancellation is polled between batches
    assert training.request_cancel(run)

    training_run.execute_run(run)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED and run.active is None
    assert run.error == "Cancelled by an admin" and run.finished_at is not None
    _assert_production_untouched(production_model, before)


def test_cancelling_a_queued_run_releases_the_lock_at_once(db):
    run = training.request_training(trigger=TrainingRun.Trigger.MANUAL, force=True, enqueue=False).run

    assert training.request_cancel(run)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED and run.active is None
    assert training_run.run_training(run.pk) is None  # its message, when it arrives, does nothing
    assert training.active_run() is None


def test_the_sweeper_fails_a_run_whose_worker_died(db, settings):
    long_ago = timezone.now() - timedelta(seconds=settings.SEM_TRAINING_STALE_AFTER_S + 1)
    run = TrainingRun.objects.create(
        trigger=TrainingRun.Trigger.SCHEDULE,
        status=TrainingRun.Status.RUNNING,
        started_at=long_ago,
        heartbeat_at=long_ago,
    )

    assert training_sweep.fail_stale_runs() == 1

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED and run.active is None
    assert run.error.startswith("Worker lost")
    assert training.request_training(trigger=TrainingRun.Trigger.MANUAL, force=True, enqueue=False).run is not None


def test_a_refused_request_says_why(db, settings):
    settings.SEM_RETRAIN_MIN_NEW_LABELS = 5
    too_few = training.request_training(trigger=TrainingRun.Trigger.MANUAL, enqueue=False)
    assert (too_few.run, too_few.refusal, too_few.new_labels) == (None, "no_new_labels", 0)
    active = TrainingRun.objects.create(trigger=TrainingRun.Trigger.MANUAL)
    busy = training.request_training(trigger=TrainingRun.Trigger.MANUAL, force=True, enqueue=False)
    assert (busy.run, busy.refusal, busy.active) == (None, "training_active", active)
    assert busy.reason == f"Training run {active.pk} is already queued."


def test_a_run_is_claimed_once_however_often_its_message_arrives(db):
    run = TrainingRun.objects.create(trigger=TrainingRun.Trigger.MANUAL)

    assert training_run.claim_run(run.pk) is not None
    assert training_run.claim_run(run.pk) is None
    assert training_run.run_training(run.pk) is None  # a redelivered message does nothing


# --- The lock ----------------------------------------------------------------------------------------------


def test_two_simultaneous_triggers_give_one_run(transactional_db):
    for attempt in range(3):
        results = request_training_twice_at_once()
        started = [run for run in results if run is not None]
        assert len(started) == 1, f"attempt {attempt}: {results}"
        assert TrainingRun.objects.filter(active=True).count() == 1
        TrainingRun.objects.update(active=None, status=TrainingRun.Status.FAILED)


# --- Promotion gate, promote, roll back -----------------------------------------------------------------------


def _metrics(macro_f1: float, recalls: dict[str, float]) -> dict:
    return {
        "macro_avg": {"f1": macro_f1, "precision": macro_f1, "recall": macro_f1},
        "per_class": {name: {"precision": r, "recall": r, "f1": r, "support": 10} for name, r in recalls.items()},
    }


PRODUCTION_METRICS = _metrics(0.80, {"Fibres": 0.8, "Particles": 0.8, "Patterned surfaces": 0.8, "Porous sponge": 0.8})


@pytest.mark.parametrize(
    ("candidate", "passes", "reason"),
    [
        (
            _metrics(0.85, {"Fibres": 0.9, "Particles": 0.8, "Patterned surfaces": 0.8, "Porous sponge": 0.8}),
            True,
            "no class",
        ),
        (
            _metrics(0.80, {"Fibres": 0.76, "Particles": 0.8, "Patterned surfaces": 0.8, "Porous sponge": 0.8}),
            True,
            "no class",
        ),
        (
            _metrics(0.79, {"Fibres": 0.9, "Particles": 0.9, "Patterned surfaces": 0.9, "Porous sponge": 0.9}),
            False,
            "below",
        ),
        (
            _metrics(0.90, {"Fibres": 0.7, "Particles": 1.0, "Patterned surfaces": 1.0, "Porous sponge": 1.0}),
            False,
            "Fibres 10.0",
        ),
        (_metrics(0.90, {"Fibres": 1.0, "Particles": 1.0, "Patterned surfaces": 1.0}), False, "Porous sponge 80.0"),
    ],
)
def test_gate_decision(settings, candidate, passes, reason):
    settings.SEM_GATE_MACRO_F1_TOLERANCE = 0.0
    settings.SEM_GATE_MAX_RECALL_DROP = 0.05

    decision = promotion.gate_decision(candidate, PRODUCTION_METRICS)

    assert decision.rule == "point" and decision.passed is passes and reason in decision.reason


def test_gate_tolerance_and_first_model_floor(settings):
    settings.SEM_GATE_MACRO_F1_TOLERANCE = 0.02
    settings.SEM_GATE_FIRST_MODEL_FLOOR = 0.5
    slightly_worse = _metrics(0.79, {name: 0.8 for name in PRODUCTION_METRICS["per_class"]})

    assert promotion.gate_decision(slightly_worse, PRODUCTION_METRICS).passed is True
    two_classes = {"Fibres": 0.5, "Particles": 0.5}
    refused = promotion.gate_decision(_metrics(0.49, two_classes), None)
    assert (refused.passed, refused.reason) == (
        False,
        "First model: macro-F1 49.0\u00a0% is below the floor 50.0\u00a0%",
    )
    assert promotion.gate_decision(_metrics(0.51, two_classes), None).passed is True


def test_gate_refuses_a_worse_candidate_and_promotes_a_better_one(
    trained_artifact, nffa_categories, settings, django_capture_on_commit_callbacks, monkeypatch
):
    production = install_model(trained_artifact, 1, status=ModelVersion.Status.PRODUCTION, metrics=PRODUCTION_METRICS)
    # The point rule (no per-image predictions): production as evaluated on today's test split.
    monkeypatch.setattr(promotion, "production_metrics_on_current_test_split", lambda *models: (PRODUCTION_METRICS, ""))
    worse = install_model(
        trained_artifact,
        2,
        status=ModelVersion.Status.CANDIDATE,
        metrics=_metrics(0.70, {name: 0.7 for name in PRODUCTION_METRICS["per_class"]}),
    )
    better = install_model(
        trained_artifact,
        3,
        status=ModelVersion.Status.CANDIDATE,
        metrics=_metrics(0.90, {name: 0.9 for name in PRODUCTION_METRICS["per_class"]}),
    )

    assert promotion.apply_gate(worse) is False
    worse.refresh_from_db(), production.refresh_from_db()
    assert worse.status == ModelVersion.Status.REJECTED and worse.gate_passed is False
    assert "below production's 80.0\u00a0%" in worse.gate_reason
    assert production.status == ModelVersion.Status.PRODUCTION

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert promotion.apply_gate(better) is True
    better.refresh_from_db(), production.refresh_from_db()
    assert better.status == ModelVersion.Status.PRODUCTION and better.promoted_at is not None
    assert production.status == ModelVersion.Status.RETIRED
    assert len(callbacks) == 2  # the model.promoted event and the background re-classification


def test_admin_promotes_a_rejected_model_and_rolls_back(trained_artifact, nffa_categories, admin_user):
    first = install_model(trained_artifact, 1, status=ModelVersion.Status.PRODUCTION)
    second = install_model(trained_artifact, 2, status=ModelVersion.Status.REJECTED)

    promotion.promote(second, admin_user)
    first.refresh_from_db(), second.refresh_from_db()
    assert (first.status, second.status) == (ModelVersion.Status.RETIRED, ModelVersion.Status.PRODUCTION)
    assert second.promoted_by == admin_user

    restored = promotion.rollback(admin_user)
    second.refresh_from_db()
    assert restored.pk == first.pk and restored.status == ModelVersion.Status.PRODUCTION
    assert second.status == ModelVersion.Status.REJECTED and "Rolled back to v1 by admin" in second.gate_reason
    with pytest.raises(promotion.ModelActionError, match="No earlier production model"):
        promotion.rollback(admin_user)


def test_promotion_refuses_a_model_whose_artifact_is_gone(trained_artifact, nffa_categories):
    candidate = install_model(trained_artifact, 1, status=ModelVersion.Status.CANDIDATE)
    Path(candidate.artifact_path).unlink()

    with pytest.raises(promotion.ModelActionError, match="artifact file is missing"):
        promotion.promote(candidate)
    assert not ModelVersion.objects.filter(status=ModelVersion.Status.PRODUCTION).exists()


def test_production_is_re_evaluated_on_the_current_test_split(production_model, sample, user, upload_images):
    images = upload_images(sample, user, 24, labelled=True)
    test_images = [image for image in images if image.split == SEMImage.Split.TEST]
    candidate = install_model_like(production_model)

    evaluation, why_not = promotion.production_metrics_on_current_test_split(production_model, candidate)

    assert test_images, "the synthetic seeds are fixed, so some uploads always land in the test split"
    assert why_not == "" and evaluation is not production_model.metrics
    assert evaluation["n"] == len(test_images)
    assert set(evaluation["per_class"]) == set(production_model.classes)


def test_the_gate_refuses_to_compare_with_stored_metrics_from_another_split(
    production_model, sample, user, upload_images
):
    """Issue 15, item 5: production that cannot be evaluated on today's test split is not compared
    through its stored metrics (another split): the candidate is not promoted, and the reason says why."""
    upload_images(sample, user, 24, labelled=True)
    Path(production_model.artifact_path).unlink()
    candidate = install_model_like(production_model)

    evaluation, why_not = promotion.production_metrics_on_current_test_split(production_model, candidate)

    assert evaluation is None and "could not be evaluated on the current test split" in why_not


def install_model_like(model: ModelVersion) -> ModelVersion:
    return ModelVersion(version=model.version + 1, classes=list(model.classes), metrics={})


def test_training_config_comes_from_settings_with_per_run_overrides(tiny_training):
    config = training.training_config({"seed": 7})

    assert config["arch"] == TINY_TRAIN_CONFIG["arch"] and config["sizes"] == [32, 48]
    assert config["epochs"] == [1, 1] and len(config["batch_sizes"]) == len(config["lrs"]) == 2
    assert config["seed"] == 7
