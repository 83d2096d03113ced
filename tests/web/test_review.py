"""Review queue: order, keyboard actions as POSTs (label, accept, confirm, skip, undo), bulk
acceptance, and the remaining count."""

from __future__ import annotations

import pytest
from django.urls import reverse

from portal.models import Label, SEMImage

pytestmark = pytest.mark.django_db


@pytest.fixture
def model(make_model):
    return make_model(1, status="production", classes=("Fibres", "Particles", "Powder"))


@pytest.fixture
def queue(make_image, sample, categories, model, predict):
    """uncertain (margin 0.1), confident (margin 0.8), unclassified, a disputed import label, an agreeing label."""
    uncertain = make_image(sample)
    predict(uncertain, model, {"Fibres": 0.5, "Particles": 0.4, "Powder": 0.1}, categories)
    confident = make_image(sample)
    predict(confident, model, {"Powder": 0.9, "Fibres": 0.1, "Particles": 0.0}, categories)
    unclassified = make_image(sample)
    disputed = make_image(sample, curated=categories["Particles"])
    predict(disputed, model, {"Fibres": 0.7, "Particles": 0.2, "Powder": 0.1}, categories)
    agreeing = make_image(sample, curated=categories["Powder"])
    predict(agreeing, model, {"Powder": 0.8, "Fibres": 0.1, "Particles": 0.1}, categories)
    return {"uncertain": uncertain, "confident": confident, "unclassified": unclassified, "disputed": disputed}


def head(client):
    response = client.get(reverse("web:review"))
    assert response.status_code == 200
    return response.context["image"], response


def test_queue_order_and_count(client, curator, queue):
    client.force_login(curator)
    image, response = head(client)
    assert image == queue["uncertain"]
    assert response.context["remaining"] == {"unlabelled": 3, "disputed": 1, "total": 4}
    suggestions = [(s["category"].name, s["probability"]) for s in response.context["suggestions"]]
    assert suggestions == [("Fibres", 0.5), ("Particles", 0.4), ("Powder", 0.1)]
    order = []
    for _ in range(4):
        image, _ = head(client)
        order.append(image)
        client.post(reverse("web:review_skip", args=[image.pk]))
    assert order == [queue["uncertain"], queue["confident"], queue["unclassified"], queue["disputed"]]
    image, response = head(client)
    assert image is None and "Nothing left to review" in response.content.decode()


def test_number_key_labels_and_enter_accepts(client, curator, queue, categories):
    client.force_login(curator)
    client.post(reverse("web:review_label", args=[queue["uncertain"].pk]), {"category": categories["Particles"].pk})
    queue["uncertain"].refresh_from_db()
    assert queue["uncertain"].curated_category == categories["Particles"]
    image, response = head(client)
    assert image == queue["confident"]
    accept_form = response.content.decode()
    assert 'id="accept-suggestion"' in accept_form and "Accept Powder" in accept_form
    client.post(reverse("web:review_label", args=[image.pk]), {"category": categories["Powder"].pk})
    label = Label.objects.get(image=image, is_current=True)
    assert (label.category, label.source, label.created_by) == (categories["Powder"], "review", curator)
    assert head(client)[1].context["remaining"]["total"] == 2


def test_shortcut_keys_map_to_the_first_ten_categories(client, curator, queue, categories):
    client.force_login(curator)
    _, response = head(client)
    shortcuts = response.context["shortcuts"]
    assert [key for key, _ in shortcuts] == list("1234567890")
    html = response.content.decode()
    for key, category in shortcuts:
        assert f'value="{category.pk}" data-key="{key}"' in html


