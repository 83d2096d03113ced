"""One error body for every 4xx, throttling per token, the OpenAPI schema and the vendored docs."""

from __future__ import annotations

import pytest
from rest_framework.settings import api_settings

from tests.api.conftest import token_client

pytestmark = pytest.mark.django_db


def assert_error_body(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"]
    assert set(body["error"]) == {"code", "message", "fields"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code
    assert "Traceback" not in response.content.decode()
    return body["error"]


def test_validation_error_names_the_fields(curator_api, project):
    error = assert_error_body(curator_api.post("/api/samples/", {"project": project.pk}, format="json"), 400, "invalid")
    assert set(error["fields"]) == {"lab_sample_id", "name"}
    assert error["fields"]["name"] == ["This field is required."]


def test_malformed_json_is_a_400(curator_api):
    response = curator_api.post("/api/samples/", data="{not json", content_type="application/json")
    assert_error_body(response, 400, "parse_error")


def test_unsupported_media_type_is_a_415(curator_api):
    response = curator_api.post("/api/samples/", data="<xml/>", content_type="application/xml")
    assert_error_body(response, 415, "unsupported_media_type")


def test_wrong_method_is_a_405(curator_api, image):
    assert_error_body(curator_api.delete(f"/api/images/{image.pk}/"), 405, "method_not_allowed")


def test_unknown_endpoint_and_object_are_json_404s(curator_api):
    assert_error_body(curator_api.get("/api/no-such-thing/"), 404, "not_found")
    assert_error_body(curator_api.get("/api/images/987654/"), 404, "not_found")
    assert_error_body(curator_api.get("/api/images/not-a-number/"), 404, "not_found")
    assert_error_body(curator_api.get("/api/samples/99999999999999999999999/"), 404, "not_found")


def test_permission_and_authentication_errors(member_api, anon_api, db):
    assert_error_body(member_api.post("/api/models/rollback/"), 403, "permission_denied")
    assert_error_body(anon_api.get("/api/images/"), 401, "not_authenticated")


def test_throttling_is_per_token(curator, settings, monkeypatch):
    monkeypatch.setitem(api_settings.DEFAULT_THROTTLE_RATES, "api", "3/min")
    first, second = token_client(curator), token_client(curator)
    for _ in range(3):
        assert first.get("/api/categories/").status_code == 200
    error = assert_error_body(first.get("/api/categories/"), 429, "throttled")
    assert "Request was throttled" in error["message"]
    # The same user's other token has its own budget.
    assert second.get("/api/categories/").status_code == 200


def test_schema_is_served_and_documents_every_endpoint(anon_api, db):
    response = anon_api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    paths = schema["paths"]
    for path in (
        "/api/samples/",
        "/api/samples/by-lims/{lims_id}/",
        "/api/images/",
        "/api/images/{id}/original/",
        "/api/images/{id}/thumbnail/",
        "/api/images/{id}/labels/",
        "/api/images/{id}/predictions/",
        "/api/categories/",
        "/api/review-queue/",
        "/api/models/{version}/promote/",
        "/api/models/rollback/",
        "/api/models/{version}/metrics/",
        "/api/training-runs/",
        "/api/webhooks/",
    ):
        assert path in paths, path
    operations = [
        op
        for item in paths.values()
        for method, op in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]
    undocumented = [op["operationId"] for op in operations if not op.get("summary")]
    assert undocumented == []
    without_examples = [op["operationId"] for op in operations if not _has_examples(op)]
    assert without_examples == []
    upload = paths["/api/images/"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    assert any(p["name"] == "Idempotency-Key" for p in upload["parameters"])
    assert set(upload["responses"]) >= {"200", "201", "400", "401", "409"}
    assert schema["components"]["securitySchemes"]["tokenAuth"]["scheme"] == "bearer"


def _has_examples(operation: dict) -> bool:
    bodies = [operation.get("requestBody", {})] + list(operation["responses"].values())
    return any(content.get("examples") for body in bodies for content in body.get("content", {}).values())


def test_docs_are_served_from_vendored_assets(anon_api, db):
    for url in ("/api/docs/", "/api/redoc/"):
        page = anon_api.get(url).content.decode()
        assert "/static/drf_spectacular_sidecar/" in page
        assert "cdn.jsdelivr.net" not in page and "unpkg.com" not in page


@pytest.mark.parametrize(
    "value, valid",
    [
        ("3000/min", True),
        ("10/s", True),
        ("5/hour", True),
        ("lots", False),
        ("10", False),
        ("/min", False),
        ("10/week", False),
    ],
)
def test_throttle_rate_settings_fail_loudly(monkeypatch, value, valid):
    from django.core.exceptions import ImproperlyConfigured

    from portal.env import env_rate

    monkeypatch.setenv("SEM_API_RATE", value)
    if valid:
        assert env_rate("SEM_API_RATE", "1/s") == value
    else:
        with pytest.raises(ImproperlyConfigured):
            env_rate("SEM_API_RATE", "1/s")


def test_the_api_never_imports_the_ml_libraries():
    """torch and fastai must stay off the web request path: the API's modules and the schema need neither."""
    import subprocess
    import sys

    from tests.worker_fixtures import REPO_ROOT

    script = (
        "import os, sys, django; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'portal.settings'); django.setup();"
        "import portal.urls; from django.urls import resolve; resolve('/api/images/');"
        "from drf_spectacular.generators import SchemaGenerator; SchemaGenerator().get_schema(None, True);"
        "import portal.services.learning.training as training; training.training_config();"
        "print(sorted(m for m in ('torch', 'fastai', 'torchvision', 'sklearn') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
