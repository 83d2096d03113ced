"""Tokens and webhook deliveries in the Django admin: create (secret shown once), revoke, redeliver."""

from __future__ import annotations

import pytest

from portal.models import ApiToken, WebhookDelivery, WebhookSubscription
from portal.services.delivery.tokens import authenticate_secret, create_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged_in(client, django_user_model):
    superuser = django_user_model.objects.create_superuser("boss", "boss@example.org", "pw-boss-123")
    client.force_login(superuser)
    return client


def test_admin_creates_a_token_and_sees_the_secret_once(admin_client_logged_in, user):
    response = admin_client_logged_in.post(
        "/admin/portal/apitoken/add/", {"user": user.pk, "name": "LIMS"}, follow=True
    )
    assert response.status_code == 200
    [message] = [str(m) for m in response.context["messages"] if "Copy the secret" in str(m)]
    secret = message.rsplit(" ", 1)[-1]
    token = ApiToken.objects.get()
    assert token.user == user and secret.startswith(token.prefix)
    assert authenticate_secret(secret) == token
    assert secret not in (token.key_hash + token.prefix + token.name)


def test_admin_revokes_tokens(admin_client_logged_in, user):
    created = create_token(user, "old")
    admin_client_logged_in.post("/admin/portal/apitoken/", {"action": "revoke", "_selected_action": [created.token.pk]})
    assert authenticate_secret(created.secret) is None


def test_admin_redelivers_a_failed_delivery(admin_client_logged_in, user, django_capture_on_commit_callbacks):
    subscription = WebhookSubscription.objects.create(
        owner=user, url="https://x.org/h", events=["label.changed"], secret="x" * 32
    )
    delivery = WebhookDelivery.objects.create(
        subscription=subscription,
        event="label.changed",
        payload={},
        status=WebhookDelivery.Status.FAILED,
        attempts=6,
        error="HTTP 500",
    )
    with django_capture_on_commit_callbacks() as callbacks:
        admin_client_logged_in.post(
            "/admin/portal/webhookdelivery/", {"action": "redeliver", "_selected_action": [delivery.pk]}
        )
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.error) == ("pending", 0, "")
    assert len(callbacks) == 1  # the enqueue, after commit


def test_delivery_log_pages_render(admin_client_logged_in, user):
    subscription = WebhookSubscription.objects.create(
        owner=user, url="https://x.org/h", events=["label.changed"], secret="x" * 32
    )
    delivery = WebhookDelivery.objects.create(subscription=subscription, event="label.changed", payload={"a": 1})
    assert admin_client_logged_in.get("/admin/portal/webhookdelivery/").status_code == 200
    assert admin_client_logged_in.get(f"/admin/portal/webhookdelivery/{delivery.pk}/change/").status_code == 200
    assert admin_client_logged_in.get(f"/admin/portal/webhooksubscription/{subscription.pk}/change/").status_code == 200


# --- What the services own is read-only; actions call the services (issue 15) -----------------------


def _action(client, url: str, action: str, ids: list[int], **extra):
    return client.post(url, {"action": action, "_selected_action": ids, **extra}, follow=True)


def test_image_status_and_labels_are_not_editable(admin_client_logged_in, image, categories):
    page = admin_client_logged_in.get(f"/admin/portal/semimage/{image.pk}/change/").content.decode()
    for field in ("status", "curated_category", "predicted_category", "split", "predicted_by"):
        assert f'name="{field}"' not in page
    assert 'name="labels-0-category"' not in page  # the label history inline is read-only
    assert admin_client_logged_in.get("/admin/portal/label/add/").status_code == 403


def test_label_rows_cannot_be_edited_or_deleted(admin_client_logged_in, image, categories, user):
    from portal.models import Label
    from portal.services.curation.labels import set_label

    label = set_label(image, categories["fibres"], source=Label.Source.API, user=user)
    assert admin_client_logged_in.get(f"/admin/portal/label/{label.pk}/change/").status_code == 200  # view
    response = admin_client_logged_in.post(
        f"/admin/portal/label/{label.pk}/change/",
        {"category": categories["powder"].pk, "source": "api", "is_current": "on"},
    )
    assert response.status_code == 403
    assert admin_client_logged_in.post(f"/admin/portal/label/{label.pk}/delete/", {"post": "yes"}).status_code == 403
    label.refresh_from_db()
    assert label.category == categories["fibres"]


def test_the_set_label_action_goes_through_the_label_service(
    admin_client_logged_in, image, categories, django_capture_on_commit_callbacks
):
    from portal.models import Label

    with django_capture_on_commit_callbacks() as callbacks:
        response = _action(
            admin_client_logged_in,
            "/admin/portal/semimage/",
            "set_curated_label",
            [image.pk],
            category=categories["powder"].pk,
        )
    assert response.status_code == 200
    image.refresh_from_db()
    assert image.curated_category == categories["powder"]
    label = Label.objects.get(image=image, is_current=True)
    assert (label.source, label.created_by.username, label.note) == ("page", "boss", "set in the admin")
    assert len(callbacks) == 1  # label.changed, after commit
    response = _action(admin_client_logged_in, "/admin/portal/semimage/", "set_curated_label", [image.pk])
    assert "Choose a category" in response.content.decode()


def test_model_status_changes_only_through_promote_and_roll_back(admin_client_logged_in, tmp_path):
    from portal.models import ModelVersion
    from tests.api.conftest import make_model

    artifact = tmp_path / "model.pth"
    artifact.write_bytes(b"weights")
    first = make_model(1, status=ModelVersion.Status.PRODUCTION, artifact_path=str(artifact))
    ModelVersion.objects.filter(pk=first.pk).update(promoted_at="2025-01-01T00:00:00Z")
    second = make_model(2, artifact_path=str(artifact))
    page = admin_client_logged_in.get(f"/admin/portal/modelversion/{second.pk}/change/").content.decode()
    assert 'name="status"' not in page
    assert admin_client_logged_in.get("/admin/portal/modelversion/add/").status_code == 403

    _action(admin_client_logged_in, "/admin/portal/modelversion/", "promote_model", [second.pk])
    assert ModelVersion.objects.get(status=ModelVersion.Status.PRODUCTION) == second
    assert ModelVersion.objects.get(pk=first.pk).status == ModelVersion.Status.RETIRED

    response = _action(admin_client_logged_in, "/admin/portal/modelversion/", "roll_back", [second.pk])
    assert "v1 is in production again" in response.content.decode()
    assert ModelVersion.objects.get(status=ModelVersion.Status.PRODUCTION) == first

    response = _action(admin_client_logged_in, "/admin/portal/modelversion/", "promote_model", [first.pk, second.pk])
    assert "exactly one" in response.content.decode()


def test_training_runs_are_read_only_and_cancelled_through_the_service(admin_client_logged_in):
    from portal.models import TrainingRun

    run = TrainingRun.objects.create(trigger=TrainingRun.Trigger.MANUAL)
    page = admin_client_logged_in.get(f"/admin/portal/trainingrun/{run.pk}/change/").content.decode()
    assert 'name="status"' not in page
    assert admin_client_logged_in.get("/admin/portal/trainingrun/add/").status_code == 403
    _action(admin_client_logged_in, "/admin/portal/trainingrun/", "cancel_runs", [run.pk])
    run.refresh_from_db()
    assert (run.status, run.active) == (TrainingRun.Status.CANCELLED, None)  # the lock is released
