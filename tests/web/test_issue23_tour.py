"""Issue 23's "done means": the same tour as a member, a curator and an administrator, keyboard first, in
Debian's Chromium against the live server. One test per role walks sign-in, the dashboard, Browse, Upload,
an image page with its viewer, the Review queue (curators), the Training page at 1024 px, the API token
page and (administrators) a user's admin page, and asserts each of the issue's page items on the way.

Browser tests run in transactions that are emptied after each test (the live server needs them), so each
role's test seeds its own small lab with `lab_tour` (a second or two)."""

from __future__ import annotations

import io
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.urls import reverse
from django.utils import timezone

from portal.models import ApiToken, Label, ModelVersion, SEMImage, TrainingRun
from tests.web.conftest import PASSWORD, evaluation
from tests.web.issue14_support import browser_test, review_head
from tests.web.test_browser import browser, screenshot  # noqa: F401  (the fixture)
from tests.web.test_issue23_ui import LONG_REASON, _gate

NEAR_CHANCE = [[3, 4, 3], [4, 3, 3], [3, 3, 4]]  # accuracy 0.33 on 30 balanced test images
GOOD = [[8, 1, 1], [2, 7, 1], [0, 1, 9]]  # accuracy 0.80
GUESS = {"Particles": 0.66, "Fibres": 0.2, "Powder": 0.14}


# --- the lab the tour walks through ------------------------------------------------------------------------


@pytest.fixture
def lab_tour(project, sample, other_sample, make_user, make_image, make_model, predict, categories):
    """Three people of "Thin films group" (a member, a curator, a superuser as `make run` creates), a
    near-chance production model and the images each page of the tour needs."""
    people = SimpleNamespace(
        member=make_user("mia-member", project=project, role="member"),
        curator=make_user("cora-curator", project=project, role="curator"),
        admin=make_user("ada-admin", staff=True),
    )
    type(people.admin).objects.filter(pk=people.admin.pk).update(is_superuser=True)
    model = _model_versions(make_model)
    _failed_run()
    viewed = _micrograph(sample, people.curator)
    predict(viewed, model, GUESS, categories)
    disputed = [make_image(sample, split="train", curated=categories["Fibres"]) for _ in range(2)]
    unlabelled = [make_image(sample) for _ in range(3)]
    for image in disputed:
        predict(image, model, {"Particles": 0.9, "Fibres": 0.05, "Powder": 0.05}, categories)
    for image, confidence in zip(unlabelled, (0.95, 0.92, 0.7)):
        predict(image, model, {"Powder": confidence, "Fibres": 1 - confidence, "Particles": 0.0}, categories)
    _test_split(sample, other_sample, make_image, model, predict, categories)
    return SimpleNamespace(
        people=people, project=project, sample=sample, other_project=other_sample.project, model=model,
        viewed=viewed, disputed=disputed, unlabelled=unlabelled, categories=categories,
    )  # fmt: skip


def _model_versions(make_model):
    """v1 retired, v2 in production (near chance, with a gate interval), v3 a candidate with a long name:
    the Training page's widest table. Returns v2."""
    make_model(1, status="retired", gate_reason=LONG_REASON, promoted_at=timezone.now() - timedelta(days=2))
    production = make_model(2, status="production", counts=NEAR_CHANCE, gate_reason=LONG_REASON)
    production.metrics = {**production.metrics, "gate": _gate("promoted")}
    production.save()
    make_model(3, arch="efficientnet_b0_very_long_name", gate_reason=LONG_REASON)
    return production


def _failed_run():
    TrainingRun.objects.create(
        status=TrainingRun.Status.FAILED,
        active=None,  # a finished run is no longer the active one
        trigger=TrainingRun.Trigger.MANUAL,
        device="cuda (NVIDIA H100 80GB HBM3, 79.1 GiB)",
        error="RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.10 GiB total capacity)",
        train_image_count=240,
        test_image_count=60,
        duration_s=713,
    )


def _micrograph(sample, uploader) -> SEMImage:
    """A 1000 px image through the real ingestion, with a known pixel size (the viewer's scale bar)."""
    from portal.services.ingestion.ingest import ingest_file
    from tests.helpers import png_bytes

    stored = ingest_file(
        io.BytesIO(png_bytes(2323, size=1000)), filename="tour.png", sample=sample, uploaded_by=uploader
    )
    SEMImage.objects.filter(pk=stored.image.pk).update(pixel_size_nm=2.5)
    return SEMImage.objects.get(pk=stored.image.pk)


