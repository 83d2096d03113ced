"""Tokens and webhook deliveries in the Django admin: create (secret shown once), revoke, redeliver."""

from __future__ import annotations

import pytest

from portal.models import ApiToken, WebhookDelivery, WebhookSubscription
from portal.services.tokens import authenticate_secret, create_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged_in(client, django_user_model):
    superuser = django_user_model.objects.create_superuser("boss", "boss@example.org", "pw-boss-123")
    client.force_login(superuser)
    return client


def test_admin_creates_a_token_and_sees_the_secret_once(admin_client_logged_in, user):
    response = admin_client_logged_in.post("/admin/portal/apitoken/add/", {"user": user.pk, "name": "LIMS"},
                                           follow=True)
    assert response.status_code == 200
    [message] = [str(m) for m in response.context["messages"] if "Copy the secret" in str(m)]
    secret = message.rsplit(" ", 1)[-1]
    token = ApiToken.objects.get()
    assert token.user == user and secret.startswith(token.prefix)
    assert authenticate_secret(secret) == token
    assert secret not in (token.key_hash + token.prefix + token.name)


def test_admin_revokes_tokens(admin_client_logged_in, user):
    created = create_token(user, "old")
    admin_client_logged_in.post("/admin/portal/apitoken/", {"action": "revoke",
                                                             "_selected_action": [created.token.pk]})
    assert authenticate_secret(created.secret) is None


def test_admin_redelivers_a_failed_delivery(admin_client_logged_in, user, django_capture_on_commit_callbacks):
    subscription = WebhookSubscription.objects.create(owner=user, url="https://x.org/h", events=["label.changed"],
                                                      secret="x" * 32)
    delivery = WebhookDelivery.objects.create(subscription=subscription, event="label.changed", payload={},
                                              status=WebhookDelivery.Status.FAILED, attempts=6, error="HTTP 500")
    with django_capture_on_commit_callbacks() as callbacks:
        admin_client_logged_in.post("/admin/portal/webhookdelivery/", {"action": "redeliver",
                                                                       "_selected_action": [delivery.pk]})
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.error) == ("pending", 0, "")
    assert len(callbacks) == 1  # the enqueue, after commit


def test_delivery_log_pages_render(admin_client_logged_in, user):
    subscription = WebhookSubscription.objects.create(owner=user, url="https://x.org/h", events=["label.changed"],
                                                      secret="x" * 32)
    delivery = WebhookDelivery.objects.create(subscription=subscription, event="label.changed", payload={"a": 1})
    assert admin_client_logged_in.get("/admin/portal/webhookdelivery/").status_code == 200
    assert admin_client_logged_in.get(f"/admin/portal/webhookdelivery/{delivery.pk}/change/").status_code == 200
    assert admin_client_logged_in.get(f"/admin/portal/webhooksubscription/{subscription.pk}/change/").status_code == 200
