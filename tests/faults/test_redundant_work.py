"""Wasted work under load (issue 12, item 4): a slow batch is not claimed twice, and the sweeper re-sends
only what the broker really lost, never what is merely waiting in the queue.

These run against the test run's real Redis broker (CELERY_BROKER_URL) with no worker consuming, so
the messages the portal sends stay in the queue exactly as they would behind a long backlog.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from kombu import Connection

from portal.celery_app import app
from portal.models import ModelVersion, SEMImage, WebhookDelivery, WebhookSubscription
from portal.services.delivery import broker_queue, maintenance, queueing, webhooks
from portal.services.learning import classification, classification_sweep
from tests.worker_fixtures import purge_broker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def redis_broker(settings):
    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        pytest.skip("needs the Redis broker (TEST_CELERY_BROKER_URL)")
    purge_broker(settings.CELERY_BROKER_URL)
    yield settings.CELERY_BROKER_URL
    purge_broker(settings.CELERY_BROKER_URL)


def _make_overdue(images, settings) -> None:
    long_ago = timezone.now() - timedelta(seconds=settings.SEM_PENDING_SWEEP_AFTER_S + 5)
    SEMImage.objects.filter(pk__in=[image.pk for image in images]).update(status_changed_at=long_ago)


def _queued_classify_ids() -> list[int]:
    return sorted(pk for args in broker_queue.waiting_args(queueing.CLASSIFY_IMAGES) for pk in args[0])


# --- Claims --------------------------------------------------------------------------------------


def test_a_batch_slower_than_the_claim_expiry_keeps_its_claim(production_model, sample, user, upload_images, settings):
    settings.SEM_PENDING_SWEEP_AFTER_S = 1
    ids = [image.pk for image in upload_images(sample, user, 3)]
    claimed = classification.claim(ids, production_model)
    assert sorted(image.pk for image in claimed) == ids

    with classification.ClaimRenewal(claimed) as renewal:
        time.sleep(2.5)  # the batch runs 2.5 claim expiries
        taken_by_another_worker = classification.claim(ids, production_model)
    assert taken_by_another_worker == []
    assert renewal.stamp > claimed[0].claimed_at

    time.sleep(1.2)  # the renewal stopped (the worker died): the claim goes stale and may be taken
    assert sorted(image.pk for image in classification.claim(ids, production_model)) == ids


def test_a_renewal_never_takes_back_a_claim_that_another_worker_holds(production_model, sample, user, upload_images):
    ids = [image.pk for image in upload_images(sample, user, 2)]
    claimed = classification.claim(ids, production_model)
    theirs = timezone.now() + timedelta(seconds=1)
    SEMImage.objects.filter(pk=ids[0]).update(claimed_at=theirs)

    renewed = classification.ClaimRenewal(claimed).renew()

    assert renewed == 1
    assert SEMImage.objects.get(pk=ids[0]).claimed_at == theirs


# --- The sweeper and the broker's queue ----------------------------------------------------------


def test_images_whose_message_waits_in_the_queue_are_not_sent_again(
    redis_broker, sample, user, upload_images, settings
):
    images = upload_images(sample, user, 3)  # committed: their messages are in the gpu queue
    _make_overdue(images, settings)
    assert _queued_classify_ids() == [image.pk for image in images]

    assert classification_sweep.sweep_stale_images() == 0
    assert _queued_classify_ids() == [image.pk for image in images]  # nothing was added


def test_images_whose_message_was_lost_are_sent_again_once(redis_broker, sample, user, upload_images, settings):
    images = upload_images(sample, user, 3)
    _make_overdue(images, settings)
    purge_broker(redis_broker)  # Redis restarted empty: the messages are gone

    assert classification_sweep.sweep_stale_images() == 3
    assert _queued_classify_ids() == [image.pk for image in images]
    _make_overdue(images, settings)
    assert classification_sweep.sweep_stale_images() == 0  # the re-sent messages are waiting now


def test_images_of_a_dead_worker_are_sent_again_although_its_message_is_held(
    redis_broker, production_model, sample, user, upload_images, settings
):
    images = upload_images(sample, user, 2)
    _make_overdue(images, settings)
    stale_claim = timezone.now() - timedelta(seconds=settings.SEM_PENDING_SWEEP_AFTER_S + 5)
    SEMImage.objects.filter(pk=images[0].pk).update(claimed_at=stale_claim)  # its worker stopped renewing

    assert classification_sweep.sweep_stale_images() == 1
    assert _queued_classify_ids().count(images[0].pk) == 2


def test_webhook_deliveries_waiting_in_the_queue_are_not_sent_again(redis_broker, user, settings):
    subscription = WebhookSubscription.objects.create(
        owner=user, url="https://lims.example.org/hook", events=["image.classified"], secret="s" * 32
    )
    deliveries = [
        WebhookDelivery.objects.create(subscription=subscription, event="image.classified", payload={"n": n})
        for n in range(3)
    ]
    long_ago = timezone.now() - timedelta(seconds=settings.SEM_PENDING_SWEEP_AFTER_S + 5)
    WebhookDelivery.objects.update(created_at=long_ago)
    webhooks.enqueue_deliveries([delivery.pk for delivery in deliveries])

    assert webhooks.sweep_unsent_deliveries() == 0
    purge_broker(redis_broker)
    assert webhooks.sweep_unsent_deliveries() == 3
    assert webhooks.sweep_unsent_deliveries() == 0


def test_a_backlog_waiting_behind_other_work_is_not_restarted(
    redis_broker, production_model, sample, user, upload_images
):
    images = upload_images(sample, user, 2)
    SEMImage.objects.filter(pk__in=[image.pk for image in images]).update(status=SEMImage.Status.NO_MODEL)
    ModelVersion.objects.filter(pk=production_model.pk).update(promoted_at=timezone.now() - timedelta(hours=1))
    production_model.refresh_from_db()
    queueing.enqueue_backlog(production_model.pk)

    assert not classification_sweep.backlog_stalled(production_model)
    assert maintenance.sweep()["backlog_restarted"] is False
    purge_broker(redis_broker)
    assert classification_sweep.backlog_stalled(production_model)


def test_unacknowledged_messages_count_as_waiting(redis_broker):
    """A message a worker took but has not acknowledged (running, or held for a retry countdown) is in
    kombu's `unacked` hash; the broker redelivers it after the visibility timeout if that worker died."""
    import redis

    queueing.enqueue_webhook_deliveries([41])
    client = redis.Redis.from_url(redis_broker)
    raw = client.rpop("default")
    client.hset("unacked", "delivery-tag-1", json.dumps([json.loads(raw), "default", "default"]))

    assert broker_queue.waiting_ids(queueing.DELIVER_WEBHOOK) == {41}