def _test_split(sample, other_sample, make_image, model, predict, categories):
    """One test image of the lab's project, two of a project the member and curator cannot open."""
    mine = make_image(sample, split="test", curated=categories["Powder"])
    predict(mine, model, {"Powder": 0.9, "Fibres": 0.05, "Particles": 0.05}, categories)
    for _ in range(2):
        foreign = make_image(other_sample, split="test", curated=categories["Fibres"])
        predict(foreign, model, {"Particles": 0.9, "Fibres": 0.05, "Powder": 0.05}, categories)


# --- keyboard helpers --------------------------------------------------------------------------------------


def active(page, expression: str = "tagName"):
    return page.evaluate(f"document.activeElement.{expression}")


def press_and_load(page, key: str) -> None:
    with page.expect_navigation():
        page.keyboard.press(key)


def tab_to(page, test_js: str, limit: int = 40) -> None:
    """Tab until the focused element satisfies `test_js` (a JavaScript expression of `el`)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(f"(el => !!({test_js}))(document.activeElement)"):
            return
    raise AssertionError(f"{limit} Tabs did not reach an element with {test_js}")


def activate(page, selector: str) -> None:
    """Focus a control and press Enter on it, expecting the page to load."""
    page.focus(selector)
    press_and_load(page, "Enter")


def skip_link_works(page) -> None:
    """The first Tab reaches a visible skip link; Enter puts focus on the page's content."""
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.keyboard.press("Tab")
    assert active(page, "textContent") == "Skip to content", page.url
    box = page.locator(".skip-link").bounding_box()
    assert box and box["y"] >= 0, f"the focused skip link is off screen on {page.url}"
    page.keyboard.press("Enter")
    assert active(page, "id") == "content", page.url


# --- the stops of the tour -----------------------------------------------------------------------------------


def sign_in_with_the_form(page, person) -> None:
    page.goto(reverse("login"))
    assert active(page, "id") == "id_username"  # autofocus: typing starts at once
    page.keyboard.type(person.username)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    press_and_load(page, "Enter")
    assert page.url.endswith(reverse("web:browse")), page.url
    skip_link_works(page)


def dashboard_names_its_sources(page, tour, role: str) -> None:
    page.goto(reverse("web:dashboard"))
    skip_link_works(page)
    source = page.text_content("#figures-source")
    invitation = page.text_content("#figures-source + p")
    if role == "admin":  # every project is the admin's own
        assert f"2 curated images of {tour.other_project.name}, 1 curated image of {tour.project.name}." in source
        assert "cannot open" not in source and "not only yours" not in source, source
    else:
        assert f"1 curated image of {tour.project.name} and 2 of projects you cannot open" in source, source
        assert tour.other_project.name not in page.content()
    if role == "member":
        assert "relabel" not in page.content().lower()
        assert "see its test images from your projects" in invitation
        open_a_foreign_cell(page)
    else:
        assert "relabel them" in invitation
    screenshot(page, f"i23-tour-{role}-dashboard")


def open_a_foreign_cell(page) -> None:
    """The member's cell of other projects' images opens saying so, with nothing to relabel."""
    activate(page, '#confusion-matrix a[href*="actual=Fibres&predicted=Particles"]')
    empty = page.text_content("#cell-empty")
    assert "in projects you cannot open (2 images); none is in yours" in empty, empty
    assert "relabel" not in page.content().lower()


def browse_marks_the_guess_uncertain(page, tour) -> None:
    page.goto(reverse("web:browse"))
    card = page.text_content(f'.card[data-image-id="{tour.viewed.pk}"]')
    assert "Particles 66\u00a0% · uncertain" in card, card
    worth = page.text_content(".model-worth")
    assert "Suggestion only: model v2 was right on 33\u00a0% of 30 test images" in worth, worth
    assert "all its answers are marked uncertain (no better than guessing)." in worth, worth


