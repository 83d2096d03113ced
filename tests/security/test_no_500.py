"""No 500 from any input, and every /api/ answer is the documented JSON error body (issue 11, items 5 and 6).

One class per kind of input that used to reach the database or Python unchecked: NUL bytes (PostgreSQL
refuses them in text: DataError), non-numeric ids, dates at the end of the calendar (OverflowError);
and one for the answers under /api/ that Django, not DRF, used to write as HTML (CSRF failures on
unknown paths, 404s for paths with a newline, 500s).
"""

from __future__ import annotations

import pytest
from django.test import Client

from portal.models import Sample
from tests.helpers import png_bytes, token_client

pytestmark = pytest.mark.django_db


def web_client(user, **options) -> Client:
    client = Client(raise_request_exception=False, **options)
    client.force_login(user)
    return client


def assert_api_error(response, *statuses):
    assert response.status_code in statuses, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), response.content[:300]
    body = response.json()
    assert set(body["error"]) >= {"code", "message", "fields"}, body


@pytest.fixture
def image(make_image, sample):
    return make_image(sample)


@pytest.fixture
def model(make_model):
    return make_model(1)


class TestNulBytesInInput:
    API_GETS = [
        "/api/samples/by-lims/%00/",
        "/api/samples/by-lims/a%00b/",
        "/api/categories/%00/",
        "/api/categories/fibres%00/",
        "/api/samples/?lims_id=%00",
        "/api/samples/?lab_sample_id=%00",
        "/api/images/?curated_category=%00",
        "/api/images/?predicted_category=%00",
        "/api/images/?cursor=%00",
        "/api/images/%00/",
        "/api/%00/",
    ]

    @pytest.mark.parametrize("path", API_GETS)
    def test_api_lookups_and_filters(self, user, project, sample, categories, path):
        assert_api_error(token_client(user).get(path), 400, 404)

    @pytest.mark.parametrize("category", ["\x00", "fibres\x00", "1\x00"])
    def test_api_label_and_upload_values(self, user, sample, image, categories, category):
        client = token_client(user)
        labelled = client.post(f"/api/images/{image.pk}/labels/", {"category": category}, format="json")
        assert_api_error(labelled, 400)
        assert "category" in labelled.json()["error"]["fields"]
        upload = {"file": _upload_file(), "sample": sample.pk, "curated_category": category}
        assert_api_error(client.post("/api/images/", upload, format="multipart"), 400)
        lab = client.post("/api/images/", {"file": _upload_file(), "lab_sample_id": "S-0001\x00"}, format="multipart")
        assert_api_error(lab, 400, 404)

    @pytest.mark.parametrize(
        "path",
        [
            "/dashboard/v1/cell/?actual=%00&predicted=Fibres",
            "/dashboard/v1/cell/?actual=Fibres&predicted=%00",
            "/dashboard/?model=%00",
            "/browse/?sample=%00",
            "/browse/?q=%00",
            "/browse/?project=%00",
            "/review/?project=%00",
            "/upload/?sample=%00",
            "/images/%00/",
        ],
    )
    def test_web_query_values(self, user, project, sample, image, model, path):
        response = web_client(user).get(path)
        assert response.status_code in (200, 400, 404), (path, response.status_code)

    @pytest.mark.parametrize("category", ["\x00", "1\x00", "abc", "99999999999999999999"])
    def test_web_form_values(self, user, sample, image, categories, category):
        client = web_client(user)
        for path in (f"/images/{image.pk}/label/", f"/review/{image.pk}/label/"):
            response = client.post(path, {"category": category})
            assert response.status_code in (302, 400, 404), (path, response.status_code)
        upload = client.post("/upload/file/", {"sample": sample.pk, "category": category, "file": _upload_file()})
        assert upload.status_code in (200, 201, 400, 404, 422), upload.status_code
        assert client.post("/upload/file/", {"sample": "1\x00", "file": _upload_file()}).status_code in (400, 404)


def _upload_file():
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("n.png", png_bytes(9), content_type="image/png")


class TestDatesAtTheEndOfTheCalendar:
    @pytest.mark.parametrize(
        "query",
        [
            "date_to=9999-12-31",
            "date_from=9999-12-31",
            "date_from=0001-01-01",
            "date_to=0001-01-01",
            "date_from=0001-01-01&date_to=9999-12-31",
        ],
    )
    def test_browse(self, user, sample, image, query):
        response = web_client(user).get(f"/browse/?{query}")
        assert response.status_code in (200, 400), response.status_code

    @pytest.mark.parametrize(
        "query",
        [
            "uploaded_before=9999-12-31T23:59:59",
            "uploaded_after=0001-01-01T00:00:00",
            "uploaded_after=9999-12-31T23:59:59%2B14:00",
        ],
    )
    def test_api_filters(self, user, sample, image, query):
        response = token_client(user).get(f"/api/images/?{query}")
        assert response.status_code in (200, 400), response.status_code


class TestApiAnswersAreJson:
    @pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
    def test_unsafe_methods_on_unknown_paths_with_a_session(self, user, method):
        client = web_client(user, enforce_csrf_checks=True)
        assert_api_error(getattr(client, method)("/api/no-such-endpoint/"), 403, 404)

    @pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
    def test_unsafe_methods_on_unknown_paths_anonymously(self, method):
        client = Client(raise_request_exception=False, enforce_csrf_checks=True)
        assert_api_error(getattr(client, method)("/api/no-such-endpoint/"), 401, 403, 404)

    def test_a_csrf_failure_on_a_real_endpoint_is_json(self, user, project):
        client = web_client(user, enforce_csrf_checks=True)
        response = client.post(
            "/api/samples/", {"project": project.pk, "lab_sample_id": "X"}, content_type="application/json"
        )
        assert_api_error(response, 403)

    @pytest.mark.parametrize(
        "path",
        [
            "/api/images/%0A",
            "/api/%0A",
            "/api/images/1%0A/",
            "/api/%0A/x",
            "/api/images/%0D%0A",
            "/api/schema/%0A",
            "/api/%E2%80%A8",
        ],
    )
    def test_paths_with_line_breaks_and_odd_characters(self, user, path):
        assert_api_error(token_client(user).get(path), 404)
        assert_api_error(token_client(user).post(path, {}, format="json"), 404, 405)

    def test_an_unexpected_error_is_a_json_500(self, user, monkeypatch):
        from portal.api.views.catalogue import CategoryViewSet

        def broken(self, request, *args, **kwargs):
            raise RuntimeError("a bug")

        monkeypatch.setattr(CategoryViewSet, "list", broken)
        client = token_client(user)
        client.raise_request_exception = False
        response = client.get("/api/categories/")
        assert_api_error(response, 500)
        assert response.json()["error"]["code"] == "server_error"
        assert "a bug" not in response.content.decode()

    def test_an_unexpected_error_outside_drf_is_a_json_500(self, user, monkeypatch):
        import portal.api.views.unknown as unknown

        def broken(*args, **kwargs):
            raise RuntimeError("a bug")

        monkeypatch.setattr(unknown, "error_body", broken)
        response = Client(raise_request_exception=False).get("/api/no-such-endpoint/")
        assert_api_error(response, 500)

    def test_web_pages_keep_their_html_errors(self, user):
        response = web_client(user).get("/no-such-page/")
        assert response.status_code == 404 and response["Content-Type"].startswith("text/html")


def test_samples_are_unaffected(user, sample):
    """The lookups still work for real values."""
    Sample.objects.filter(pk=sample.pk).update(lims_id="LIMS-1")
    assert token_client(user).get("/api/samples/by-lims/LIMS-1/").status_code == 200
