"""Webhook subscriptions, event fan-out with project scoping, and signed delivery with retries,
verified by a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time

import pytest

from portal.models import Label, ModelVersion, TrainingRun, WebhookDelivery, WebhookSubscription
from portal.services.curation.labels import confirm_label, set_label, undo_label
from portal.services.delivery import webhooks
from tests.api.conftest import classify, make_model
from tests.webhook_receiver import Receiver
from workers.webhooks import deliver_webhook

pytestmark = pytest.mark.django_db

SECRET = "s3cret-for-tests-only-0123456789"


def subscribe(owner, url="http://127.0.0.1:9/hook", events=("label.changed",), project=None, active=True):
    return WebhookSubscription.objects.create(
        owner=owner, url=url, events=list(events), project=project, secret=SECRET, active=active
    )


def emit_after_commit(django_capture_on_commit_callbacks, action):
    """Run `action`, then its after-commit callbacks (the event listeners) without enqueueing Celery
    messages: the deliveries' own on-commit enqueue stays inside the test transaction."""
    with django_capture_on_commit_callbacks() as callbacks:
        action()
    for callback in callbacks:
        callback()


def expected_signature(timestamp: str, body: str, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/gone"


# --- subscriptions API ------------------------------------------------------------------------------


def test_create_shows_a_generated_secret_once(curator_api, curator, project):
    response = curator_api.post(
        "/api/webhooks/",
        {
            "url": "https://lims.example.org/hook",
            "events": ["label.changed", "image.classified"],
            "project": project.pk,
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    secret = response.json()["secret"]
    subscription = WebhookSubscription.objects.get()
    assert subscription.secret == secret and subscription.owner == curator and len(secret) > 30
    assert subscription.events == ["image.classified", "label.changed"]
    detail = curator_api.get(f"/api/webhooks/{subscription.pk}/").json()
    assert "secret" not in detail and detail["url"] == "https://lims.example.org/hook"


def test_client_chosen_secret_is_kept(curator_api):
    response = curator_api.post(
        "/api/webhooks/",
        {"url": "https://lims.example.org/h", "events": ["model.promoted"], "secret": SECRET},
        format="json",
    )
    assert response.status_code == 201 and WebhookSubscription.objects.get().secret == SECRET


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"url": "not a url", "events": ["label.changed"]}, "url"),
        ({"url": "ftp://x.org/h", "events": ["label.changed"]}, "url"),
        ({"url": "https://x.org/h", "events": ["image.deleted"]}, "events"),
        ({"url": "https://x.org/h", "events": []}, "events"),
        ({"url": "https://x.org/h", "events": ["label.changed"], "secret": "short"}, "secret"),
    ],
)
def test_invalid_subscriptions_are_field_errors(curator_api, payload, field):
    response = curator_api.post("/api/webhooks/", payload, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


def test_cannot_subscribe_to_another_project(outsider_api, project):
    response = outsider_api.post(
        "/api/webhooks/", {"url": "https://x.org/h", "events": ["label.changed"], "project": project.pk}, format="json"
    )
    assert response.status_code == 404 and "project" in response.json()["error"]["fields"]


def test_subscriptions_are_private_to_their_owner(curator_api, outsider_api, curator):
    subscription = subscribe(curator)
    assert outsider_api.get("/api/webhooks/").json()["results"] == []
    assert outsider_api.get(f"/api/webhooks/{subscription.pk}/").status_code == 404
    assert outsider_api.delete(f"/api/webhooks/{subscription.pk}/").status_code == 404
    paused = curator_api.patch(f"/api/webhooks/{subscription.pk}/", {"active": False}, format="json")
    assert paused.status_code == 200 and paused.json()["active"] is False
    assert curator_api.delete(f"/api/webhooks/{subscription.pk}/").status_code == 204
    assert not WebhookSubscription.objects.exists()


def test_delivery_log_is_readable_by_the_owner(curator_api, outsider_api, curator):
    subscription = subscribe(curator)
    WebhookDelivery.objects.create(
        subscription=subscription,
        event="label.changed",
        payload={"x": 1},
        status=WebhookDelivery.Status.FAILED,
        attempts=3,
        error="HTTP 503",
    )
    log = curator_api.get(f"/api/webhooks/{subscription.pk}/deliveries/").json()["results"]
    assert [(d["status"], d["attempts"], d["error"]) for d in log] == [("failed", 3, "HTTP 503")]
    assert outsider_api.get(f"/api/webhooks/{subscription.pk}/deliveries/").status_code == 404


# --- fan-out --------------------------------------------------------------------------------------


def test_label_change_reaches_subscribers_who_can_see_the_project(
    django_capture_on_commit_callbacks, curator, member, outsider, admin_user, image, categories, project, other_project
):
    mine = subscribe(curator)
    project_member = subscribe(member, project=project)
    admin_all = subscribe(admin_user)
    subscribe(outsider)  # cannot see the image's project
    subscribe(admin_user, project=other_project)  # restricted to another project
    subscribe(curator, events=("image.classified",))  # another event
    subscribe(curator, active=False)

    emit_after_commit(
        django_capture_on_commit_callbacks,
        lambda: set_label(image, categories["fibres"], source=Label.Source.API, user=curator),
    )

    deliveries = WebhookDelivery.objects.all()
    assert {d.subscription_id for d in deliveries} == {mine.pk, project_member.pk, admin_all.pk}
    payload = deliveries[0].payload
    assert payload["event"] == "label.changed"
    assert payload["data"]["label"]["category"] == "fibres" and payload["data"]["label"]["source"] == "api"
    assert payload["data"]["image"]["id"] == image.pk and payload["data"]["image"]["lab_sample_id"] == "S-0001"


def test_undoing_a_label_tells_subscribers(django_capture_on_commit_callbacks, curator, image, categories):
    """Issue 15: an undo sends label.changed, naming the withdrawn label and the label that is current again."""
    subscription = subscribe(curator)
    first = set_label(image, categories["fibres"], source=Label.Source.API, user=curator)
    second = set_label(image, categories["particles"], source=Label.Source.REVIEW, user=curator)
    second_id = second.pk

    emit_after_commit(django_capture_on_commit_callbacks, lambda: undo_label(second))
    data = WebhookDelivery.objects.get(subscription=subscription).payload["data"]
    assert data["withdrawn_label_id"] == second_id
    assert (data["label"]["id"], data["label"]["category"], data["label"]["is_current"]) == (first.pk, "fibres", True)
    assert data["image"]["curated_category"] == "fibres"

    WebhookDelivery.objects.all().delete()
    emit_after_commit(django_capture_on_commit_callbacks, lambda: undo_label(Label.objects.get(pk=first.pk)))
    data = WebhookDelivery.objects.get(subscription=subscription).payload["data"]
    assert data["withdrawn_label_id"] == first.pk and data["label"] is None
    assert data["image"]["id"] == image.pk and data["image"]["curated_category"] is None


def test_undoing_a_confirmation_changes_nothing_a_lims_sees(
    django_capture_on_commit_callbacks, curator, image, categories
):
    subscription = subscribe(curator)
    set_label(image, categories["fibres"], source=Label.Source.API, user=curator)
    confirmation = confirm_label(image, user=curator)
    emit_after_commit(django_capture_on_commit_callbacks, lambda: undo_label(confirmation))
    assert not WebhookDelivery.objects.filter(subscription=subscription).exists()


def test_image_classified_fans_out_per_image(django_capture_on_commit_callbacks, curator, image):
    subscription = subscribe(curator, events=("image.classified",))
    model = make_model(1, status=ModelVersion.Status.PRODUCTION)
    emit_after_commit(
        django_capture_on_commit_callbacks, lambda: classify(image, model, {"Fibres": 0.8, "Particles": 0.2})
    )
    delivery = WebhookDelivery.objects.get(subscription=subscription)
    data = delivery.payload["data"]["image"]
    assert (data["id"], data["predicted_category"], data["predicted_model_version"]) == (image.pk, "fibres", 1)
    assert data["predicted_confidence"] == pytest.approx(0.8)


def test_image_classified_says_out_of_scope_and_the_set(django_capture_on_commit_callbacks, curator, image):
    """Issue 24: the body a receiver gets for an out-of-scope image says so, with the prediction set."""
    import numpy as np

    from classifier.engine import prediction_from_probabilities
    from portal.services.learning.classification_results import save_results

    subscription = subscribe(curator, events=("image.classified",))
    model = make_model(1, status=ModelVersion.Status.PRODUCTION)
    result = prediction_from_probabilities(np.array([0.9, 0.1]), model.classes)
    result.prediction_set, result.set_coverage = ["Fibres"], 0.9
    result.out_of_scope, result.ood_score = True, 1.7
    emit_after_commit(
        django_capture_on_commit_callbacks, lambda: save_results(model, model.classes, {image.pk: result})
    )

    delivery = WebhookDelivery.objects.get(subscription=subscription)
    data = json.loads(webhooks.request_body(delivery))["data"]["image"]
    assert (data["status"], data["out_of_scope"], data["not_classifiable"]) == ("out_of_scope", True, False)
    assert (data["predicted_category"], data["predicted_set"], data["predicted_set_label"]) == (
        "fibres",
        ["fibres"],
        "Fibres",
    )


def test_the_webhook_image_is_the_api_image(django_capture_on_commit_callbacks, curator, curator_api, image):
    """Issue 15: one image representation (portal.representations): every field of the webhook's image
    is in the API's image with the same value, and docs/api.md lists them."""
    from pathlib import Path

    from portal.representations import SUMMARY_FIELDS

    subscription = subscribe(curator, events=("image.classified",))
    model = make_model(1, status=ModelVersion.Status.PRODUCTION)
    emit_after_commit(
        django_capture_on_commit_callbacks, lambda: classify(image, model, {"Fibres": 0.8, "Particles": 0.2})
    )
    data = WebhookDelivery.objects.get(subscription=subscription).payload["data"]["image"]
    api = curator_api.get(f"/api/images/{image.pk}/").json()
    assert sorted(data) == sorted(SUMMARY_FIELDS)
    assert {name: api[name] for name in SUMMARY_FIELDS} == data
    docs = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    section = docs[docs.index("The image in webhook payloads") :]
    assert all(f"`{name}`" in section for name in SUMMARY_FIELDS)


def test_model_promoted_and_training_finished_are_global(curator, outsider, tmp_path):
    promoted = subscribe(outsider, events=("model.promoted",))
    finished = subscribe(curator, events=("training.finished",))
    model = make_model(4, status=ModelVersion.Status.PRODUCTION)
    run = TrainingRun.objects.create(
        trigger=TrainingRun.Trigger.API, status=TrainingRun.Status.SUCCEEDED, active=None, model_version=model
    )
    webhooks.on_model_promoted(model_version_id=model.pk, previous_version=3)
    webhooks.on_training_finished(run_id=run.pk)
    promoted_payload = WebhookDelivery.objects.get(subscription=promoted).payload
    assert promoted_payload["data"]["model"]["version"] == 4 and promoted_payload["data"]["previous_version"] == 3
    finished_payload = WebhookDelivery.objects.get(subscription=finished).payload
    assert finished_payload["data"]["training_run"] == {
        "id": run.pk,
        "url": f"/api/training-runs/{run.pk}/",
        "status": "succeeded",
        "trigger": "api",
        "model_version": 4,
        "duration_s": None,
        "error": "",
        "finished_at": None,
    }


def test_listeners_ignore_rows_deleted_meanwhile(curator):
    subscribe(curator, events=tuple(webhooks.EVENTS))
    webhooks.on_label_changed(label_id=999_999)
    webhooks.on_image_classified(image_ids=[999_999])
    webhooks.on_model_promoted(model_version_id=999_999)
    webhooks.on_training_finished(run_id=999_999)
    assert not WebhookDelivery.objects.exists()


def test_listeners_are_registered_at_start_up():
    from portal import events

    assert webhooks.on_label_changed in events._listeners["label.changed"]
    assert webhooks.on_image_classified in events._listeners["image.classified"]
    webhooks.register_listeners()  # idempotent: no second registration
    assert events._listeners["label.changed"].count(webhooks.on_label_changed) == 1


# --- delivery -------------------------------------------------------------------------------------


def make_delivery(owner, url):
    subscription = subscribe(owner, url=url)
    return WebhookDelivery.objects.create(
        subscription=subscription,
        event="label.changed",
        payload={"event": "label.changed", "occurred_at": "2025-01-01T00:00:00Z", "data": {"label": {"id": 1}}},
    )


def test_signed_delivery_is_retried_after_a_500_then_delivered(curator, settings):
    settings.SEM_WEBHOOK_MAX_ATTEMPTS = 5
    with Receiver([500, 200]) as receiver:
        delivery = make_delivery(curator, receiver.url)
        deliver_webhook.apply(args=[delivery.pk])  # eager: Celery runs the retry in-process, without the delay

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("delivered", 2, 200)
    assert delivery.delivered_at is not None and delivery.error == ""
    assert len(receiver.received) == 2
    for request in receiver.received:
        timestamp = request.headers["X-SEM-Timestamp"]
        assert abs(time.time() - int(timestamp)) < 60
        assert request.headers["X-SEM-Signature"] == expected_signature(timestamp, request.body)
        assert webhooks.verify(SECRET, timestamp, request.body, request.headers["X-SEM-Signature"])
        assert request.headers["X-SEM-Event"] == "label.changed"
        assert request.headers["X-SEM-Delivery"] == str(delivery.pk)
        assert request.headers["Content-Type"] == "application/json"
        body = json.loads(request.body)
        assert body["delivery_id"] == delivery.pk and body["data"] == {"label": {"id": 1}}


def test_a_wrong_secret_does_not_verify(curator):
    with Receiver([200]) as receiver:
        delivery = make_delivery(curator, receiver.url)
        deliver_webhook.apply(args=[delivery.pk])
    request = receiver.received[0]
    timestamp = request.headers["X-SEM-Timestamp"]
    assert request.headers["X-SEM-Signature"] != expected_signature(timestamp, request.body, secret="other-secret")
    assert not webhooks.verify("other-secret", timestamp, request.body, request.headers["X-SEM-Signature"])
    assert not webhooks.verify(SECRET, timestamp, request.body + " ", request.headers["X-SEM-Signature"])
    assert not webhooks.verify(SECRET, str(int(timestamp) - 3600), request.body, request.headers["X-SEM-Signature"])


def test_gives_up_after_the_attempt_budget(curator, settings):
    settings.SEM_WEBHOOK_MAX_ATTEMPTS = 3
    with Receiver([], default=503) as receiver:
        delivery = make_delivery(curator, receiver.url)
        deliver_webhook.apply(args=[delivery.pk])
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("failed", 3, 503)
    assert "gave up after 3 attempts" in delivery.error
    assert len(receiver.received) == 3


def test_client_errors_are_not_retried(curator):
    with Receiver([410]) as receiver:
        delivery = make_delivery(curator, receiver.url)
        deliver_webhook.apply(args=[delivery.pk])
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("failed", 1, 410)
    assert delivery.response_excerpt == "answered 410"
    assert len(receiver.received) == 1


def test_connection_errors_are_retried(curator, settings):
    settings.SEM_WEBHOOK_MAX_ATTEMPTS = 2
    delivery = make_delivery(curator, closed_port_url())
    deliver_webhook.apply(args=[delivery.pk])
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("failed", 2)
    assert "ConnectionError" in delivery.error


def test_a_transient_failure_asks_for_a_retry_with_backoff(curator, settings):
    settings.SEM_WEBHOOK_BACKOFF_S = 30
    with Receiver([502]) as receiver:
        delivery = make_delivery(curator, receiver.url)
        outcome = webhooks.attempt_delivery(delivery.pk)
    assert (outcome.status, outcome.retry_in_s) == ("pending", 30)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.error) == ("pending", 1, "HTTP 502")


