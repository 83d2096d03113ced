"""Issue 25: the review queue's "teach the model most" order over stored embeddings, the reason shown for
each image, and a queue without a production model that says what the lab must do."""

from __future__ import annotations

import numpy as np
import pytest
from django.urls import reverse

from portal.models import Embedding, ModelVersion, SEMImage
from portal.services.curation import review_order, similar

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def private_cache(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "i25"}}
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def model(make_model):
    return make_model(1, status=ModelVersion.Status.PRODUCTION, classes=("Fibres", "Particles", "Powder"))


def embed(image, model, vector) -> None:
    Embedding.objects.create(image=image, model_version=model, dimension=len(vector), vector=similar.encode(vector))


def point(centre: int, offset: float, dims: int = 16) -> np.ndarray:
    vector = np.zeros(dims, dtype=np.float32)
    vector[centre] = 10.0
    vector[(centre + 1) % dims] = offset
    return vector


def page(client, **params):
    response = client.get(reverse("web:review"), params)
    assert response.status_code == 200
    return response


def test_each_image_says_why_it_is_in_the_queue(client, curator, sample, make_image, model, predict, categories):
    client.force_login(curator)
    unsure = make_image(sample)
    predict(unsure, model, {"Particles": 0.48, "Powder": 0.41, "Fibres": 0.11}, categories)
    several = make_image(sample)
    predict(several, model, {"Fibres": 0.4, "Particles": 0.35, "Powder": 0.25}, categories)
    SEMImage.objects.filter(pk=several.pk).update(predicted_set=["fibres", "particles", "powder"], predicted_set_size=3)
    strange = make_image(sample)
    predict(strange, model, {"Fibres": 0.9, "Particles": 0.05, "Powder": 0.05}, categories)
    SEMImage.objects.filter(pk=strange.pk).update(status=SEMImage.Status.OUT_OF_SCOPE, predicted_set_size=1)

    seen = []
    for _ in range(3):
        response = page(client)
        seen.append((response.context["image"], response.context["image"].review_reason))
        assert 'id="review-reason"' in response.content.decode()
        client.post(reverse("web:review_skip", args=[response.context["image"].pk]))
    assert [image for image, _ in seen] == [strange, several, unsure]
    assert seen[0][1].startswith("out of scope")
    assert seen[1][1].startswith("prediction set of 3 categories")
    assert seen[2][1] == "model unsure: Particles 48\u00a0% / Powder 41\u00a0%"
    html = page(client).content.decode()
    assert "Model least sure first" in html and "Teach the model most" in html


def test_the_teach_order_picks_typical_images_of_uncovered_clusters(
    client, curator, sample, make_image, model, predict, categories, settings, monkeypatch
):
    """Few labels: select_batch's cold start over the stored embeddings; the densest image of a cluster
    no label covers comes first, an outlier never, and out-of-scope images still lead."""
    client.force_login(curator)
    settings.SEM_MIN_IMAGES_PER_CLASS = 5
    monkeypatch.setattr(review_order, "BATCH_SIZE", 3)  # KMeans into 1 labelled + 3 clusters
    images = {}
    # three tight clusters of four; cluster 0 already has a labelled member
    for cluster in range(3):
        for member, offset in enumerate((0.0, 0.1, -0.1, 0.3)):
            curated = categories["Fibres"] if (cluster, member) == (0, 0) else None
            image = make_image(sample, curated=curated)
            predict(image, model, {"Fibres": 0.5, "Particles": 0.3, "Powder": 0.2}, categories)
            embed(image, model, point(cluster * 4, offset))
            images[cluster, member] = image
    outlier = make_image(sample)
    predict(outlier, model, {"Fibres": 0.34, "Particles": 0.33, "Powder": 0.33}, categories)
    embed(outlier, model, point(14, 9.0))

    response = page(client, order="teach")
    first = response.context["image"]
    assert response.context["chosen"]["order"] == "teach"
    assert first.review_reason.startswith("typical of an uncovered cluster")
    assert first in {images[1, 0], images[2, 0]}  # the centre of an unlabelled cluster (offset 0)
    html = response.content.decode()
    assert "typical of an uncovered cluster" in html and "Teach the model most:" in html

    batch = review_order.teach_batch(model, (sample.project_id,), lambda ids: ids)
    picked = [pk for pk, _ in batch.picks]
    assert batch.phase == "typical" and batch.labels_at == 1 and batch.pool == 13
    assert images[0, 0].pk not in picked  # labelled
    assert {picked[0], picked[1]} == {images[1, 0].pk, images[2, 0].pk}  # both uncovered clusters first

    # the order survives the page's actions (the filter query keeps it)
    client.post(reverse("web:review_skip", args=[first.pk]) + "?order=teach")
    second = page(client, order="teach").context["image"]
    assert second != first and second.review_reason.startswith("typical of")

    # an out-of-scope image still comes first in this order
    SEMImage.objects.filter(pk=outlier.pk).update(status=SEMImage.Status.OUT_OF_SCOPE)
    response = page(client, order="teach")
    assert response.context["image"] == outlier
    assert response.context["image"].review_reason.startswith("out of scope")


