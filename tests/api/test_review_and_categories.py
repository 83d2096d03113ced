"""Categories and the review queue (uncertain first, then disagreements; curators only)."""

from __future__ import annotations

import pytest

from portal.models import Label, ModelVersion
from portal.services.curation.labels import set_label
from tests.api.conftest import classify, ingest_png, make_model

pytestmark = pytest.mark.django_db


def test_categories_are_listed_in_order(member_api):
    categories = member_api.get("/api/categories/").json()
    assert len(categories) == 10
    assert categories[0]["slug"] == "biological" and categories[-1]["slug"] == "tips"
    assert member_api.get("/api/categories/nanowires/").json()["name"] == "Nanowires"


def test_categories_are_read_only(admin_api):
    response = admin_api.post("/api/categories/", {"name": "New"}, format="json")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_review_queue_orders_uncertain_then_disagreements(
    curator_api, sample, user, categories, other_sample, outsider
):
    model = make_model(1, status=ModelVersion.Status.PRODUCTION)
    sure = classify(ingest_png(sample, user, seed=40), model, {"Fibres": 0.95, "Particles": 0.05})
    unsure = classify(ingest_png(sample, user, seed=41), model, {"Fibres": 0.48, "Particles": 0.52})
    middling = classify(ingest_png(sample, user, seed=42), model, {"Fibres": 0.7, "Particles": 0.3})
    unclassified = ingest_png(sample, user, seed=43)
    agreed = classify(ingest_png(sample, user, seed=44), model, {"Fibres": 0.8, "Particles": 0.2})
    set_label(agreed, categories["fibres"], source=Label.Source.REVIEW, user=user)
    disputed = classify(ingest_png(sample, user, seed=45), model, {"Fibres": 0.9, "Particles": 0.1})
    set_label(disputed, categories["particles"], source=Label.Source.API, user=user)
    # A disagreement a curator already checked in the review queue is not offered again (issue 15).
    confirmed = classify(ingest_png(sample, user, seed=47), model, {"Fibres": 0.9, "Particles": 0.1})
    set_label(confirmed, categories["particles"], source=Label.Source.REVIEW, user=user)
    classify(ingest_png(other_sample, outsider, seed=46), model, {"Fibres": 0.5, "Particles": 0.5})

    queue = curator_api.get("/api/review-queue/", {"limit": 10}).json()["results"]
    assert [(item["id"], item["reason"]) for item in queue] == [
        (unsure.pk, "uncertain"),
        (middling.pk, "uncertain"),
        (sure.pk, "uncertain"),
        (unclassified.pk, "uncertain"),
        (disputed.pk, "disagreement"),
    ]
    assert [item["id"] for item in curator_api.get("/api/review-queue/", {"limit": 2}).json()["results"]] == [
        unsure.pk,
        middling.pk,
    ]


def test_review_queue_is_for_curators(member_api, curator_api, project):
    response = member_api.get("/api/review-queue/")
    assert response.status_code == 403 and response.json()["error"]["code"] == "permission_denied"
    assert curator_api.get("/api/review-queue/", {"project": project.pk}).status_code == 200


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 1000}, {"limit": "many"}, {"project": "x"}])
def test_review_queue_rejects_bad_parameters(curator_api, project, params):
    response = curator_api.get("/api/review-queue/", params)
    assert response.status_code == 400
    assert set(params) <= set(response.json()["error"]["fields"])