def test_backoff_is_exponential_and_capped(settings):
    settings.SEM_WEBHOOK_BACKOFF_S = 10
    settings.SEM_WEBHOOK_BACKOFF_MAX_S = 100
    assert [webhooks.backoff_seconds(n) for n in range(1, 6)] == [10, 20, 40, 80, 100]


def test_a_delivered_delivery_is_never_sent_twice(curator):
    with Receiver([200, 200]) as receiver:
        delivery = make_delivery(curator, receiver.url)
        deliver_webhook.apply(args=[delivery.pk])
        deliver_webhook.apply(args=[delivery.pk])  # a duplicated task message
    assert len(receiver.received) == 1
    assert webhooks.attempt_delivery(999_999).status == "skipped"


def test_redirects_are_not_followed(curator):
    with Receiver([302]) as receiver:
        delivery = make_delivery(curator, receiver.url)
        deliver_webhook.apply(args=[delivery.pk])
    delivery.refresh_from_db()
    assert (delivery.status, delivery.response_status) == ("failed", 302)


def test_a_classified_batch_makes_one_delivery_per_image_and_subscriber(
    curator, admin_user, sample, user, django_assert_max_num_queries
):
    from tests.api.conftest import ingest_png

    subscribe(curator, events=("image.classified",))
    subscribe(admin_user, events=("image.classified",))
    images = [ingest_png(sample, user, seed=300 + n) for n in range(6)]
    with django_assert_max_num_queries(8):  # not a query per image and subscriber
        webhooks.on_image_classified(image_ids=[image.pk for image in images])
    assert WebhookDelivery.objects.count() == 12
    assert {d.payload["data"]["image"]["id"] for d in WebhookDelivery.objects.all()} == {i.pk for i in images}