def upload_with_the_keyboard(page, tour, role: str, tmp_path) -> None:
    """Picking a sample enables the drop zone at once, Enter on it opens the file chooser, the new image's
    prediction is shown as uncertain (and the member's all-black frame as blank), and the next visit
    remembers the sample."""
    from tests.web.conftest import png_bytes

    blank = role == "member"
    path = tmp_path / f"{role}.png"
    path.write_bytes(_black_png() if blank else png_bytes(7000 + len(role)))
    # Listened for before the key press: Playwright turns the interception on without waiting for it.
    page.once("filechooser", lambda chooser: chooser.set_files(str(path)))
    page.goto(reverse("web:upload"))
    skip_link_works(page)
    expected_project = "" if role == "admin" else str(tour.project.pk)  # the admin sees two projects
    assert page.input_value("#id_project") == expected_project
    assert page.get_attribute("#dropzone", "aria-disabled") == "true"
    page.evaluate("window.notReloaded = true")
    page.select_option("#id_sample_pick", str(tour.sample.pk))
    assert page.get_attribute("#dropzone", "aria-disabled") is None
    assert page.evaluate("window.notReloaded") is True
    page.focus("#dropzone")
    page.keyboard.press("Enter")  # opens the file chooser, answered by the listener above
    page.wait_for_function("document.querySelectorAll('.file-row .outcome.stored').length === 1")
    classify_as_the_worker_would(tour, SEMImage.objects.get(original_filename=path.name))
    page.wait_for_function("document.querySelector('.file-row .outcome').textContent.includes('Particles')")
    outcome = page.text_content(".file-row .outcome")
    assert "uncertain" in outcome and ("blank image" in outcome) == blank, outcome
    assert "status-classified" not in page.get_attribute(".file-row .outcome .badge", "class")
    assert "Suggestion only: model v2 was right on 33\u00a0%" in page.text_content("#upload-panel .model-worth")
    screenshot(page, f"i23-tour-{role}-upload")
    page.goto(reverse("web:upload"))
    assert page.input_value("#id_sample_pick") == str(tour.sample.pk)
    assert page.get_attribute("#dropzone", "aria-disabled") is None


def _black_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (320, 240), 0).save(buffer, format="PNG")
    return buffer.getvalue()


def classify_as_the_worker_would(tour, image) -> None:
    """Record the production model's prediction and its denormalised columns, as classification does."""
    from portal.models import Prediction

    category = tour.categories["Particles"]
    Prediction.objects.create(
        image=image, model_version=tour.model, category=category, confidence=0.66, margin=0.46, entropy=0.9,
        probabilities=GUESS,
    )  # fmt: skip
    SEMImage.objects.filter(pk=image.pk).update(
        predicted_category=category, predicted_confidence=0.66, predicted_margin=0.46, predicted_by=tour.model,
        status=SEMImage.Status.CLASSIFIED,
    )  # fmt: skip


def image_page_says_what_the_guess_is_worth(page, tour, role: str) -> None:
    page.goto(reverse("web:image_detail", args=[tour.viewed.pk]))
    page.wait_for_function("window.imageViewer && window.imageViewer.world.getItemCount() === 1")
    skip_link_works(page)
    assert page.text_content("#status-badge") == "Classified, uncertain"
    predicted = page.text_content("#predicted")
    assert "· uncertain" in predicted and "Suggestion only: model v2 was right on 33\u00a0%" in predicted, predicted
    assert page.locator(".category-buttons button").count() == (0 if role == "member" else 10)
    viewer_works_from_the_keyboard(page)
    screenshot(page, f"i23-tour-{role}-image")


def viewer_works_from_the_keyboard(page) -> None:
    """Tab reaches the canvas with a ring drawn inside its clipped box, then "Zoom in", whose Enter zooms
    and shows a scale bar."""
    tab_to(page, "el.classList.contains('openseadragon-canvas')")
    style, width, offset = page.evaluate(
        "(() => { const s = getComputedStyle(document.activeElement);"
        " return [s.outlineStyle, parseFloat(s.outlineWidth), parseFloat(s.outlineOffset)]; })()"
    )
    assert style != "none" and width >= 2 and offset <= -width, (style, width, offset)
    assert page.is_hidden("#viewer-scale-bar")
    tab_to(page, "el.getAttribute('aria-label') === 'Zoom in'", limit=8)
    assert active(page, "getAttribute('role')") == "button"
    home = page.evaluate("window.imageViewer.viewport.getZoom(true)")
    page.keyboard.press("Enter")
    page.wait_for_function(f"window.imageViewer.viewport.getZoom(true) > {home} * 1.1")
    page.wait_for_selector("#viewer-scale-bar", state="visible")
    assert page.text_content("#viewer-scale-bar").endswith(("nm", "µm")), page.text_content("#viewer-scale-bar")


