"""Browse on a phone: the filter panel folds away (a <details>, closed unless a filter is set) so that the
images come first; on a desktop it stays the open sidebar."""

from __future__ import annotations

from django.urls import reverse

from tests.web.issue14_support import browser_test, screenshot, sign_in  # noqa: F401
from tests.web.test_browser import browser  # noqa: F401  (the fixture)


def test_a_filter_opens_the_folded_filter_panel(client, member):
    client.force_login(member)
    plain = client.get(reverse("web:browse")).content.decode()
    assert '<details id="filter-panel">' in plain  # folded on a phone until opened
    filtered = client.get(reverse("web:browse"), {"status": "classified", "sort": "uncertain"}).content.decode()
    assert '<details id="filter-panel" open>' in filtered and "· 1 active" in filtered
    sorted_only = client.get(reverse("web:browse"), {"sort": "uncertain"}).content.decode()
    assert '<details id="filter-panel">' in sorted_only  # an order is no filter


@browser_test
def test_a_phone_shows_images_on_its_first_screen_and_a_desktop_the_filters(
    browser, live_server, client, member, make_image, sample
):
    page = browser
    for _ in range(4):
        make_image(sample)
    sign_in(page, live_server, client, member)

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(reverse("web:browse"))
    screenshot(page, "number-style-browse-390")
    card = page.locator(".card").first.bounding_box()
    assert card["y"] + card["height"] / 2 < 844, card  # the first card is on the first screen
    assert not page.locator("#id_project").is_visible()
    # The keyboard opens the folded panel: Tab to its summary, Enter.
    page.focus("#filter-panel > summary")
    page.keyboard.press("Enter")
    assert page.locator("#id_project").is_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390

    for width, height in ((1024, 768), (1280, 800)):
        page.set_viewport_size({"width": width, "height": height})
        page.goto(reverse("web:browse"))
        screenshot(page, f"number-style-browse-{width}")
        assert page.locator("#id_project").is_visible(), width  # the sidebar shows the filters
        filters, first = page.locator("form.filters").bounding_box(), page.locator(".card").first.bounding_box()
        assert filters["x"] + filters["width"] <= first["x"] and first["y"] < height, (width, filters, first)
    page.problems.assert_none()