# --- destinations the portal must not reach (SSRF) ---------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/hook",
        "http://224.0.0.1/hook",
        "http://0.0.0.0:8000/hook",
    ],
)
def test_link_local_multicast_and_unspecified_destinations_are_refused(curator_api, url):
    response = curator_api.post("/api/webhooks/", {"url": url, "events": ["label.changed"]}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["url"][0].startswith("Webhooks may not be sent there")
    assert not WebhookSubscription.objects.exists()


def test_loopback_is_refused_unless_allowed(curator_api, settings):
    payload = {"url": "http://localhost:9000/hook", "events": ["label.changed"]}
    settings.SEM_WEBHOOK_ALLOW_LOOPBACK = False
    assert curator_api.post("/api/webhooks/", payload, format="json").status_code == 400
    settings.SEM_WEBHOOK_ALLOW_LOOPBACK = True
    assert curator_api.post("/api/webhooks/", payload, format="json").status_code == 201


def test_a_delivery_is_checked_again_when_sent(curator, settings):
    """A subscription stored while loopback was allowed (or a name that now resolves there) is not posted."""
    settings.SEM_WEBHOOK_ALLOW_LOOPBACK = False
    with Receiver([200]) as receiver:
        delivery = make_delivery(curator, receiver.url)
        outcome = webhooks.attempt_delivery(delivery.pk)
    delivery.refresh_from_db()
    assert outcome.status == WebhookDelivery.Status.FAILED and "this server itself" in delivery.error
    assert receiver.received == []
