"""Dashboard: model selection, per-class table, confusion matrix (counts, row %, cell links and
cell pages), version history, curated class distribution, backlog and observed accuracy."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from portal.models import Label, SEMImage

pytestmark = pytest.mark.django_db


def test_dashboard_without_any_model(client, member):
    client.force_login(member)
    response = client.get(reverse("web:dashboard"))
    assert response.status_code == 200
    assert "No model has been trained yet" in response.content.decode()


def test_production_model_is_shown_by_default_and_any_version_can_be_picked(client, member, make_model):
    make_model(1, status="retired", counts=[[6, 4], [4, 6]], classes=("Fibres", "Particles"))
    make_model(2, status="production", counts=[[9, 1], [1, 9]], classes=("Fibres", "Particles"))
    make_model(3, status="candidate", counts=[[7, 3], [1, 9]], classes=("Fibres", "Particles"))
    client.force_login(member)
    response = client.get(reverse("web:dashboard"))
    assert response.context["model"].version == 2
    assert response.context["metrics"]["accuracy"] == 0.9
    assert 'id="stat-accuracy">90\u00a0%<' in response.content.decode()
    picked = client.get(reverse("web:dashboard"), {"model": 3})
    assert picked.context["model"].version == 3
    history = [(row["version"], row["accuracy"]) for row in picked.context["history"]]
    assert history == [(1, 0.6), (2, 0.9), (3, 0.8)]
    chart_data = picked.content.decode().split('id="history-data" type="application/json">')[1].split("</script>")[0]
    assert [row["version"] for row in json.loads(chart_data)] == [1, 2, 3]


def test_per_class_table_and_confusion_matrix(client, member, make_model):
    make_model(1, status="production", counts=[[8, 2, 0], [1, 3, 0], [0, 0, 5]])
    client.force_login(member)
    response = client.get(reverse("web:dashboard"))
    names = [row["name"] for row in response.context["per_class"]]
    assert names == ["Fibres", "Particles", "Powder"]
    first_row = response.context["matrix"][0]
    assert [cell["count"] for cell in first_row["cells"]] == [8, 2, 0]
    assert [round(cell["percent"]) for cell in first_row["cells"]] == [80, 20, 0]
    html = response.content.decode()
    cell_url = reverse("web:confusion_cell", args=[1]) + "?actual=Fibres&amp;predicted=Particles"
    assert cell_url in html
    assert 'data-percent="20.0"' in html


def test_confusion_cell_lists_that_cells_test_images_for_relabelling(
    client, curator, member, sample, other_sample, make_image, make_model, predict, categories
):
    model = make_model(1, status="production")
    in_cell = make_image(sample, split="test", curated=categories["Fibres"])
    predict(in_cell, model, {"Particles": 0.6, "Fibres": 0.3, "Powder": 0.1}, categories)
    train_split = make_image(sample, split="train", curated=categories["Fibres"])
    predict(train_split, model, {"Particles": 0.6, "Fibres": 0.3, "Powder": 0.1}, categories)
    right = make_image(sample, split="test", curated=categories["Fibres"])
    predict(right, model, {"Fibres": 0.9, "Particles": 0.05, "Powder": 0.05}, categories)
    foreign = make_image(other_sample, split="test", curated=categories["Fibres"])
    predict(foreign, model, {"Particles": 0.6, "Fibres": 0.3, "Powder": 0.1}, categories)
    url = reverse("web:confusion_cell", args=[1]) + "?actual=Fibres&predicted=Particles"

    client.force_login(curator)
    response = client.get(url)
    assert [image.pk for image in response.context["page"].object_list] == [in_cell.pk]
    assert "Relabel</button>" in response.content.decode()
    client.post(reverse("web:image_label", args=[in_cell.pk]), {"category": categories["Particles"].pk, "next": url})
    assert SEMImage.objects.get(pk=in_cell.pk).curated_category == categories["Particles"]
    assert list(client.get(url).context["page"].object_list) == []

    client.force_login(member)
    assert "Relabel</button>" not in client.get(url).content.decode()


def test_curated_distribution_and_backlog_are_scoped(client, member, sample, other_sample, make_image, categories):
    make_image(sample, curated=categories["Tips"])
    make_image(sample, curated=categories["Tips"])
    make_image(sample, curated=categories["Fibres"])
    make_image(sample)
    make_image(sample, status="failed")
    make_image(other_sample, curated=categories["Tips"])
    client.force_login(member)
    response = client.get(reverse("web:dashboard"))
    distribution = {row["name"]: row["count"] for row in response.context["distribution"]}
    assert distribution["Tips"] == 2 and distribution["Fibres"] == 1 and distribution["Powder"] == 0
    assert len(distribution) == 10
    backlog = response.context["backlog"]
    assert (backlog["images"], backlog["unlabelled"], backlog["waiting"], backlog["failed"]) == (5, 2, 4, 1)


def test_observed_accuracy_counts_review_labels_since_promotion(
    client, curator, sample, make_image, make_model, predict, categories
):
    model = make_model(1, status="production", promoted_at=timezone.now() - timedelta(hours=1))
    images = [make_image(sample) for _ in range(4)]
    for image in images:
        predict(image, model, {"Fibres": 0.8, "Particles": 0.1, "Powder": 0.1}, categories)
    client.force_login(curator)
    assert client.get(reverse("web:dashboard")).context["observed"]["total"] == 0
    # Three reviews: two agree with the model, one corrects it.
    for image, name in zip(images, ["Fibres", "Fibres", "Powder"]):
        client.post(reverse("web:review_label", args=[image.pk]), {"category": categories[name].pk})
    # A label from before the promotion is not evidence about this model.
    old = Label.objects.create(image=images[3], category=categories["Powder"], source="review", created_by=curator)
    Label.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=1))
    observed = client.get(reverse("web:dashboard")).context["observed"]
    assert (observed["correct"], observed["total"]) == (2, 3)
    assert observed["accuracy"] == pytest.approx(2 / 3)


def _dashboard_queries(client) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        response = client.get(reverse("web:dashboard"))
    assert response.status_code == 200
    return len(captured)


def test_dashboard_query_count_is_constant_as_model_versions_and_images_grow(
    client, member, sample, categories, make_model, make_image, predict
):
    production = make_model(1, status="production")

    def grow(versions: range, images: int) -> None:
        for version in versions:
            make_model(version, status="retired")
        for _ in range(images):
            image = make_image(sample, curated=categories["Powder"])
            predict(image, production, {"Fibres": 0.7, "Particles": 0.2, "Powder": 0.1}, categories)

    client.force_login(member)
    grow(range(2, 3), images=3)
    small = _dashboard_queries(client)
    grow(range(3, 11), images=30)  # 10 model versions, 33 classified and labelled images

    assert _dashboard_queries(client) == small
    large = client.get(reverse("web:dashboard"))
    assert [row["version"] for row in large.context["history"]] == list(range(1, 11))  # all really read
    assert large.context["backlog"]["images"] == 33