def test_the_teach_order_follows_the_margin_once_every_category_has_its_labels(
    client, curator, sample, make_image, model, predict, categories, settings, monkeypatch
):
    client.force_login(curator)
    settings.SEM_MIN_IMAGES_PER_CLASS = 1
    for index, name in enumerate(("Fibres", "Particles", "Powder")):
        labelled = make_image(sample, curated=categories[name])
        embed(labelled, model, point(index, 0.0))
    sure = make_image(sample)
    predict(sure, model, {"Fibres": 0.9, "Particles": 0.05, "Powder": 0.05}, categories)
    embed(sure, model, point(5, 0.0))
    torn = make_image(sample)
    predict(torn, model, {"Particles": 0.48, "Powder": 0.41, "Fibres": 0.11}, categories)
    embed(torn, model, point(7, 0.0))

    computed = []
    real = review_order.compute_batch
    monkeypatch.setattr(review_order, "compute_batch", lambda *a, **k: computed.append(1) or real(*a, **k))
    response = page(client, order="teach")
    assert response.context["image"] == torn
    assert response.context["image"].review_reason == "model unsure: Particles 48\u00a0% / Powder 41\u00a0%"
    page(client, order="teach")
    assert len(computed) == 1  # the batch is cached for this model and label count

    client.post(reverse("web:review_label", args=[torn.pk]) + "?order=teach", {"category": categories["Powder"].pk})
    response = page(client, order="teach")
    assert response.context["image"] == sure  # the batch's open image, served from the cache
    assert len(computed) == 1
    client.post(reverse("web:review_label", args=[sure.pk]) + "?order=teach", {"category": categories["Fibres"].pk})
    page(client, order="teach")
    assert len(computed) == 2  # consumed and the labels moved: a new batch


def test_a_queue_without_a_production_model_explains_itself(client, curator, sample, make_image, categories, settings):
    client.force_login(curator)
    settings.SEM_MIN_IMAGES_PER_CLASS = 5
    make_image(sample, curated=categories["Fibres"], split=SEMImage.Split.TRAIN)
    waiting = make_image(sample)
    for order in ("uncertain", "teach"):
        response = page(client, order=order)
        html = response.content.decode()
        assert response.context["image"] == waiting
        assert response.context["image"].review_reason == "not classified yet"
        assert 'id="cold-start"' in html and "No model yet" in html
        assert reverse("web:upload") in html and "import_folder" in html
        cold = response.context["cold_start"]
        fibres = next(row for row in cold["not_ready"] if row["name"] == "Fibres")
        assert fibres["train_images"] == 1 and fibres["needed"] == cold["min_images_per_class"] - 1
    assert "needs a model" in html
    assert 'id="first-model-training"' not in html
    from portal.models import TrainingRun

    run = TrainingRun.objects.create(trigger=TrainingRun.Trigger.BOOTSTRAP, status=TrainingRun.Status.RUNNING)
    html = page(client).content.decode()
    assert 'id="first-model-training"' in html and "A model is running" in html
    assert reverse("web:training_run", args=[run.pk]) in html


def test_the_order_note_and_default(client, curator, sample, make_image, model, predict, categories):
    client.force_login(curator)
    make_image(sample)
    response = page(client)
    assert response.context["chosen"]["order"] == review_order.DEFAULT_ORDER
    assert 'id="cold-start"' not in response.content.decode()
    assert page(client, order="nonsense").context["chosen"]["order"] == review_order.DEFAULT_ORDER
    # a production model without embeddings (a fine-tuned network): the teaching order says it cannot teach
    html = page(client, order="teach").content.decode()
    assert 'id="no-embeddings"' in html
    image = make_image(sample)
    embed(image, model, point(0, 0.0))
    assert 'id="no-embeddings"' not in page(client, order="teach").content.decode()
