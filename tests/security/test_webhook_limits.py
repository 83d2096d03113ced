"""Webhook limits (issue 11, item 9): a paused subscription, or one whose owner was deactivated, sends
nothing more (retries included), and each user may keep only so many subscriptions."""

from __future__ import annotations

import pytest

from portal.models import WebhookDelivery, WebhookSubscription
from portal.services.delivery import webhooks
from tests.helpers import token_client
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.django_db


@pytest.fixture
def retrying(settings):
    settings.SEM_WEBHOOK_ALLOW_LOOPBACK = True
    settings.SEM_WEBHOOK_MAX_ATTEMPTS = 5


def failing_once_then_stopped(owner, receiver, stop) -> WebhookDelivery:
    """A delivery whose first attempt gets a 503 (a retry is due), then `stop(subscription)`, then the retry."""
    subscription = WebhookSubscription.objects.create(
        owner=owner, url=receiver.url, events=["label.changed"], secret="s3cret-for-tests-only-0123456789"
    )
    delivery = WebhookDelivery.objects.create(
        subscription=subscription, event="label.changed", payload={"event": "label.changed", "data": {}}
    )
    assert webhooks.attempt_delivery(delivery.pk).retry_in_s is not None
    stop(subscription)
    outcome = webhooks.attempt_delivery(delivery.pk)
    assert outcome.retry_in_s is None
    delivery.refresh_from_db()
    return delivery


class TestStoppedSubscriptionsStopRetrying:
    def test_a_paused_subscription_is_not_retried(self, retrying, member):
        def pause(subscription):
            subscription.active = False
            subscription.save()

        with Receiver([503], default=200) as receiver:
            delivery = failing_once_then_stopped(member, receiver, pause)
        assert len(receiver.received) == 1
        assert delivery.status == "failed" and "paused" in delivery.error

    def test_a_deactivated_owners_subscription_is_not_retried(self, retrying, member):
        def deactivate(subscription):
            subscription.owner.is_active = False
            subscription.owner.save()

        with Receiver([503], default=200) as receiver:
            delivery = failing_once_then_stopped(member, receiver, deactivate)
        assert len(receiver.received) == 1
        assert delivery.status == "failed" and "deactivated" in delivery.error


class TestSubscriptionCap:
    def test_a_user_may_keep_only_so_many_subscriptions(self, member, admin_user, settings):
        settings.SEM_WEBHOOK_MAX_SUBSCRIPTIONS_PER_USER = 2
        client = token_client(member)
        payload = {"url": "https://lims.example.org/hook", "events": ["label.changed"]}
        assert [client.post("/api/webhooks/", payload, format="json").status_code for _ in range(2)] == [201, 201]
        refused = client.post("/api/webhooks/", payload, format="json")
        assert refused.status_code == 409  # a conflict with the account's state (issue 11 item 7)
        assert refused.json()["error"]["code"] == "too_many_subscriptions"
        assert refused.json()["error"]["fields"]["url"][0].startswith("You already have 2 webhook subscriptions")
        assert WebhookSubscription.objects.filter(owner=member).count() == 2
        # Another user has their own budget; deleting one frees a place.
        assert token_client(admin_user).post("/api/webhooks/", payload, format="json").status_code == 201
        client.delete(f"/api/webhooks/{WebhookSubscription.objects.filter(owner=member).first().pk}/")
        assert client.post("/api/webhooks/", payload, format="json").status_code == 201

    def test_the_setting_refuses_bad_values(self, monkeypatch):
        from django.core.exceptions import ImproperlyConfigured

        from portal.env import env_int

        monkeypatch.setenv("SEM_WEBHOOK_MAX_SUBSCRIPTIONS_PER_USER", "0")
        with pytest.raises(ImproperlyConfigured):
            env_int("SEM_WEBHOOK_MAX_SUBSCRIPTIONS_PER_USER", 20, minimum=1)
