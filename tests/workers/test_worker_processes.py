"""The workers as they run in production: real `celery worker` processes on Redis, never eager mode."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from portal.models import ModelVersion, Prediction, SEMImage, TrainingRun, WebhookDelivery, WebhookSubscription
from portal.services.learning import promotion, training, training_sweep
from tests.worker_fixtures import install_model, request_training_twice_at_once

pytestmark = [pytest.mark.worker, pytest.mark.slow]

TINY_TRAINING = {"SEM_TRAIN_ARCH": "resnet18", "SEM_TRAIN_SIZES": [32, 48], "SEM_TRAIN_EPOCHS": [1, 1]}


def _statuses(ids) -> dict[str, int]:
    rows = SEMImage.objects.filter(pk__in=ids).values("status").annotate(n=Count("pk"))
    return {row["status"]: row["n"] for row in rows}


def _all_have(ids, status) -> bool:
    return _statuses(ids) == {status: len(ids)}


def test_an_upload_is_classified_by_a_worker(celery_worker, production_model, sample, user, upload_images, admin_user):
    WebhookSubscription.objects.create(
        owner=admin_user, url="http://127.0.0.1:9/hook", events=["image.classified"], secret="s3cret"
    )
    images = upload_images(sample, user, 3)
    ids = [image.pk for image in images]

    celery_worker.wait_until(lambda: _all_have(ids, SEMImage.Status.CLASSIFIED), what="3 classified images")

    for image in SEMImage.objects.filter(pk__in=ids):
        prediction = Prediction.objects.get(image=image)
        assert prediction.model_version_id == production_model.pk == image.predicted_by_id
        assert image.predicted_category_id == prediction.category_id
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    # The worker emitted image.classified after its commit; the webhook listener made deliveries.
    celery_worker.wait_until(
        lambda: WebhookDelivery.objects.filter(event="image.classified").exists(),
        what="an image.classified webhook delivery",
    )


def test_images_wait_for_the_first_model_and_are_classified_once_it_is_promoted(
    celery_worker, trained_artifact, sample, user, upload_images
):
    ids = [image.pk for image in upload_images(sample, user, 4)]
    celery_worker.wait_until(lambda: _all_have(ids, SEMImage.Status.NO_MODEL), what="images waiting for a model")

    candidate = install_model(trained_artifact, 1, status=ModelVersion.Status.CANDIDATE)
    promotion.promote(candidate)

    celery_worker.wait_until(lambda: _all_have(ids, SEMImage.Status.CLASSIFIED), what="backlog classified")
    assert Prediction.objects.filter(image_id__in=ids, model_version=candidate).count() == 4


def test_a_worker_killed_mid_batch_loses_nothing_and_classifies_nothing_twice(
    worker_factory, production_model, sample, user, upload_images, settings
):
    worker = worker_factory(start=False, SEM_CLASSIFY_BATCH_SIZE=50)
    ids = [image.pk for image in upload_images(sample, user, 50)]  # 50 messages wait in Redis
    with _blocked_prediction_inserts():
        worker.start()
        # The worker has claimed the whole batch and computed it; its insert waits on our lock.
        worker.wait_until(
            lambda: SEMImage.objects.filter(pk__in=ids, claimed_at__isnull=False).count() == 50,
            what="the batch of 50 claimed",
        )
        worker.wait_until(_a_worker_waits_on_a_lock, what="the worker blocked while saving")
        worker.kill9()
        _terminate_backends_waiting_on_locks()  # what PostgreSQL does once it notices the dead client
    assert _all_have(ids, SEMImage.Status.PENDING) and not Prediction.objects.exists()

    # The dead worker's claims keep others off the images until they go stale: let time pass.
    SEMImage.objects.filter(pk__in=ids).update(
        claimed_at=timezone.now() - timedelta(hours=1), status_changed_at=timezone.now() - timedelta(hours=1)
    )
    worker.start()
    from workers.tasks import sweep

    sweep.delay()  # as beat does every minute; the killed batch's own message waits for the visibility timeout
    worker.wait_until(lambda: _all_have(ids, SEMImage.Status.CLASSIFIED), what="all 50 classified")

    per_image = Prediction.objects.filter(image_id__in=ids).values("image_id", "model_version").annotate(n=Count("pk"))
    assert len(per_image) == 50 and {row["n"] for row in per_image} == {1}
    assert {row["model_version"] for row in per_image} == {production_model.pk}


class _blocked_prediction_inserts:
    """Hold a SHARE lock on the prediction table from another connection: reads pass, inserts wait."""

    def __enter__(self):
        params = connection.settings_dict
        self.connection = psycopg.connect(
            host=params["HOST"] or "127.0.0.1",
            port=params["PORT"] or 5432,
            user=params["USER"],
            password=params["PASSWORD"] or None,
            dbname=params["NAME"],
        )
        self.connection.execute("LOCK TABLE portal_prediction IN SHARE MODE")
        return self

    def __exit__(self, *exc):
        self.connection.rollback()
        self.connection.close()


WAITING_ON_PREDICTION_LOCK = (
    "FROM pg_stat_activity WHERE datname = current_database() "
    "AND wait_event_type = 'Lock' AND query ILIKE '%%portal_prediction%%'"
)


def _a_worker_waits_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) " + WAITING_ON_PREDICTION_LOCK)
        return cursor.fetchone()[0] > 0


def _terminate_backends_waiting_on_locks() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) " + WAITING_ON_PREDICTION_LOCK)


def test_images_whose_messages_were_lost_are_recovered_by_the_sweeper(
    worker_factory, production_model, sample, user, upload_images
):
    from tests.worker_fixtures import purge_broker
    from workers.tasks import sweep

    worker = worker_factory(start=False)
    ids = [image.pk for image in upload_images(sample, user, 5)]
    purge_broker(settings_broker_url())  # the broker restarted and forgot its queues
    worker.start()
    sweep.delay()  # a sweep too early changes nothing: the images are not overdue yet
    worker.wait_until(lambda: _task_succeeded(worker, "workers.sweep"), what="the first sweep")
    assert _all_have(ids, SEMImage.Status.PENDING)

    SEMImage.objects.filter(pk__in=ids).update(status_changed_at=timezone.now() - timedelta(hours=1))
    sweep.delay()

    worker.wait_until(lambda: _all_have(ids, SEMImage.Status.CLASSIFIED), what="overdue images classified")
    assert Prediction.objects.filter(image_id__in=ids).count() == 5


def settings_broker_url() -> str:
    from django.conf import settings

    return settings.CELERY_BROKER_URL


def _task_succeeded(worker, name: str) -> bool:
    return re.search(rf"Task {re.escape(name)}\[[^\]]+\] succeeded", worker.log()) is not None


def test_retraining_loop_train_promote_reclassify_then_skip(worker_factory, sample, user, upload_images):
    worker = worker_factory(SEM_RETRAIN_MIN_NEW_LABELS=8, SEM_GATE_FIRST_MODEL_FLOOR=0.0, **TINY_TRAINING)
    labelled = upload_images(sample, user, 16, labelled=True)
    unlabelled = upload_images(sample, user, 3, seed=500)
    ids = [image.pk for image in labelled + unlabelled]
    worker.wait_until(lambda: _all_have(ids, SEMImage.Status.NO_MODEL), what="uploads waiting for a model")
    from workers.tasks import maybe_retrain

    maybe_retrain.delay()

    run = worker.wait_until(
        lambda: TrainingRun.objects.filter(status=TrainingRun.Status.SUCCEEDED).first(),
        timeout=180,
        what="the training run",
    )
    # The run is marked succeeded (releasing the lock) before the gate decides, outside its transaction.
    model = worker.wait_until(
        lambda: ModelVersion.objects.filter(pk=run.model_version_id, gate_passed__isnull=False).first(),
        timeout=60,
        what="the gate's decision",
    )
    assert run.trigger == TrainingRun.Trigger.SCHEDULE and model.version == 1
    assert model.status == ModelVersion.Status.PRODUCTION
    worker.wait_until(lambda: _all_have(ids, SEMImage.Status.CLASSIFIED), what="backlog classified by v1")
    assert set(SEMImage.objects.filter(pk__in=ids).values_list("predicted_by", flat=True)) == {model.pk}

    maybe_retrain.delay()  # nothing changed since v1
    worker.wait_until(
        lambda: TrainingRun.objects.filter(status=TrainingRun.Status.SKIPPED).exists(), what="a skipped check"
    )
    assert TrainingRun.objects.exclude(status=TrainingRun.Status.SKIPPED).count() == 1


def test_a_killed_training_leaves_production_untouched(
    worker_factory, production_model, sample, user, upload_images, tmp_path
):
    # The run holds at its first batch (tests/hold_training_worker.py) until the worker is killed: the test
    # waits on that durable state, never on a progress event a short run may have passed already.
    hold = tmp_path / "training-held"
    worker = worker_factory(
        app="tests.hold_training_worker",
        SEM_TRAIN_ARCH="resnet18",
        SEM_TRAIN_SIZES=[64, 96],
        SEM_TRAIN_EPOCHS=[3, 3],
        SEM_TEST_HOLD_TRAINING_FILE=str(hold),
    )
    ids = [image.pk for image in upload_images(sample, user, 16, labelled=True)]
    worker.wait_until(lambda: _all_have(ids, SEMImage.Status.CLASSIFIED), what="uploads classified")
    before = list(Prediction.objects.order_by("pk").values_list("pk", "category", "confidence"))

    run = training.request_training(trigger=TrainingRun.Trigger.MANUAL, force=True).run
    worker.wait_until(lambda: hold.exists(), what="training held at its first batch")
    assert TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.RUNNING, progress__event="batch").exists()
    work_dir = Path(django_settings.MODEL_DIR) / f"run-{run.pk}"
    assert work_dir.is_dir()
    worker.kill9()
    TrainingRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))

    assert training_sweep.fail_stale_runs() == 1
    assert not work_dir.exists()  # the killed worker's clean-up never ran; the sweeper's did

    run.refresh_from_db(), production_model.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED and run.error.startswith("Worker lost")
    assert run.active is None and 0 < run.progress_fraction < 1
    assert production_model.status == ModelVersion.Status.PRODUCTION and ModelVersion.objects.count() == 1
    assert list(Prediction.objects.order_by("pk").values_list("pk", "category", "confidence")) == before


def test_two_triggers_racing_through_workers_start_one_training(worker_factory, production_model):
    worker = worker_factory(SEM_RETRAIN_MIN_NEW_LABELS=1)
    from workers.tasks import maybe_retrain

    results = request_training_twice_at_once()
    maybe_retrain.delay()  # a scheduled check arriving meanwhile does not start a second one either
    worker.wait_until(lambda: _task_succeeded(worker, "workers.maybe_retrain"), what="the scheduled check")

    assert len([run for run in results if run is not None]) == 1
    assert TrainingRun.objects.filter(active=True).count() == 1
    assert TrainingRun.objects.count() == 1


def test_embedded_mode_beat_and_worker_on_the_filesystem_broker(
    worker_factory, production_model, sample, user, upload_images, tmp_path
):
    """The quick start's broker: beat sends the sweep on `default`, the sweep queues work on `gpu`."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="sweep (test)", task="workers.sweep", interval=every_second)
    ids = [image.pk for image in upload_images(sample, user, 2)]  # their messages go to Redis, not here
    SEMImage.objects.filter(pk__in=ids).update(status_changed_at=timezone.now() - timedelta(hours=1))
    embedded = {"broker": "filesystem://", "SEM_VAR_DIR": str(tmp_path / "var")}

    worker = worker_factory(**embedded)
    worker_factory(beat=True, **embedded)

    worker.wait_until(lambda: _all_have(ids, SEMImage.Status.CLASSIFIED), what="classified via beat and sweeper")
    worker.wait_until(
        lambda: _task_succeeded(worker, "workers.sweep") and _task_succeeded(worker, "workers.classify_images"),
        what="both tasks logged",
    )
    bindings = json.loads((tmp_path / "var" / "broker" / "control" / "default.exchange").read_text())
    assert {queue for _, _, queue in bindings} >= {"gpu", "default"}  # both queues routed through the folder
