"""The low findings of issue 22's attack: each answered 500, a wrong status, or let something through."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.settings import api_settings

from portal.models import WatchFolder, WebhookSubscription
from tests.helpers import png_bytes, token_client


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/samples/", "/api/webhooks/"])
@pytest.mark.parametrize("body", [_nested(5000), '{"name": ' + _nested(5000) + "}"])
def test_json_nested_5000_levels_deep_is_a_400(path, body, user, project):
    response = token_client(user).post(path, data=body, content_type="application/json")
    assert response.status_code == 400, (response.status_code, response.content[:200])
    assert response.json()["error"]["code"] == "parse_error"


@pytest.mark.django_db
def test_a_lone_surrogate_in_webhook_events_is_a_400(user, project):
    body = '{"url": "https://lims.example.org/hook", "events": ["\\ud800"]}'
    response = token_client(user).post("/api/webhooks/", data=body, content_type="application/json")
    assert response.status_code == 400, (response.status_code, response.content[:200])
    assert WebhookSubscription.objects.count() == 0


def _web(user) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["²", "1²", "٣", "1" * 30])
def test_unicode_digits_and_huge_ids_in_parameters_are_never_a_500(value, user, sample):
    client = _web(user)
    for path in (
        f"/upload/?sample={value}",
        f"/upload/status/?ids=1,{value}",
        f"/dashboard/?model={value}",
        f"/browse/?curated={value}&predicted={value}&project={value}&sample={value}",
        f"/review/?project={value}",
    ):
        response = client.get(path)
        assert response.status_code in (200, 400, 404), (path, response.status_code)
    api = token_client(user)
    for path in (f"/api/images/?sample={value}", f"/api/images/{value}/", f"/api/samples/{value}/"):
        assert api.get(path).status_code in (200, 400, 404), path
    upload = client.post(
        reverse("web:upload_file"), {"sample": value, "category": value, "file": _png_file()}, follow=False
    )
    assert upload.status_code in (400, 404), upload.status_code
    with_category = client.post(
        reverse("web:upload_file"), {"sample": sample.pk, "category": value, "file": _png_file()}
    )
    assert with_category.status_code in (200, 201), with_category.status_code


def _png_file():
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("a.png", png_bytes(7), content_type="image/png")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url", ["http://[fd00:ec2::254]/latest/", "http://100.100.100.200/latest/", "http://192.0.0.192/opc/v1/"]
)
def test_cloud_metadata_addresses_on_private_and_shared_ranges_are_refused(url, user, project):
    response = token_client(user).post("/api/webhooks/", {"url": url, "events": ["label.changed"]}, format="json")
    assert response.status_code == 400, (response.status_code, response.content[:300])
    assert "metadata" in response.json()["error"]["fields"]["url"][0]
    assert WebhookSubscription.objects.count() == 0


@pytest.mark.django_db
def test_the_upload_rate_is_per_user_not_per_token(user, sample, monkeypatch):
    """A new token is not a new upload budget (the web upload shares the same one, per user)."""
    monkeypatch.setitem(api_settings.DEFAULT_THROTTLE_RATES, "upload", "2/min")
    first, second = token_client(user), token_client(user)
    for seed in (1, 2):
        response = first.post("/api/images/", {"file": _png_file_seeded(seed), "sample": sample.pk}, format="multipart")
        assert response.status_code == 201, response.content[:300]
    response = second.post("/api/images/", {"file": _png_file_seeded(3), "sample": sample.pk}, format="multipart")
    assert response.status_code == 429, response.content[:300]
    web = _web(user).post(reverse("web:upload_file"), {"sample": sample.pk, "file": _png_file_seeded(4)})
    assert web.status_code == 429


def _png_file_seeded(seed: int):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(f"{seed}.png", png_bytes(seed), content_type="image/png")


@pytest.mark.django_db
def test_toggling_another_projects_watch_folder_is_a_404_like_an_unknown_id(
    user, project, other_project, make_user, tmp_path
):
    foreign = WatchFolder.objects.create(path=str(tmp_path / "other"), project=other_project, uploader=user)
    curator = make_user("carla", project=project, role="curator")
    client = _web(curator)
    assert client.post(reverse("web:inbox_toggle", args=[foreign.pk])).status_code == 404
    assert client.post(reverse("web:inbox_toggle", args=[foreign.pk + 1000])).status_code == 404
    foreign.refresh_from_db()
    assert foreign.enabled
