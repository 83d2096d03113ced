"""The image page's "Similar curated images" panel (issue 24, item 4)."""

from __future__ import annotations

import numpy as np
from django.urls import reverse

from portal.models import Embedding, ModelVersion
from portal.services.curation import similar


def embed(image, model, *weights: float) -> None:
    vector = np.zeros(2048, dtype=np.float32)
    vector[: len(weights)] = weights
    Embedding.objects.create(image=image, model_version=model, dimension=2048, vector=similar.encode(vector))


def test_the_image_page_shows_similar_curated_images_the_viewer_may_see(
    client, member, sample, other_sample, make_image, make_model, categories, monkeypatch
):
    monkeypatch.setattr(similar, "_index", None)  # this process's matrix from an earlier test's rows
    model = make_model(1, status=ModelVersion.Status.PRODUCTION)
    query = make_image(sample)
    near = make_image(sample, curated=categories["Fibres"])
    uncurated = make_image(sample)
    foreign = make_image(other_sample, curated=categories["Powder"])
    embed(query, model, 1, 0)
    embed(near, model, 1, 1)
    embed(uncurated, model, 1, 0)
    embed(foreign, model, 1, 0)
    similar.bump_generation()
    client.force_login(member)

    page = client.get(reverse("web:image_detail", args=[query.pk]))

    assert [item["image"].pk for item in page.context["similar"]] == [near.pk]
    html = page.content.decode()
    panel = html[html.index('id="similar-images"') :]
    assert reverse("web:image_detail", args=[near.pk]) in panel
    assert reverse("web:image_thumbnail", args=[near.pk]) in panel
    assert "Fibres" in panel and "similarity 0.71" in panel
    assert foreign.original_filename not in html and uncurated.original_filename not in panel


def test_the_panel_says_why_it_is_empty(client, member, sample, make_image):
    client.force_login(member)
    html = client.get(reverse("web:image_detail", args=[make_image(sample).pk])).content.decode()
    assert 'id="similar-images"' in html and "None to show" in html