def test_disputed_label_confirmed_leaves_the_queue(client, curator, queue, categories):
    client.force_login(curator)
    for image in (queue["uncertain"], queue["confident"], queue["unclassified"]):
        client.post(reverse("web:review_skip", args=[image.pk]))
    image, response = head(client)
    assert image == queue["disputed"] and response.context["part"] == "disputed"
    # Pressing the curated category's key confirms the label against the model.
    client.post(reverse("web:review_label", args=[image.pk]), {"category": categories["Particles"].pk})
    labels = list(Label.objects.filter(image=image).order_by("created_at", "id"))
    assert [(label.category.name, label.source, label.is_current) for label in labels] == [
        ("Particles", "import", False),
        ("Particles", "review", True),
    ]
    assert head(client)[0] is None
    # Undo withdraws the confirmation: the import label is current again and the dispute is back.
    client.post(reverse("web:review_undo"))
    assert Label.objects.get(image=image, is_current=True).source == "import"
    client.post(reverse("web:review_unskip"))
    assert head(client)[1].context["remaining"]["disputed"] == 1


def test_undo_restores_the_previous_state(client, curator, queue, categories):
    client.force_login(curator)
    uncertain = queue["uncertain"]
    client.post(reverse("web:review_label", args=[uncertain.pk]), {"category": categories["Fibres"].pk})
    assert head(client)[0] != uncertain
    client.post(reverse("web:review_undo"))
    uncertain.refresh_from_db()
    assert uncertain.curated_category is None
    assert not Label.objects.filter(image=uncertain).exists()
    assert head(client)[0] == uncertain
    response = client.post(reverse("web:review_undo"), follow=True)
    assert "Nothing to undo" in response.content.decode()


def test_skip_is_per_session(client, curator, queue):
    client.force_login(curator)
    client.post(reverse("web:review_skip", args=[queue["uncertain"].pk]))
    assert head(client)[0] == queue["confident"]
    client.post(reverse("web:review_unskip"))
    assert head(client)[0] == queue["uncertain"]


def test_bulk_accept_above_confidence_and_undo(client, curator, queue, categories):
    client.force_login(curator)
    response = client.post(reverse("web:review_bulk_accept"), {"min_confidence": 85}, follow=True)
    assert "Accepted 1 prediction" in response.content.decode()
    confident = SEMImage.objects.get(pk=queue["confident"].pk)
    assert confident.curated_category == categories["Powder"]
    assert SEMImage.objects.get(pk=queue["uncertain"].pk).curated_category is None
    client.post(reverse("web:review_undo"))
    assert SEMImage.objects.get(pk=queue["confident"].pk).curated_category is None


def test_bulk_accept_rejects_low_thresholds(client, curator, queue):
    client.force_login(curator)
    response = client.post(reverse("web:review_bulk_accept"), {"min_confidence": 10}, follow=True)
    assert "between 50 and 100" in response.content.decode()
    assert not Label.objects.filter(source="review").exists()


def test_queue_covers_only_curated_projects(client, make_user, project, other_sample, make_image, categories):
    make_image(other_sample)
    curator_here = make_user("cara", project=project, role="curator")
    client.force_login(curator_here)
    image, response = head(client)
    assert image is None and response.context["remaining"]["total"] == 0
    foreign = make_image(other_sample)
    response = client.post(reverse("web:review_label", args=[foreign.pk]), {"category": categories["Fibres"].pk})
    assert response.status_code == 404
    assert SEMImage.objects.get(pk=foreign.pk).curated_category is None


def test_undo_only_touches_own_labels(client, curator, queue, categories, make_user, project):
    from portal.web.review_queue import UNDO_KEY

    client.force_login(curator)
    client.post(reverse("web:review_label", args=[queue["uncertain"].pk]), {"category": categories["Fibres"].pk})
    alices_label = Label.objects.get(image=queue["uncertain"], is_current=True)
    # Even with alice's label id planted in his undo stack, another curator cannot withdraw it.
    client.force_login(make_user("carl", project=project, role="curator"))
    session = client.session
    session[UNDO_KEY] = [[alices_label.pk]]
    session.save()
    client.post(reverse("web:review_undo"))
    assert Label.objects.filter(pk=alices_label.pk, is_current=True).exists()
    assert SEMImage.objects.get(pk=queue["uncertain"].pk).curated_category == categories["Fibres"]
