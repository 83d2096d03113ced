"""API tokens: hashed at rest, shown once, revocable; token and session authentication."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from portal.models import ApiToken
from portal.services.delivery.tokens import authenticate_secret, create_token, revoke_token

pytestmark = pytest.mark.django_db


def bearer(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def test_database_never_contains_the_secret(user):
    created = create_token(user, "LIMS")
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM portal_apitoken")
        rows = cursor.fetchall()
    stored = " ".join(str(value) for row in rows for value in row)
    assert created.secret not in stored
    assert created.secret[len("sem_") :] not in stored
    token = ApiToken.objects.get()
    assert token.key_hash == hashlib.sha256(created.secret.encode()).hexdigest()
    assert created.secret.startswith(token.prefix) and len(token.prefix) == 12


def test_two_tokens_have_different_secrets(user):
    assert create_token(user, "a").secret != create_token(user, "b").secret


def test_token_authenticates_and_records_use(user, project):
    created = create_token(user, "LIMS")
    response = bearer(created.secret).get("/api/projects/")
    assert response.status_code == 200
    assert [item["name"] for item in response.json()["results"]] == [project.name]
    created.token.refresh_from_db()
    assert created.token.last_used_at is not None


def test_token_keyword_is_accepted_too(user, project):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {create_token(user, 'x').secret}")
    assert client.get("/api/projects/").status_code == 200


def test_revoked_token_is_refused(user):
    created = create_token(user, "LIMS")
    revoke_token(created.token)
    response = bearer(created.secret).get("/api/projects/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"
    assert authenticate_secret(created.secret) is None


def test_revoking_twice_keeps_the_first_time(user):
    created = create_token(user, "LIMS")
    first = revoke_token(created.token).revoked_at
    assert revoke_token(created.token).revoked_at == first


@pytest.mark.parametrize("header", ["Bearer sem_wrong", "Bearer", "Bearer a b", "Bearer not-ours"])
def test_bad_tokens_get_401_with_the_error_body(header, user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/samples/")
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"code", "message", "fields"}
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_inactive_users_token_is_refused(user):
    created = create_token(user, "LIMS")
    user.is_active = False
    user.save()
    assert bearer(created.secret).get("/api/samples/").status_code == 401


def test_anonymous_gets_401(anon_api, db):
    response = anon_api.get("/api/samples/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_session_authentication_works_for_the_browsable_api(client, user, project):
    client.force_login(user)
    assert client.get("/api/projects/", HTTP_ACCEPT="application/json").status_code == 200


# --- token pages ----------------------------------------------------------------------------------


def test_token_page_creates_and_shows_the_secret_once(client, user):
    client.force_login(user)
    posted = client.post(reverse("account:tokens"), {"name": "LIMS production"})
    assert posted.status_code == 302  # post/redirect/get: a reload creates no second token (issue 14)
    response = client.get(posted["Location"])
    token = ApiToken.objects.get(user=user)
    secret = response.context["new_secret"]
    assert secret.startswith(token.prefix)
    assert secret in response.content.decode()
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
    again = client.get(reverse("account:tokens"))
    assert secret not in again.content.decode()
    assert token.prefix in again.content.decode()
    assert bearer(secret).get("/api/projects/").status_code == 200


def test_token_page_revokes(client, user):
    created = create_token(user, "old")
    client.force_login(user)
    response = client.post(reverse("account:token_revoke", args=[created.token.pk]))
    assert response.status_code == 302
    created.token.refresh_from_db()
    assert created.token.revoked_at is not None
    assert bearer(created.secret).get("/api/projects/").status_code == 401


def test_cannot_revoke_someone_elses_token(client, user, outsider):
    created = create_token(outsider, "theirs")
    client.force_login(user)
    assert client.post(reverse("account:token_revoke", args=[created.token.pk])).status_code == 404
    created.token.refresh_from_db()
    assert created.token.revoked_at is None


def test_token_page_lists_only_own_tokens(client, user, outsider):
    create_token(outsider, "outsider-token")
    create_token(user, "my-token")
    client.force_login(user)
    page = client.get(reverse("account:tokens")).content.decode()
    assert "my-token" in page and "outsider-token" not in page


def test_token_pages_need_login(client, db):
    response = client.get(reverse("account:tokens"))
    assert response.status_code == 302 and "/login/" in response["Location"]
    assert client.get(reverse("account:token_revoke", args=[1])).status_code in (302, 405)


def test_revoke_needs_post(client, user):
    created = create_token(user, "x")
    client.force_login(user)
    assert client.get(reverse("account:token_revoke", args=[created.token.pk])).status_code == 405
    assert ApiToken.objects.get(pk=created.token.pk).revoked_at is None


def test_last_used_is_written_at_most_once_a_minute(user):
    created = create_token(user, "x")
    client = bearer(created.secret)
    client.get("/api/projects/")
    created.token.refresh_from_db()
    first = created.token.last_used_at
    client.get("/api/projects/")
    created.token.refresh_from_db()
    assert created.token.last_used_at == first
    ApiToken.objects.filter(pk=created.token.pk).update(last_used_at=timezone.now() - timedelta(minutes=5))
    client.get("/api/projects/")
    created.token.refresh_from_db()
    assert created.token.last_used_at > first
