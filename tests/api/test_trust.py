"""Prediction sets and out-of-scope images in the portal: review order, API and webhook fields, the
curator's "not SEM / not classifiable" mark (issue 24, items 2 and 3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from portal.models import ModelVersion, Prediction, SEMImage
from tests.api.conftest import ingest_png, make_model

pytestmark = pytest.mark.django_db

CLASSES = ["Fibres", "Particles", "Powder"]


def _store(image, model, probabilities, *, prediction_set=None, out_of_scope=False, coverage=0.9):
    """Save a prediction through the classification service, with the set and flag a worker attaches."""
    from classifier.engine import prediction_from_probabilities
    from portal.services.learning.classification_results import save_results

    result = prediction_from_probabilities(np.array(probabilities), CLASSES)
    result.prediction_set = prediction_set
    result.set_coverage = coverage if prediction_set is not None else None
    result.out_of_scope, result.ood_score = out_of_scope, 1.7 if out_of_scope else 0.4
    save_results(model, CLASSES, {image.pk: result})
    image.refresh_from_db()
    return image


@pytest.fixture
def model(db):
    return make_model(
        1,
        status=ModelVersion.Status.PRODUCTION,
        classes=CLASSES,
        metrics={"accuracy": 0.9, "per_class": {"Fibres": {"support": 5}, "Particles": {"support": 5}}},
    )


@pytest.fixture
def trio(sample, user, model):
    """A confident singleton (smallest margin), a two-category set, and an out-of-scope image."""
    singleton = _store(ingest_png(sample, user, seed=11), model, [0.50, 0.45, 0.05], prediction_set=["Fibres"])
    pair = _store(ingest_png(sample, user, seed=12), model, [0.80, 0.15, 0.05], prediction_set=["Fibres", "Particles"])
    outside = _store(
        ingest_png(sample, user, seed=13), model, [0.98, 0.01, 0.01], prediction_set=["Fibres"], out_of_scope=True
    )
    return singleton, pair, outside


def test_the_review_queue_puts_out_of_scope_first_then_sets_of_several_categories(trio, user):
    from portal.services.curation import review

    singleton, pair, outside = trio
    assert [image.pk for image in review.queue(user, 10)] == [outside.pk, pair.pk, singleton.pk]


def test_only_a_singleton_set_in_scope_counts_as_confident(trio):
    singleton, pair, outside = trio
    assert (singleton.status, pair.status, outside.status) == ("classified", "classified", "out_of_scope")
    rows = SEMImage.objects.select_related("predicted_by").filter(pk__in=[i.pk for i in trio]).order_by("pk")
    # the singleton has a smaller confidence (0.50) than the out-of-scope image (0.98): the set decides
    assert [image.prediction_uncertain for image in rows] == [False, True, True]


def test_bulk_acceptance_takes_only_confident_predictions(trio, user):
    from portal.services.curation import review
    from portal.web.review_queue import bulk_counts

    singleton, _, _ = trio
    assert list(review.bulk_candidates(user, 0.0).values_list("pk", flat=True)) == [singleton.pk]
    assert bulk_counts(user) == {50: 1}  # the 0.98 out-of-scope and the 0.80 two-category set are left out


def test_the_api_and_the_webhook_payload_say_the_set_and_out_of_scope(trio, curator_api):
    from portal.services.delivery.webhooks import image_data

    _, pair, outside = trio
    body = curator_api.get(f"/api/images/{pair.pk}/").json()
    assert body["predicted_set"] == ["fibres", "particles"] and body["predicted_set_label"] == "Fibres or Particles"
    assert body["out_of_scope"] is False and body["status"] == "classified"
    flagged = curator_api.get(f"/api/images/{outside.pk}/").json()
    assert flagged["status"] == "out_of_scope" and flagged["out_of_scope"] is True
    assert image_data(SEMImage.objects.get(pk=outside.pk))["out_of_scope"] is True
    [prediction] = curator_api.get(f"/api/images/{outside.pk}/predictions/").json()["results"]
    assert prediction["out_of_scope"] is True and prediction["ood_score"] == pytest.approx(1.7)
    assert prediction["prediction_set"] == ["fibres"] and prediction["set_coverage"] == 0.9
    queue = curator_api.get("/api/review-queue/").json()["results"]
    assert [(item["id"], item["reason"]) for item in queue][:2] == [
        (outside.pk, "out_of_scope"),
        (pair.pk, "uncertain"),
    ]


def test_the_image_page_shows_the_set(trio, client, user):
    singleton, pair, outside = trio
    client.force_login(user)
    page = client.get(f"/images/{pair.pk}/").content.decode()
    assert "Fibres or Particles" in page and "not confident" in page
    assert "(confident:" in client.get(f"/images/{singleton.pk}/").content.decode()
    # a one-category set on an out-of-scope image is not a confident prediction
    assert "(not confident, out of scope:" in client.get(f"/images/{outside.pk}/").content.decode()


def test_a_curators_not_classifiable_mark_keeps_the_image_out_of_training_and_review(trio, client, user, categories):
    from portal.services.curation import review
    from portal.services.curation.labels import set_label
    from portal.services.learning.datasets import training_data

    _, _, outside = trio
    for image in trio:
        set_label(image, categories["fibres"], source="page", user=user)
    SEMImage.objects.filter(pk__in=[image.pk for image in trio]).update(split=SEMImage.Split.TRAIN)
    client.force_login(user)

    response = client.post(f"/images/{outside.pk}/not-classifiable/", {"value": "1"})

    assert response.status_code == 302 and SEMImage.objects.get(pk=outside.pk).not_classifiable
    data = training_data()
    assert len(data.train_items) == 2  # kept as an image, but not learnt from as a category...
    # ...but as what the out-of-scope detector should call outside (its derivative, a local file)
    assert len(data.outliers) == 1 and Path(data.outliers[0]).read_bytes() == outside.derivative.read()
    SEMImage.objects.filter(pk=outside.pk).update(curated_category=None)
    assert outside.pk not in [image.pk for image in review.queue(user, 10)]
    client.post(f"/images/{outside.pk}/not-classifiable/", {"value": "0"})
    assert not SEMImage.objects.get(pk=outside.pk).not_classifiable


def test_a_member_cannot_mark_an_image(trio, client, member):
    client.force_login(member)
    assert client.post(f"/images/{trio[2].pk}/not-classifiable/", {"value": "1"}).status_code == 403
    assert not Prediction.objects.filter(image=trio[2]).first().image.not_classifiable


def test_a_lims_marks_and_clears_not_classifiable_through_the_api(trio, curator_api, user):
    from portal.services.curation import review

    _, _, outside = trio
    url = f"/api/images/{outside.pk}/not-classifiable/"

    marked = curator_api.post(url, {"value": True}, format="json")

    assert marked.status_code == 200 and marked.json()["not_classifiable"] is True
    assert marked.json()["id"] == outside.pk and marked.json()["status"] == "out_of_scope"
    assert SEMImage.objects.get(pk=outside.pk).not_classifiable
    assert outside.pk not in [image.pk for image in review.queue(user, 10)]
    assert curator_api.get(f"/api/images/{outside.pk}/").json()["not_classifiable"] is True
    again = curator_api.post(url, {"value": True}, format="json")
    assert again.status_code == 200 and again.json()["not_classifiable"] is True  # idempotent
    cleared = curator_api.post(url, {"value": False}, format="json")
    assert cleared.status_code == 200 and cleared.json()["not_classifiable"] is False
    assert outside.pk in [image.pk for image in review.queue(user, 10)]


@pytest.mark.parametrize("body", [{}, {"value": "true"}, {"value": 1}, {"value": None}])
def test_the_not_classifiable_mark_needs_a_json_boolean(trio, curator_api, body):
    response = curator_api.post(f"/api/images/{trio[2].pk}/not-classifiable/", body, format="json")
    assert response.status_code == 400 and "value" in response.json()["error"]["fields"]
    assert not SEMImage.objects.get(pk=trio[2].pk).not_classifiable


def test_only_the_projects_curators_mark_through_the_api(trio, member_api, outsider):
    from tests.helpers import token_client

    url = f"/api/images/{trio[2].pk}/not-classifiable/"
    refused = member_api.post(url, {"value": True}, format="json")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
    assert token_client(outsider).post(url, {"value": True}, format="json").status_code == 404
    assert not SEMImage.objects.get(pk=trio[2].pk).not_classifiable


def test_a_model_without_a_calibration_falls_back_to_the_confidence_rule(sample, user, model, settings):
    settings.SEM_UNCERTAIN_BELOW = 0.6
    sure = _store(ingest_png(sample, user, seed=21), model, [0.9, 0.05, 0.05])
    unsure = _store(ingest_png(sample, user, seed=22), model, [0.5, 0.45, 0.05])
    assert sure.predicted_set_size is None and sure.predicted_set_label == ""
    assert not SEMImage.objects.select_related("predicted_by").get(pk=sure.pk).prediction_uncertain
    assert SEMImage.objects.select_related("predicted_by").get(pk=unsure.pk).prediction_uncertain


def test_the_training_run_page_says_how_sets_and_out_of_scope_calls_are_made(client, admin_user):
    from classifier.conformal import fit_conformal
    from classifier.ood import fit_knn, fit_outlier_classifier
    from portal.models import TrainingRun

    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(25, int), np.ones(6, int), np.full(6, 2)]
    probabilities = rng.dirichlet(np.ones(3), len(labels))
    report, _ = fit_knn(rng.normal(size=(30, 4)), rng.random(37))
    folds = [(np.r_[10:30], np.r_[0:10]), (np.r_[0:10], np.r_[10:30])]
    report["outlier_classifier"], _ = fit_outlier_classifier(
        rng.normal(size=(30, 4)), rng.normal(size=(7, 4)) + 3, folds
    )
    metadata = {"conformal": fit_conformal(probabilities, labels, CLASSES), "out_of_scope": report}
    model = make_model(3, classes=CLASSES)
    ModelVersion.objects.filter(pk=model.pk).update(metadata=metadata)
    run = TrainingRun.objects.create(
        trigger="manual", status="succeeded", active=None, model_version=model, config={"arch": "efficientnet_lite0"}
    )
    client.force_login(admin_user)

    page = client.get(f"/training/runs/{run.pk}/").content.decode()

    assert "class-conditional where enough, pooled otherwise" in page
    assert "own calibration (≥ 20 images): Fibres" in page and "pooled calibration: Particles, Powder" in page
    assert (
        "deep k-nearest neighbours" in page
        and "about 5\u00a0% of 37 curated images (each measured against the other series)" in page
    )
    assert "outlier exposure" in page and "7 outlier images" in page and "either detector flags" in page
    assert "fitted without its series" in page  # metadata from before held_out_by: series, as then

    # trained without series (one sample): the folds held out clusters of similar images, and the page says so
    metadata["conformal"]["held_out_by"] = metadata["out_of_scope"]["held_out_by"] = "clusters of similar images"
    ModelVersion.objects.filter(pk=model.pk).update(metadata=metadata)
    page = client.get(f"/training/runs/{run.pk}/").content.decode()
    assert "fitted without its cluster of similar images (no series known)" in page
    assert "each measured against the other clusters of similar images" in page
