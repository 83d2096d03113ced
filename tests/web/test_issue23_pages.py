"""Issue 23 through Django's test client: what a prediction is worth, the review queue's filters, the
dashboard's provenance for members, and the small mislabellings (each test failed before its fix)."""

from __future__ import annotations

import io

import pytest
from django.urls import reverse
from PIL import Image

from portal.models import SEMImage

pytestmark = pytest.mark.django_db

NEAR_CHANCE = [[3, 4, 3], [4, 3, 3], [3, 3, 4]]  # accuracy 0.33 on three balanced classes


def _html(client, name, *args, **params) -> str:
    response = client.get(reverse(name, args=args), params)
    assert response.status_code == 200
    return response.content.decode()


# --- 3: uncertain predictions, the model's measured accuracy, blank images ------------------------------


def test_a_near_chance_models_prediction_is_shown_as_uncertain_with_its_accuracy(
    client, member, sample, make_image, make_model, predict, categories
):
    guesser = make_model(1, status="production", counts=NEAR_CHANCE)
    image = make_image(sample)
    predict(image, guesser, {"Particles": 0.66, "Fibres": 0.2, "Powder": 0.14}, categories)
    client.force_login(member)

    card = _html(client, "web:browse")
    page = _html(client, "web:image_detail", image.pk)

    assert "Particles 66\u00a0% · uncertain" in card
    assert "Suggestion only: model v1 was right on 33\u00a0% of 30 test images" in card
    assert "Classified, uncertain" in page and 'class="badge status-classified"' not in page
    assert "Suggestion only: model v1 was right on 33\u00a0%" in page


def test_a_good_models_confident_prediction_is_not_uncertain_but_a_weak_one_is(
    client, member, sample, make_image, make_model, predict, categories
):
    model = make_model(1, status="production")  # accuracy 0.8, calibration error 0.15: uncertain below 75 %
    confident, weak = make_image(sample), make_image(sample)
    predict(confident, model, {"Fibres": 0.97, "Particles": 0.02, "Powder": 0.01}, categories)
    predict(weak, model, {"Fibres": 0.7, "Particles": 0.2, "Powder": 0.1}, categories)
    client.force_login(member)

    assert "Classified, uncertain" not in _html(client, "web:image_detail", confident.pk)
    assert "Classified, uncertain" in _html(client, "web:image_detail", weak.pk)
    card = _html(client, "web:browse")
    assert "Fibres 97\u00a0%</span>" in card and "Fibres 70\u00a0% · uncertain" in card
    assert "below 75\u00a0% confidence are marked uncertain" in card


def test_a_conformal_models_worth_line_does_not_promise_a_confidence_threshold(
    client, member, sample, make_image, make_model, predict, categories
):
    """A model with prediction sets marks a 99 % answer uncertain when its set is not one category: the
    line under the suggestions said "answers below 75 % confidence are marked uncertain" beside it."""
    model = make_model(1, status="production", metadata={"conformal": {"mode": "pooled", "n": 30}})
    image = make_image(sample)
    predict(image, model, {"Fibres": 0.99, "Particles": 0.01}, categories)
    SEMImage.objects.filter(pk=image.pk).update(predicted_set=["fibres", "particles"], predicted_set_size=2)
    client.force_login(member)
    for page in (_html(client, "web:browse"), _html(client, "web:image_detail", image.pk), _html(client, "web:upload")):
        worth = page.split('class="muted small model-worth">')[1].split("</p>")[0]
        assert "confidence are marked uncertain" not in worth, worth
        assert "marked uncertain, whatever its confidence, when its prediction set holds other than one" in worth
    assert "Fibres 99\u00a0% · uncertain" in _html(client, "web:browse")


def test_a_blank_upload_is_flagged_as_blank(client, member, sample, user, categories, make_model, predict):
    from portal.services.ingestion.ingest import ingest_file

    buffer = io.BytesIO()
    Image.new("L", (320, 240), 0).save(buffer, format="PNG")
    image = ingest_file(io.BytesIO(buffer.getvalue()), filename="black.png", sample=sample, uploaded_by=user).image
    assert SEMImage.objects.get(pk=image.pk).blank is True
    predict(image, make_model(1, status="production"), {"Particles": 0.99, "Fibres": 0.01, "Powder": 0.0}, categories)
    client.force_login(member)

    page = _html(client, "web:image_detail", image.pk)

    assert "blank image" in page and "Classified, uncertain" in page
    assert "blank image" in _html(client, "web:browse")


# --- 4: review queue filters with counts ---------------------------------------------------------------


@pytest.fixture
def two_project_queue(make_image, sample, make_user, other_project, curator, categories, make_model, predict):
    """In the curator's project: one unlabelled image and one disagreement; in a second project the
    curator also curates: two unlabelled images."""
    from portal.models import Membership, Sample

    Membership.objects.create(project=other_project, user=curator, role="curator")
    other = Sample.objects.create(project=other_project, lab_sample_id="CAT-1", name="Catalyst", owner=curator)
    model = make_model(1, status="production")
    fresh, disputed = make_image(sample), make_image(sample, curated=categories["Fibres"])
    foreign = [make_image(other), make_image(other)]
    for image in [fresh, disputed, *foreign]:
        predict(image, model, {"Particles": 0.9, "Fibres": 0.05, "Powder": 0.05}, categories)
    return {"fresh": fresh, "disputed": disputed, "foreign": foreign, "other_project": other_project}


def _head(client, **params):
    response = client.get(reverse("web:review"), params)
    assert response.status_code == 200
    return response.context["image"], response.content.decode()