def test_the_quick_start_filesystem_broker_is_inspected_too(tmp_path, settings):
    folder = tmp_path / "out"
    folder.mkdir()
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder), "control_folder": str(tmp_path)}
    with Connection("filesystem://", transport_options=options) as connection:
        app.send_task(queueing.CLASSIFY_IMAGES, args=[[7, 8]], connection=connection, queue="gpu")
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = options

    assert broker_queue.waiting_ids(queueing.CLASSIFY_IMAGES) == {7, 8}


def test_an_unreadable_broker_means_re_send(settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens there

    assert broker_queue.waiting_args(queueing.CLASSIFY_IMAGES) is None


# --- Queues and timeouts -------------------------------------------------------------------------


def test_the_sweeper_has_its_own_queue_and_a_late_sweep_expires(settings):
    from django.core.management import call_command
    from django_celery_beat.models import PeriodicTask

    from portal.management.commands.setup_schedules import SWEEP_TASK_NAME

    assert settings.CELERY_TASK_ROUTES["workers.sweep"] == {"queue": "maintenance"}
    assert all(
        route["queue"] != "maintenance" for name, route in settings.CELERY_TASK_ROUTES.items() if "webhook" in name
    )
    call_command("setup_schedules", "--reset", stdout=open("/dev/null", "w"))
    assert 0 < PeriodicTask.objects.get(name=SWEEP_TASK_NAME).expire_seconds < 60


def test_the_visibility_timeout_outlasts_every_late_acknowledged_task_but_not_by_hours(settings):
    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        pytest.skip("a Redis broker setting")
    timeout = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    assert timeout > settings.CLASSIFY_TIME_LIMIT_S
    assert timeout > settings.SEM_WEBHOOK_BACKOFF_MAX_S  # a retry's countdown is held unacknowledged
    assert timeout <= 2 * 3600 < settings.SEM_TRAINING_TIMEOUT_S
