"""GET /api/images/{id}/similar/: curated images nearest in the production model's embeddings (issue 24, item 4)."""

from __future__ import annotations

import numpy as np
import pytest

from portal.models import Category, Embedding, ModelVersion
from portal.services.curation import similar
from portal.services.curation.labels import set_label
from tests.api.conftest import ingest_png, make_model

DIMENSION = 2048


def direction(*weights: float) -> np.ndarray:
    """A vector along the first axes: cosine between two of them is plain to compute by hand."""
    vector = np.zeros(DIMENSION, dtype=np.float32)
    vector[: len(weights)] = weights
    return vector


def embed(image, model, vector) -> None:
    Embedding.objects.create(image=image, model_version=model, dimension=vector.size, vector=similar.encode(vector))


@pytest.fixture
def scene(sample, other_sample, user, outsider, monkeypatch):
    """A query image in `project`, curated neighbours in both projects, one uncurated twin."""
    monkeypatch.setattr(similar, "_index", None)  # this process's matrix from an earlier test's rows
    fibres, particles = Category.objects.order_by("pk")[:2]
    model = make_model(1, status=ModelVersion.Status.PRODUCTION)
    images = {name: ingest_png(sample, user, seed) for seed, name in enumerate(["query", "near", "far", "twin"], 10)}
    images["foreign"] = ingest_png(other_sample, outsider, 20)
    vectors = {
        "query": direction(1, 0),
        "near": direction(1, 1),  # cosine 0.7071
        "far": direction(0, 1),  # cosine 0
        "twin": direction(2, 0),  # cosine 1, but not curated
        "foreign": direction(3, 0),  # cosine 1, another project
    }
    for name, image in images.items():
        embed(image, model, vectors[name])
    set_label(images["near"], fibres, source="import")
    set_label(images["far"], particles, source="import")
    set_label(images["foreign"], fibres, source="import")
    similar.bump_generation()
    return images, {"fibres": fibres, "particles": particles}, model


def url(image, k=None) -> str:
    return f"/api/images/{image.pk}/similar/" + (f"?k={k}" if k is not None else "")


def test_a_member_gets_the_nearest_curated_images_of_their_projects_only(member_api, scene):
    images, categories, model = scene

    body = member_api.get(url(images["query"])).json()

    assert body["model_version"] == model.version
    assert [item["id"] for item in body["results"]] == [images["near"].pk, images["far"].pk]
    near = body["results"][0]
    assert near["label"] == categories["fibres"].slug
    assert near["similarity"] == pytest.approx(0.7071, abs=1e-3)
    assert near["thumbnail_url"] == f"/api/images/{images['near'].pk}/thumbnail/"
    assert member_api.get(near["thumbnail_url"]).status_code == 200


def test_an_admin_also_sees_other_projects_and_k_limits_the_answer(admin_api, scene):
    images, _categories, _model = scene

    body = admin_api.get(url(images["query"], k=1)).json()

    assert [(item["id"], item["similarity"]) for item in body["results"]] == [(images["foreign"].pk, 1.0)]


def test_another_projects_image_is_not_found_and_never_listed(outsider_api, scene):
    images, _categories, _model = scene

    assert outsider_api.get(url(images["query"])).status_code == 404
    body = outsider_api.get(url(images["foreign"])).json()
    assert body["results"] == []  # its project's only image: the query's own project is out of reach


def test_a_newly_curated_image_joins_once_the_refresh_interval_allows(
    curator_api, scene, django_capture_on_commit_callbacks, settings
):
    images, categories, _model = scene
    settings.SEM_SIMILAR_REFRESH_S = 3600
    assert curator_api.get(url(images["query"])).json()["results"][0]["id"] == images["near"].pk

    with django_capture_on_commit_callbacks(execute=True):
        set_label(images["twin"], categories["particles"], source="import")

    # Within the interval the loaded matrix serves (one reload per burst of labels, not per label).
    assert curator_api.get(url(images["query"])).json()["results"][0]["id"] == images["near"].pk
    settings.SEM_SIMILAR_REFRESH_S = 0
    first = curator_api.get(url(images["query"])).json()["results"][0]
    assert (first["id"], first["label"]) == (images["twin"].pk, categories["particles"].slug)


def test_no_embedding_for_the_production_model_gives_an_empty_list(member_api, scene):
    images, _categories, model = scene
    Embedding.objects.filter(image=images["query"]).delete()

    assert member_api.get(url(images["query"])).json() == {"model_version": model.version, "results": []}


@pytest.mark.parametrize("k", ["0", "51", "six"])
def test_an_invalid_k_is_a_400(member_api, scene, k):
    images, _categories, _model = scene
    response = member_api.get(url(images["query"], k=k))
    assert response.status_code == 400
    assert "k" in response.json()["error"]["fields"]


def test_a_cache_outage_fails_neither_labels_nor_searches(
    curator_api, scene, settings, django_capture_on_commit_callbacks
):
    images, categories, _model = scene
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens there
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }

    with django_capture_on_commit_callbacks(execute=True):
        set_label(images["twin"], categories["particles"], source="import")
    response = curator_api.get(url(images["query"]))

    assert response.status_code == 200
    assert images["near"].pk in [item["id"] for item in response.json()["results"]]