def test_review_filters_by_project_and_reason_with_counts(client, curator, project, two_project_queue):
    client.force_login(curator)
    other = two_project_queue["other_project"]

    image, html = _head(client)
    assert f"{project.name} (2)" in html and f"{other.name} (2)" in html
    assert "Without a curated label (3)" in html and "Model disagrees with the label (1)" in html

    image, html = _head(client, project=other.pk)
    assert image in two_project_queue["foreign"]
    assert "Without a curated label (2)" in html and "Model disagrees with the label (0)" in html

    image, _ = _head(client, reason="disputed")
    assert image == two_project_queue["disputed"]
    image, html = _head(client, project=project.pk, reason="unlabelled")
    assert image == two_project_queue["fresh"]
    assert f'action="{reverse("web:review_skip", args=[image.pk])}?project={project.pk}&amp;reason=unlabelled"' in html


def test_an_action_under_a_filter_comes_back_to_the_same_filter(client, curator, project, two_project_queue):
    client.force_login(curator)
    fresh = two_project_queue["fresh"]
    response = client.post(f"{reverse('web:review_skip', args=[fresh.pk])}?project={project.pk}&reason=unlabelled")
    assert response.url == f"{reverse('web:review')}?project={project.pk}&reason=unlabelled"
    image, html = _head(client, project=project.pk, reason="unlabelled")
    assert image is None and "Nothing left under these filters" in html


# --- 5: a member's dashboard says where its figures come from ---------------------------------------------


def test_a_members_dashboard_names_its_sources_and_invites_no_relabelling(
    client, member, project, sample, other_sample, make_image, make_model, predict, categories
):
    model = make_model(1, status="production")
    mine = make_image(sample, split="test", curated=categories["Powder"])
    predict(mine, model, {"Powder": 0.9, "Fibres": 0.05, "Particles": 0.05}, categories)
    for _ in range(2):
        foreign = make_image(other_sample, split="test", curated=categories["Fibres"])
        predict(foreign, model, {"Particles": 0.9, "Fibres": 0.05, "Powder": 0.05}, categories)
    client.force_login(member)

    html = _html(client, "web:dashboard")
    cell = _html(client, "web:confusion_cell", 1, actual="Fibres", predicted="Particles")

    assert f"1 curated image of {project.name} and 2 of projects you cannot open" in html
    assert other_sample.project.name not in html
    assert "relabel" not in html.lower()
    assert "in projects you cannot open (2 images); none is in yours" in cell
    assert "labels have changed" not in cell and "relabel" not in cell.lower()


# --- 7: the small mislabellings -------------------------------------------------------------------------------


def test_a_rolled_back_version_says_rolled_back_and_a_gate_refusal_still_says_rejected(
    client, member, make_model, trained_artifact_free_rollback
):
    client.force_login(member)
    html = _html(client, "web:training")
    rows = {row.split("?model=")[1].split('"')[0]: row for row in html.split('id="models"')[1].split("<tr>")[2:]}

    assert "Rolled back" in rows["2"] and "Rejected by the gate" not in rows["2"]
    assert "Rejected by the gate" in rows["3"]


@pytest.fixture
def trained_artifact_free_rollback(make_model, settings, tmp_path):
    """v1 then v2 in production, v2 rolled back by promotion.rollback (artifacts are placeholder files: a
    roll-back only checks that v1's exists); v3 refused by the gate."""
    from django.utils import timezone

    from portal.services.learning import promotion

    settings.MODEL_DIR = str(tmp_path)
    artifact = tmp_path / "v1.pth"
    artifact.write_bytes(b"placeholder")
    make_model(1, status="retired", artifact_path=str(artifact), promoted_at=timezone.now())
    make_model(2, status="production")
    promotion.rollback()
    make_model(3, status="rejected", gate_passed=False, gate_reason="Macro-F1 below production's")


def test_an_out_of_range_confidence_filter_says_it_was_not_applied(client, member, sample, make_image):
    make_image(sample)
    client.force_login(member)
    html = _html(client, "web:browse", conf_min="150")
    assert "filters not applied: Confidence ≥ % Enter a confidence between 0 and 100 %." in html
    assert "match the filters" not in html


def test_an_unlabelled_upload_shows_no_split(client, member, sample, make_image, categories):
    unlabelled = make_image(sample, split="train")
    curated = make_image(sample, split="train", curated=categories["Fibres"])
    client.force_login(member)
    assert '<dd id="split"><span class="muted">none until it is labelled' in _html(
        client, "web:image_detail", unlabelled.pk
    )
    assert '<dd id="split">Train</dd>' in _html(client, "web:image_detail", curated.pk)


def test_most_uncertain_first_shows_the_margin_it_sorts_by(
    client, member, sample, make_image, make_model, predict, categories
):
    model = make_model(1, status="production")
    for fibres in (0.5, 0.8):
        predict(make_image(sample), model, {"Fibres": fibres, "Particles": 1 - fibres, "Powder": 0.0}, categories)
    client.force_login(member)

    sorted_html = _html(client, "web:browse", sort="uncertain")

    assert sorted_html.index("margin 0\u00a0points") < sorted_html.index("margin 60\u00a0points")
    assert "margin 60\u00a0points" not in _html(client, "web:browse")


def test_bulk_acceptance_under_a_project_filter_labels_only_that_project(client, curator, project, two_project_queue):
    client.force_login(curator)
    other = two_project_queue["other_project"]
    counts = client.get(reverse("web:review"), {"project": other.pk}).context["bulk_counts"]
    assert sum(counts.values()) == 2  # the live count: the two unlabelled images of that project

    client.post(f"{reverse('web:review_bulk_accept')}?project={other.pk}", {"min_confidence": 90})

    labelled = set(SEMImage.objects.filter(curated_category__isnull=False).values_list("pk", flat=True))
    assert labelled == {image.pk for image in two_project_queue["foreign"]} | {two_project_queue["disputed"].pk}
