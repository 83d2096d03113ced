"""portal.services.curation.review: the one review-queue rule behind the review page and GET /api/review-queue/.

Order, which disagreements count as already checked, scoping to curated projects, a project filter,
exclusions (the web page's skips), and the counts. The page and the API have thin tests of their own
(tests/web/test_review.py, tests/api/test_review_and_categories.py)."""

from __future__ import annotations

import pytest

from portal.models import Label
from portal.services.curation import review
from portal.services.curation.labels import confirm_label, set_label

pytestmark = pytest.mark.django_db


@pytest.fixture
def model(make_model):
    return make_model(1, status="production", classes=("Fibres", "Particles", "Powder"))


@pytest.fixture
def images(make_image, sample, categories, model, predict, curator):
    """Unlabelled: uncertain (margin 0.1), confident (0.8), unclassified. Disagreements: one from an import
    (confidence 0.7), one from the API (0.9), one a curator labelled in the review queue, one a curator
    confirmed on the image page. One agreeing label."""
    made = {}
    made["uncertain"] = make_image(sample)
    predict(made["uncertain"], model, {"Fibres": 0.5, "Particles": 0.4, "Powder": 0.1}, categories)
    made["confident"] = make_image(sample)
    predict(made["confident"], model, {"Powder": 0.9, "Fibres": 0.1, "Particles": 0.0}, categories)
    made["unclassified"] = make_image(sample)
    made["imported"] = make_image(sample, curated=categories["Particles"])
    predict(made["imported"], model, {"Fibres": 0.7, "Particles": 0.2, "Powder": 0.1}, categories)
    made["api"] = make_image(sample)
    set_label(made["api"], categories["Powder"], source=Label.Source.API, user=curator)
    predict(made["api"], model, {"Fibres": 0.9, "Particles": 0.05, "Powder": 0.05}, categories)
    made["reviewed"] = make_image(sample)
    set_label(made["reviewed"], categories["Powder"], source=Label.Source.REVIEW, user=curator)
    predict(made["reviewed"], model, {"Fibres": 0.95, "Particles": 0.05, "Powder": 0.0}, categories)
    made["page_confirmed"] = make_image(sample, curated=categories["Particles"])
    confirm_label(made["page_confirmed"], user=curator, source=Label.Source.IMAGE_PAGE)
    predict(made["page_confirmed"], model, {"Fibres": 0.96, "Particles": 0.04, "Powder": 0.0}, categories)
    made["agreeing"] = make_image(sample, curated=categories["Powder"])
    predict(made["agreeing"], model, {"Powder": 0.8, "Fibres": 0.1, "Particles": 0.1}, categories)
    return made


def test_uncertain_first_then_the_most_confident_unchecked_disagreement(curator, images):
    head = review.queue(curator, 10)
    assert head == [images["uncertain"], images["confident"], images["unclassified"], images["api"], images["imported"]]
    assert [image.review_part for image in head] == ["unlabelled"] * 3 + ["disputed"] * 2
    assert review.queue(curator, 2) == [images["uncertain"], images["confident"]]
    assert review.remaining(curator) == {"unlabelled": 3, "disputed": 2, "total": 5}


def test_checked_disagreements_leave_the_queue(curator, images, categories):
    confirm_label(images["imported"], user=curator, note="confirmed in the review queue")
    assert images["imported"] not in review.queue(curator, 10)
    assert images["imported"] not in review.disputed(curator)


def test_exclusions_and_the_head(curator, images):
    image, part = review.next_image(curator)
    assert (image, part) == (images["uncertain"], "unlabelled")
    skipped = [images["uncertain"].pk, images["confident"].pk, images["unclassified"].pk]
    assert review.next_image(curator, skipped) == (images["api"], "disputed")
    everything = [image.pk for image in review.queue(curator, 10)]
    assert review.next_image(curator, everything) == (None, "disputed")


def test_only_curated_projects_and_the_chosen_project(curator, member, images, other_sample, make_image, project):
    foreign = make_image(other_sample)
    assert foreign not in review.queue(curator, 50)
    assert review.queue(member, 50) == []
    assert review.queue(curator, 50, project_id=other_sample.project_id) == []
    assert len(review.queue(curator, 50, project_id=project.pk)) == 5


def test_bulk_candidates_are_unlabelled_predictions_above_the_threshold(curator, images):
    assert list(review.bulk_candidates(curator, 0.85)) == [images["confident"]]
    assert set(review.bulk_candidates(curator, 0.5)) == {images["uncertain"], images["confident"]}


def test_bulk_never_takes_an_answer_marked_uncertain(
    curator, images, make_model, make_image, predict, sample, categories
):
    """A guessing model's 97 % and a blank frame's answer are uncertain on every page: bulk leaves them."""
    guessing = make_model(2, classes=("Fibres", "Particles", "Powder"), counts=[[10, 0, 0], [10, 0, 0], [10, 0, 0]])
    assert guessing.uncertain_below > 1
    by_guess = make_image(sample)
    predict(by_guess, guessing, {"Fibres": 0.97, "Particles": 0.02, "Powder": 0.01}, categories)
    blank = make_image(sample, blank=True)
    predict(blank, images["confident"].predicted_by, {"Powder": 0.99, "Fibres": 0.01, "Particles": 0.0}, categories)

    candidates = set(review.bulk_candidates(curator, 0.85))

    assert candidates == {images["confident"]}
    assert by_guess.prediction_uncertain and blank.prediction_uncertain


def test_suggestions_rank_the_current_prediction(images, categories):
    ranked = [(s["category"].name, s["probability"]) for s in review.suggestions(images["uncertain"], categories)]
    assert ranked == [("Fibres", 0.5), ("Particles", 0.4), ("Powder", 0.1)]
    assert review.suggestions(images["unclassified"], categories) == []