def labelling_keeps_the_focus(page, tour) -> None:
    """Setting a label, or marking an image not classifiable, with Enter on a button: focus comes back
    to that control after the reload, not to <body>."""
    page.goto(reverse("web:image_detail", args=[tour.viewed.pk]))
    powder = tour.categories["Powder"].pk
    activate(page, f'form[data-label-form] button[value="{powder}"]')
    assert "labelled Powder" in page.text_content(".messages")
    assert (active(page), active(page, "value")) == ("BUTTON", str(powder))
    activate(page, "#not-classifiable-form button")
    assert SEMImage.objects.get(pk=tour.viewed.pk).not_classifiable
    assert active(page, "closest('form') && document.activeElement.closest('form').id") == "not-classifiable-form"


def review_keeps_a_curated_label(page, tour) -> None:
    """Under the "disagrees" filter: Enter keeps the curated label; a number key replaces it."""
    page.goto(reverse("web:review"))
    skip_link_works(page)
    page.select_option("#filter-reason", "disputed")
    activate(page, "#review-filters button[type=submit]")
    first = review_head(page)
    assert page.text_content("#accept-suggestion").strip().endswith("Keep Fibres")
    press_and_load(page, "Enter")
    current = Label.objects.get(image_id=first, is_current=True)
    assert (current.category.name, current.source) == ("Fibres", "review")
    assert not Label.objects.filter(image_id=first, category__name="Particles").exists()
    second = review_head(page)
    assert second != first and second in {image.pk for image in tour.disputed}
    key = page.get_attribute(f'#category-keys button[value="{tour.categories["Particles"].pk}"]', "data-key")
    press_and_load(page, key)
    assert SEMImage.objects.get(pk=second).curated_category.name == "Particles"


def bulk_acceptance_counts_and_asks(page, tour) -> None:
    page.goto(reverse("web:review"))
    bulk = "#id_min_confidence"
    # The near-chance production's answers are all uncertain: bulk offers none of them, and says why.
    page.fill(bulk, "90")
    assert page.text_content("#bulk-accept") == "Accept 0 predictions" and page.is_disabled("#bulk-accept")
    assert "no better than guessing" in page.text_content("#bulk-uncertain")
    # Evaluated again, better than guessing: its confident answers are offered.
    production = ModelVersion.objects.get(status=ModelVersion.Status.PRODUCTION)
    ModelVersion.objects.filter(pk=production.pk).update(metrics=evaluation(production.classes, GOOD))
    page.goto(reverse("web:review"))
    assert "no better than guessing" not in page.text_content("#bulk-uncertain")
    page.fill(bulk, "100")
    assert page.text_content("#bulk-accept") == "Accept 0 predictions" and page.is_disabled("#bulk-accept")
    page.fill(bulk, "90")  # the 0.95 and 0.92 predictions
    assert page.text_content("#bulk-accept") == "Accept 2 predictions"
    before = Label.objects.count()
    questions = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    page.focus("#bulk-accept")
    page.keyboard.press("Enter")
    page.wait_for_timeout(300)
    assert questions and questions[0].startswith("Label 2 images with the model's prediction"), questions
    assert Label.objects.count() == before, "dismissed: nothing labelled"
    page.once("dialog", lambda dialog: dialog.accept())
    press_and_load(page, "Enter")
    labelled = SEMImage.objects.filter(pk__in=[image.pk for image in tour.unlabelled], curated_category__isnull=False)
    assert sorted(labelled.values_list("predicted_confidence", flat=True)) == [0.92, 0.95]


