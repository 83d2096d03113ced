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
    screenshot(page, "issue23-review-disagreement")

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


# --- 6: the Training page at 1024 px -------------------------------------------------------------------------

LONG_REASON = (
    "Not shown to be at least as good as production: macro-F1 difference +0.031, 90% interval [-0.012, +0.080] "
    "on 60 test images (2000 paired resamples); the lower bound must be above +0.000\n"
    "Rolled back to v1 by ada-admin on 2026-12-06 14:23"
)


def _gate(decision: str) -> dict:
    recall = {"diff": -0.05, "low": -0.153, "high": 0.051, "support": 20}
    return {
        "level": 0.9,
        "resamples": 2000,
        "n": 60,
        "tolerance": 0.0,
        "decision": decision,
        "macro_f1": {"diff": 0.031, "low": -0.012, "high": 0.08},
        "recall": {"Patterned_surface": recall, "Porous_Sponge": {**recall, "low": -0.01}},
    }


@browser_test
def test_training_page_fits_a_1024_px_window(browser, live_server, client, admin_user, make_model):
    page = browser
    for version, status, decision in [(1, "retired", None), (2, "rejected", "refused"), (3, "production", "promoted")]:
        model = make_model(version, status=status, gate_passed=decision != "refused", gate_reason=LONG_REASON)
        if decision:
            model.metrics = {**model.metrics, "gate": _gate(decision)}
            model.save()
    make_model(4, status="candidate", arch="efficientnet_b0_very_long_name", gate_reason=LONG_REASON)
    page.set_viewport_size({"width": 1024, "height": 768})
    sign_in(page, live_server, client, admin_user)
    page.goto(reverse("web:training"))
    screenshot(page, "issue23-training-1024")

    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    table = page.locator("#models").bounding_box()
    promote = page.locator("#models button:has-text('Promote')").last.bounding_box()

    inner = page.evaluate(
        "[...document.querySelectorAll('#models, .table-wrap')].map(e => e.scrollWidth - e.clientWidth)"
    )
    assert scroll_width <= 1024, f"the page scrolls sideways: {scroll_width} px wide"
    assert max(inner) <= 0, f"the versions table scrolls inside its panel by {max(inner)} px"
    assert table["x"] + table["width"] <= 1024
    assert promote["x"] + promote["width"] <= 1024
    page.problems.assert_none()


# --- 7: a refused file's progress bar ----------------------------------------------------------------------


@browser_test
def test_a_refused_files_progress_bar_is_red_not_blue(browser, live_server, client, curator, sample, tmp_path):
    from tests.web.conftest import png_bytes

    page = browser
    sign_in(page, live_server, client, curator)
    page.goto(f"{reverse('web:upload')}?sample={sample.pk}")
    refused, stored = tmp_path / "notes.png", tmp_path / "fine.png"
    refused.write_bytes(b"this is not an image at all")
    stored.write_bytes(png_bytes(4242))
    page.set_input_files("#id_files", [str(refused), str(stored)])
    page.wait_for_function("document.querySelectorAll('.file-row .outcome.rejected').length === 1")
    page.wait_for_function("document.querySelectorAll('.file-row .outcome.stored').length === 1")

    colours = page.evaluate(
        """() => [...document.querySelectorAll('.file-row')].map(row => [
            row.querySelector('.outcome').className, getComputedStyle(row.querySelector('.progress > span')).backgroundColor])"""
    )
    by_outcome = {"rejected" if "rejected" in name else "stored": colour for name, colour in colours}
    assert by_outcome["rejected"] == "rgb(179, 38, 30)"  # --bad
    assert by_outcome["stored"] != by_outcome["rejected"]
    # The browser logs the refusal itself (422); nothing else may fail.
    page.problems.items = [item for item in page.problems.items if "status of 422" not in item]
    page.problems.assert_none()
