"""Issue 25 in Chromium: the Review page's order selector and the reason shown for each image."""

from __future__ import annotations

import numpy as np
import pytest
from django.urls import reverse

from portal.models import Embedding, ModelVersion
from portal.services.curation import review_order, similar
from tests.web.test_browser import browser, lab, log_in, press, screenshot  # noqa: F401  (fixture)
from tests.web.test_issue25_review_order import private_cache  # noqa: F401  (fixture, autouse)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_order_selector_and_reasons(
    browser, django_user_model, make_image, make_model, predict, categories, settings, monkeypatch
):  # noqa: F811
    settings.SEM_MIN_IMAGES_PER_CLASS = 5  # no category has its minimum: the teaching order starts typical
    monkeypatch.setattr(review_order, "BATCH_SIZE", 2)
    page = browser
    curator, sample = lab(django_user_model)
    model = make_model(1, status=ModelVersion.Status.PRODUCTION, classes=("Fibres", "Particles", "Powder"))
    # two clusters of three; the least sure image is an edge of the first, the typical ones are centres
    for cluster, margins in ((0, (0.3, 0.4, 0.02)), (8, (0.5, 0.6, 0.7))):
        for offset, margin in zip((0.0, 0.2, 0.9), margins):
            image = make_image(sample)
            top = (1 + margin) / 2
            predict(image, model, {"Fibres": round(top, 2), "Particles": round(1 - top, 2), "Powder": 0.0}, categories)
            vector = np.zeros(16, dtype=np.float32)
            vector[cluster], vector[cluster + 1] = 10.0, offset
            Embedding.objects.create(image=image, model_version=model, dimension=16, vector=similar.encode(vector))
    log_in(page, curator.username)

    page.goto(reverse("web:review"))
    assert page.locator("#filter-order").input_value() == "uncertain"
    assert page.inner_text("#review-reason") == "Why it is here: model unsure: Fibres 51\u00a0% / Particles 49\u00a0%"
    assert "Model least sure first:" in page.inner_text("#order-note")
    screenshot(page, "25-review-uncertain")

    page.select_option("#filter-order", "teach")
    with page.expect_navigation():
        page.click("#review-filters button[type=submit]")
    assert "order=teach" in page.url
    assert "Teach the model most:" in page.inner_text("#order-note")
    assert "typical of an uncovered cluster" in page.inner_text("#review-reason")
    screenshot(page, "25-review-teach")
    first = page.get_attribute("#review", "data-image-id")

    press(page, "1")  # label it: the page comes back in the same order with the batch's other image
    assert "order=teach" in page.url and page.locator("#filter-order").input_value() == "teach"
    assert page.get_attribute("#review", "data-image-id") != first
    assert "typical of an uncovered cluster" in page.inner_text("#review-reason")
    page.problems.assert_none()
