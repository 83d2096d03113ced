"""The cache Redis (CACHE_URL, API throttle counters) goes down: the REST API keeps answering.

Throttling falls back to counting in the web process (still enforced, logged once), and a cache,
broker or database error anywhere else in an API view answers 503 JSON with Retry-After, never a
500 page. A real redis-server of this test's own is killed; the system Redis is never touched.
"""

from __future__ import annotations

import json
import logging
import time

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.settings import api_settings

from portal.api import throttling
from portal.api.views.samples import SampleViewSet
from portal.env import parse_cache_url
from portal.models import SEMImage
from tests.faults.conftest import tiff_bytes

pytestmark = pytest.mark.django_db

OUTAGE_WARNING = "the shared cache is unavailable"


@pytest.fixture
def cache_on_redis(settings, redis_process, tmp_path, monkeypatch):
    """CACHE_URL is this test's Redis; the throttles start with a fresh fallback state."""
    settings.CACHES = {"default": parse_cache_url(redis_process.url, tmp_path / "unused")}
    fresh = throttling.ThrottleCache()
    fresh.retry_after_s = 0.2
    monkeypatch.setattr(throttling.PerTokenRateThrottle, "cache", fresh)
    return redis_process


def _upload(api_client, sample, seed: int):
    upload = SimpleUploadedFile(f"outage-{seed}.tif", tiff_bytes(seed), content_type="image/tiff")
    return api_client.post(
        "/api/images/", {"file": upload, "sample": sample.pk}, format="multipart", HTTP_IDEMPOTENCY_KEY=f"outage-{seed}"
    )


def _assert_503_json(response):
    assert response.status_code == 503, response.content
    assert response["Content-Type"].startswith("application/json")
    assert json.loads(response.content)["error"]["code"] == "unavailable"
    assert int(response["Retry-After"]) > 0


def test_the_api_keeps_working_while_the_cache_redis_is_down(api_client, sample, cache_on_redis, caplog):
    assert api_client.get("/api/images/").status_code == 200
    assert any(b"throttle" in key for key in cache_on_redis.client().keys("*"))  # counted in Redis

    cache_on_redis.stop()
    caplog.set_level(logging.WARNING, logger="portal.api.throttling")
    for _ in range(3):
        assert api_client.get("/api/images/").status_code == 200
        assert api_client.get("/api/samples/").status_code == 200
    stored = _upload(api_client, sample, seed=30)
    assert stored.status_code == 201, stored.content
    assert SEMImage.objects.filter(pk=stored.json()["id"]).exists()
    assert _upload(api_client, sample, seed=30).status_code == 200  # the retry finds it
    # Logged, but not once per request.
    assert sum(OUTAGE_WARNING in record.getMessage() for record in caplog.records) == 1

    cache_on_redis.start()  # back on the same port: the shared counters are used again
    cache_on_redis.client().flushall()
    time.sleep(0.3)  # past the fallback's retry delay
    assert api_client.get("/api/images/").status_code == 200
    assert any(b"throttle" in key for key in cache_on_redis.client().keys("*"))
    assert any("shared cache is back" in record.getMessage() for record in caplog.records)


def test_throttling_is_still_enforced_per_process_while_the_cache_is_down(api_client, cache_on_redis, monkeypatch):
    monkeypatch.setitem(api_settings.DEFAULT_THROTTLE_RATES, "api", "3/min")
    cache_on_redis.stop()
    for _ in range(3):
        assert api_client.get("/api/categories/").status_code == 200
    throttled = api_client.get("/api/categories/")
    assert throttled.status_code == 429
    assert throttled.json()["error"]["code"] == "throttled"


def test_a_cache_error_inside_an_api_view_answers_503_json_with_retry_after(api_client, cache_on_redis, monkeypatch):
    def list_reading_the_cache(self, request, *args, **kwargs):
        cache.get("anything")  # the stopped Redis: a real redis ConnectionError
        raise AssertionError("unreachable")

    monkeypatch.setattr(SampleViewSet, "list", list_reading_the_cache)
    cache_on_redis.stop()
    _assert_503_json(api_client.get("/api/samples/"))


def test_a_broker_error_inside_an_api_view_answers_503_json_with_retry_after(api_client, monkeypatch):
    import kombu.exceptions

    def list_sending_a_task(self, request, *args, **kwargs):
        raise kombu.exceptions.OperationalError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    monkeypatch.setattr(SampleViewSet, "list", list_sending_a_task)
    _assert_503_json(api_client.get("/api/samples/"))


def test_a_cache_error_outside_the_api_views_answers_503_too(cache_on_redis):
    """The middleware (web UI, anything outside a DRF view): a dependency outage is a 503 with
    Retry-After, not a 500 page."""
    from django.test import RequestFactory

    from portal.middleware import DatabaseUnavailableMiddleware

    cache_on_redis.stop()
    with pytest.raises(Exception) as raised:
        cache.get("anything")
    request = RequestFactory().get("/browse/", HTTP_ACCEPT="application/json")
    response = DatabaseUnavailableMiddleware(lambda request: None).process_exception(request, raised.value)
    assert response is not None and response.status_code == 503
    assert int(response["Retry-After"]) > 0
    assert json.loads(response.content)["error"]["code"] == "unavailable"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # gunicorn sees this test's rows
def test_under_gunicorn_no_api_request_gets_a_500_while_the_cache_redis_is_down(user, sample, redis_process, tmp_path):
    """The issue's reproduction: a real server whose CACHE_URL Redis is killed mid-run."""
    import requests

    from portal.services.delivery.tokens import create_token
    from tests.faults.test_broker_down import portal_server

    headers = {"Authorization": f"Bearer {create_token(user, 'lims').secret}"}
    log = tmp_path / "gunicorn.log"
    answers = []
    with portal_server(django_settings.CELERY_BROKER_URL, log, CACHE_URL=redis_process.url) as url:

        def round_of_requests(seed: int) -> None:
            answers.append(requests.get(f"{url}/api/images/", headers=headers, timeout=30))
            answers.append(requests.get(f"{url}/api/samples/{sample.pk}/", headers=headers, timeout=30))
            answers.append(
                requests.post(
                    f"{url}/api/images/",
                    headers=headers,
                    timeout=60,
                    data={"sample": sample.pk},
                    files={"file": (f"{seed}.tif", tiff_bytes(seed), "image/tiff")},
                )
            )

        round_of_requests(50)
        redis_process.stop()
        for seed in range(51, 56):
            round_of_requests(seed)
        redis_process.start()
        time.sleep(throttling.ThrottleCache.retry_after_s + 0.5)  # the shared counters are tried again
        round_of_requests(56)

    statuses = [answer.status_code for answer in answers]
    assert 500 not in statuses, statuses
    for answer in answers:
        if answer.status_code == 503:
            assert answer.json()["error"]["code"] == "unavailable" and int(answer.headers["Retry-After"]) > 0
        else:
            assert answer.status_code in (200, 201), (answer.status_code, answer.text[:300])
    assert statuses.count(201) == 7  # every upload was stored
    assert log.read_text().count("the shared cache is unavailable") == 1  # one gunicorn worker, logged once
