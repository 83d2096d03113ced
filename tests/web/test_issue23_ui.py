"""Issue 23 in Chromium (the `browser` fixture of test_browser.py, no worker): Enter never replaces a
curator's label with the model's guess, and the training page fits a 1024 px window."""

from __future__ import annotations

from django.urls import reverse

from portal.models import Label, SEMImage
from tests.web.conftest import PASSWORD  # noqa: F401  (users of make_user sign in with it)
from tests.web.issue14_support import browser_test, model, review_head, sign_in  # noqa: F401
from tests.web.test_browser import browser, screenshot  # noqa: F401  (the fixture)


@browser_test
def test_enter_on_a_disagreement_keeps_the_curated_label(
    browser, live_server, client, curator, sample, make_image, model, predict, categories
):
    page = browser
    image = make_image(sample, curated=categories["Fibres"])
    # A near-chance guess that disagrees with the curated label.
    predict(image, model, {"Particles": 0.4, "Fibres": 0.35, "Powder": 0.25}, categories)
    sign_in(page, live_server, client, curator)
    page.goto(reverse("web:review"))
    assert review_head(page) == image.pk
    assert "Accept Particles" not in page.text_content("#review")
    assert page.text_content("#accept-suggestion").strip().endswith("Keep Fibres")

    with page.expect_navigation():
        page.keyboard.press("Enter")

    image.refresh_from_db()
    assert image.curated_category == categories["Fibres"]
    current = Label.objects.get(image=image, is_current=True)
    assert (current.category, current.source) == (categories["Fibres"], "review")  # confirmed, left the queue
    assert not Label.objects.filter(image=image, category=categories["Particles"]).exists()
    page.problems.assert_none()


@browser_test
def test_a_number_key_still_replaces_a_disputed_label(
    browser, live_server, client, curator, sample, make_image, model, predict, categories
):
    page = browser
    image = make_image(sample, curated=categories["Fibres"])
    predict(image, model, {"Particles": 0.9, "Fibres": 0.05, "Powder": 0.05}, categories)
    sign_in(page, live_server, client, curator)
    page.goto(reverse("web:review"))
    key = page.get_attribute(f'#category-keys button[value="{categories["Particles"].pk}"]', "data-key")

    with page.expect_navigation():
        page.keyboard.press(key)

    assert SEMImage.objects.get(pk=image.pk).curated_category == categories["Particles"]
    page.problems.assert_none()