def training_page_fits_1024_px(page, role: str) -> None:
    page.set_viewport_size({"width": 1024, "height": 768})
    page.goto(reverse("web:training"))
    skip_link_works(page)
    screenshot(page, f"i23-tour-{role}-training-1024")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1024, f"the Training page scrolls sideways for the {role}: {width} px"
    inner = page.evaluate(
        "Math.max(...[...document.querySelectorAll('table')].map(t => t.scrollWidth - t.clientWidth))"
    )
    assert inner <= 0, f"a table scrolls inside its panel by {inner} px"
    promote = page.locator("#models button:has-text('Promote')")
    assert promote.count() == (2 if role == "admin" else 0)
    if role == "admin":
        box = promote.last.bounding_box()
        assert box["x"] + box["width"] <= 1024
    page.set_viewport_size({"width": 1440, "height": 900})


def tokens_copy_expire_and_ask(page, person) -> None:
    """Created from the keyboard with an expiry day; Copy puts the secret on the clipboard; Revoke asks."""
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto(reverse("account:tokens"))
    skip_link_works(page)
    last_day = timezone.localdate() + timedelta(days=30)
    page.fill("#id_expires", last_day.isoformat())
    page.focus("#id_name")
    page.keyboard.type("LIMS")
    press_and_load(page, "Enter")
    secret = page.text_content("#new-token-secret").strip()
    page.focus("#copy-token")
    page.keyboard.press("Enter")
    page.wait_for_function("document.getElementById('copy-token-status').textContent === 'Copied.'")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    assert f"{last_day + timedelta(days=1):%Y-%m-%d} 00:00" in page.text_content("table.data tbody tr")
    questions = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    page.focus("table.data button")
    page.keyboard.press("Enter")
    page.wait_for_timeout(300)
    assert questions and "Revoke the token “LIMS”" in questions[0]
    assert ApiToken.objects.get(user=person).revoked_at is None
    page.once("dialog", lambda dialog: dialog.accept())
    press_and_load(page, "Enter")
    assert ApiToken.objects.get(user=person).revoked_at is not None


def user_admin_has_project_roles(page, tour) -> None:
    member = tour.people.member
    page.goto(reverse("admin:auth_user_change", args=[member.pk]))
    inline = page.locator("#memberships-group")
    assert "Project roles (memberships)" in inline.locator("h2").text_content()
    assert page.input_value("#id_memberships-0-project") == str(tour.project.pk)
    assert page.input_value("#id_memberships-0-role") == "member"
    assert "Portal access comes from the project roles below" in page.text_content("body")
    screenshot(page, "i23-tour-admin-user")


# --- one walk per role ---------------------------------------------------------------------------------------


def first_half_of_the_tour(page, tour, role: str, tmp_path) -> None:
    """Every role's walk starts alike: sign in, the dashboard, Browse, Upload and an image page."""
    person = getattr(tour.people, role)
    sign_in_with_the_form(page, person)
    dashboard_names_its_sources(page, tour, role)
    browse_marks_the_guess_uncertain(page, tour)
    upload_with_the_keyboard(page, tour, role, tmp_path)
    image_page_says_what_the_guess_is_worth(page, tour, role)


@browser_test
def test_the_tour_as_a_member(browser, lab_tour, tmp_path):
    page = browser
    first_half_of_the_tour(page, lab_tour, "member", tmp_path)
    assert page.locator("nav a:has-text('Review')").count() == 0
    assert page.goto(reverse("web:review")).status == 403
    training_page_fits_1024_px(page, "member")
    tokens_copy_expire_and_ask(page, lab_tour.people.member)
    page.problems.items = [item for item in page.problems.items if "status of 403" not in item]
    page.problems.assert_none()


@browser_test
@pytest.mark.parametrize("role", ["curator", "admin"])
def test_the_tour_as_a_curator_or_an_admin(browser, lab_tour, tmp_path, role):
    page = browser
    first_half_of_the_tour(page, lab_tour, role, tmp_path)
    review_keeps_a_curated_label(page, lab_tour)
    bulk_acceptance_counts_and_asks(page, lab_tour)
    labelling_keeps_the_focus(page, lab_tour)
    training_page_fits_1024_px(page, role)
    tokens_copy_expire_and_ask(page, getattr(lab_tour.people, role))
    if role == "admin":
        user_admin_has_project_roles(page, lab_tour)
    page.problems.assert_none()
