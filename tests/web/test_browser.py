"""End to end in Debian's Chromium (Playwright) against the live server and a real Celery worker.

Every page visited is saved to test-artifacts/screenshots/, and a test fails on a JavaScript error
in the console, an uncaught exception, or an asset (script, style, image, font) that failed to load.
Skipped only when /usr/bin/chromium is absent (`apt-get install chromium`); never downloads a browser.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from django.urls import reverse
from PIL import Image

from portal.models import (
    Category,
    Embedding,
    HeatMap,
    Label,
    Membership,
    ModelVersion,
    Project,
    Sample,
    SEMImage,
    TrainingRun,
)
from portal.services.curation.labels import set_label
from tests.worker_fixtures import synthetic_png

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
ASSET_TYPES = {"script", "stylesheet", "image", "font"}
PASSWORD = "pw-browser-123"
SHORTCUT_KEYS = "1234567890"


class BrowserProblems:
    """Console errors, page exceptions and failed asset loads seen by one page."""

    def __init__(self, page) -> None:
        self.items: list[str] = []
        page.on("console", lambda message: message.type == "error" and self.items.append(f"console: {message.text}"))
        page.on("pageerror", lambda error: self.items.append(f"exception: {error}"))
        page.on("requestfailed", self._request_failed)
        page.on("response", self._response)

    def _request_failed(self, request) -> None:
        # ERR_ABORTED is the browser cancelling a load because the test navigated on (lazy thumbnails
        # of a page left at once), not a load that failed.
        if request.failure == "net::ERR_ABORTED":
            return
        if request.resource_type in ASSET_TYPES or "/static/" in request.url:
            self.items.append(f"asset failed: {request.url} ({request.failure})")

    def _response(self, response) -> None:
        if response.status >= 400 and (response.request.resource_type in ASSET_TYPES or "/static/" in response.url):
            self.items.append(f"asset {response.status}: {response.url}")

    def assert_none(self) -> None:
        assert self.items == [], "\n".join(self.items)


@pytest.fixture
def browser(live_server, monkeypatch):
    if not CHROMIUM.exists():
        pytest.skip("Debian's Chromium is not installed at /usr/bin/chromium (apt-get install -y chromium)")
    # Playwright's sync API runs an event loop in this thread; the ORM calls the test makes between
    # browser steps are ordinary synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = chromium.new_context(base_url=live_server.url, viewport={"width": 1440, "height": 900})
        context.set_default_timeout(20_000)
        page = context.new_page()
        page.problems = BrowserProblems(page)
        yield page
        context.close()
        chromium.close()


def screenshot(page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def log_in(page, username: str) -> None:
    page.goto(reverse("login"))
    screenshot(page, "01-login")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url.endswith(reverse("web:browse")), page.url


def press(page, key: str) -> None:
    """A review-queue shortcut: each one submits a form and loads the next image."""
    with page.expect_navigation():
        page.keyboard.press(key)


def lab(django_user_model, *, staff: bool = False, split: str = Sample.AUTO_SPLIT):
    """A curator (or staff) and a sample. A physical sample is wholly on one side of the split (issue 13:
    NS-0042 falls on the test side); a test that trains passes split="" (a collection, split per
    near-duplicate group) so that both sides have images."""
    project = Project.objects.create(name="Nanostructures lab")
    person = django_user_model.objects.create_user("rosa" if not staff else "root", password=PASSWORD, is_staff=staff)
    Membership.objects.create(project=project, user=person, role=Membership.Role.CURATOR)
    sample = Sample.objects.create(
        project=project,
        lab_sample_id="NS-0042",
        name="Mixed nanostructures",
        material="ZnO / Si",
        owner=person,
        split=split,
    )
    return person, sample


def test_upload_classify_review_and_dashboard(browser, celery_worker, production_model, django_user_model, tmp_path):
    page = browser
    curator, sample = lab(django_user_model)
    files = []
    for index, folder in enumerate(("Fibres", "Particles", "Porous_Sponge")):
        path = tmp_path / f"{folder.lower()}-{index}.png"
        path.write_bytes(synthetic_png(folder, 500 + index))
        files.append(str(path))
    log_in(page, curator.username)

    page.goto(reverse("web:dashboard"))
    assert page.text_content("#stat-backlog").strip() == "0"
    assert page.text_content("#stat-observed").strip() == "—"

    # Upload three images and watch the worker classify them.
    page.goto(f"{reverse('web:upload')}?sample={sample.pk}")
    page.set_input_files("#id_files", files)
    page.wait_for_function(
        "document.getElementById('upload-summary').textContent.includes('classification finished')", timeout=120_000
    )
    outcomes = page.locator(".file-row .outcome").all_text_contents()
    assert len(outcomes) == 3 and all("Stored" in text and "Classified:" in text for text in outcomes), outcomes
    screenshot(page, "02-upload")
    images = list(SEMImage.objects.filter(sample=sample))
    assert len(images) == 3
    assert all(image.status == "classified" and image.predicted_by_id == production_model.pk for image in images)

    page.goto(reverse("web:browse"))
    assert page.locator(".card").count() == 3
    screenshot(page, "03-browse")

    page.goto(reverse("web:image_detail", args=[images[0].pk]))
    page.wait_for_selector("#viewer canvas")
    page.wait_for_load_state("networkidle")
    screenshot(page, "04-image-detail")

    # Review queue: correct the most uncertain image with a number key.
    page.goto(reverse("web:review"))
    first = SEMImage.objects.get(pk=page.get_attribute("#review", "data-image-id"))
    categories = list(Category.objects.filter(active=True))
    target = next(category for category in categories if category.pk != first.predicted_category_id)
    screenshot(page, "05-review")
    press(page, SHORTCUT_KEYS[categories.index(target)])
    first.refresh_from_db()
    assert first.curated_category == target
    label = Label.objects.get(image=first, is_current=True)
    assert (label.source, label.created_by) == ("review", curator)
    assert page.text_content("#remaining-total").strip() == "2"

    # Enter accepts the suggestion, U undoes it, S skips.
    second = SEMImage.objects.get(pk=page.get_attribute("#review", "data-image-id"))
    press(page, "Enter")
    second.refresh_from_db()
    assert second.curated_category_id == second.predicted_category_id
    press(page, "u")
    second.refresh_from_db()
    assert second.curated_category is None
    assert page.get_attribute("#review", "data-image-id") == str(second.pk)
    press(page, "s")
    assert page.get_attribute("#review", "data-image-id") != str(second.pk)

    # The dashboard now counts one fewer unlabelled image and one checked (wrong) prediction.
    page.goto(reverse("web:dashboard"))
    assert page.text_content("#stat-backlog").strip() == "2"
    assert page.text_content("#stat-observed").strip() == "0\u00a0%"
    assert "0 of 1 checked" in page.text_content(".stats")
    assert page.locator("#confusion-matrix tbody tr").count() == len(production_model.classes)
    page.wait_for_selector("#history-chart")
    screenshot(page, "06-dashboard")
    page.locator("#matrix-toggle button[data-mode=percent]").click()
    assert "%" in page.text_content("#confusion-matrix tbody td")
    with page.expect_navigation():
        page.locator("#confusion-matrix td a").first.click()
    assert "/cell/" in page.url
    screenshot(page, "07-confusion-cell")

    page.goto(reverse("web:training"))
    assert page.locator("#train-now").count() == 0  # curators do not train
    screenshot(page, "08-training-curator")
    page.goto("/account/tokens/")
    screenshot(page, "09-api-tokens")
    page.problems.assert_none()


def test_admin_trains_a_model_and_sees_it_promoted(browser, worker_factory, upload_images, django_user_model):
    page = browser
    worker = worker_factory(
        SEM_TRAIN_ARCH="resnet18", SEM_TRAIN_SIZES=[32, 48], SEM_TRAIN_EPOCHS=[2, 1], SEM_GATE_FIRST_MODEL_FLOOR=0.0
    )
    admin, sample = lab(django_user_model, staff=True, split="")
    upload_images(sample, admin, 16, labelled=True)
    log_in(page, admin.username)

    page.goto(reverse("web:training"))
    with page.expect_navigation():
        page.click("#train-now")
    assert "queued" in page.text_content(".messages")
    run = TrainingRun.objects.get()
    # The progress bar follows the run; when it ends the page reloads with the new model.
    worker.wait_until(
        lambda: TrainingRun.objects.filter(pk=run.pk, status="running").exists(),
        timeout=60,
        what="the training run to start",
    )
    # The script has polled the progress endpoint once it shows a state other than the server-rendered one
    # (or the run already ended and the page reloaded without the progress panel).
    page.wait_for_function("""() => {
        const status = document.querySelector('.run-progress [data-field=status]');
        return !status || status.textContent.trim() !== 'Queued';
    }""")
    screenshot(page, "10-training-progress")
    worker.wait_until(
        lambda: TrainingRun.objects.get(pk=run.pk).status in ("succeeded", "failed"),
        timeout=240,
        what="the training run to finish",
    )
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    page.wait_for_selector("#models", timeout=30_000)
    model = ModelVersion.objects.get()
    assert model.status == ModelVersion.Status.PRODUCTION
    assert "Production" in page.text_content("#models")
    screenshot(page, "11-training-done")

    # No earlier production model: Roll back is disabled (issue 14).
    assert page.is_disabled("#rollback")

    page.goto(reverse("web:training_run", args=[run.pk]))
    page.wait_for_selector("#loss-chart")
    assert page.is_hidden("#loss-empty")
    # Three epochs (2 at 32 px, 1 at 48 px), each with a training and a validation loss.
    chart = page.evaluate("""() => { const data = Chart.getChart('loss-chart').data;
        return {labels: data.labels, train: data.datasets[0].data, valid: data.datasets[1].data}; }""")
    assert chart["labels"] == ["32 px · e1", "32 px · e2", "48 px · e1"], chart
    assert all(isinstance(value, float) and value > 0 for value in chart["train"] + chart["valid"]), chart
    assert "passed" in page.text_content(".facts")
    stage_rows = page.locator("#stage-table tbody tr")
    assert stage_rows.count() == 2 and "48 px" in stage_rows.nth(1).text_content()
    assert page.evaluate("Chart.getChart('loss-chart').options.scales.y.type") == "logarithmic"
    screenshot(page, "12-training-run")
    page.goto(reverse("web:dashboard"))
    assert page.text_content("#stat-accuracy").strip() != "—"
    # Issue 13: the gate stored a first model's per-class intervals (from its confusion matrix): bars.
    assert page.locator("#per-class .ci").count() >= 2 and page.is_visible("#per-class .ci .ci-range")
    screenshot(page, "13-dashboard-new-model")
    page.problems.assert_none()


def test_upload_row_links_the_near_duplicate_and_the_image_page_lists_its_group(browser, django_user_model, tmp_path):
    """Issue 13: a re-saved copy (10 % brighter) of an image stored before says "near-duplicate of image N"
    with a link; the first image's page lists the copy in its group. No worker: classification waits."""
    from PIL import ImageEnhance

    from classifier.synthetic import make_image

    page = browser
    curator, sample = lab(django_user_model)
    grey = make_image("Powder", 700, size=(512, 384)).convert("L")
    original, copy = tmp_path / "original.png", tmp_path / "brighter.png"
    grey.save(original)
    ImageEnhance.Brightness(grey).enhance(1.1).save(copy)
    log_in(page, curator.username)
    page.goto(f"{reverse('web:upload')}?sample={sample.pk}")

    page.set_input_files("#id_files", [str(original)])
    page.wait_for_selector(".file-row[data-outcome=stored]")
    page.set_input_files("#id_files", [str(copy)])
    # A locator, not an element handle: each status poll renders the row's outcome again.
    link = page.locator(".file-row .near-duplicate")
    link.wait_for()

    first = SEMImage.objects.get(sample=sample, original_filename="original.png")
    second = SEMImage.objects.get(sample=sample, original_filename="brighter.png")
    assert second.near_duplicate_of_id == first.pk
    assert link.text_content() == f"near-duplicate of image {first.pk}"
    assert link.get_attribute("href") == reverse("web:image_detail", args=[first.pk])
    assert link.count() == 1
    assert "2 stored (1 near-duplicate of stored images)" in page.text_content("#upload-summary")
    screenshot(page, "14-upload-near-duplicate")

    with page.expect_navigation():
        link.click()
    assert f"image {second.pk}" in page.text_content("#near-duplicates")
    screenshot(page, "15-image-near-duplicate-group")
    page.problems.assert_none()


def test_image_page_heat_map_overlay_and_similar_images(
    browser, celery_worker, production_model, upload_images, django_user_model, monkeypatch
):
    """Issue 24: the similar curated images are links to their pages; the heat map overlay is asked for
    with its toggle, computed by the worker, drawn over the image, and follows the opacity slider."""
    page = browser
    curator, sample = lab(django_user_model)
    query, *neighbours = upload_images(sample, curator, 3)
    give_embeddings(production_model, query, neighbours, monkeypatch)
    log_in(page, curator.username)

    page.goto(reverse("web:image_detail", args=[query.pk]))
    page.wait_for_selector("#viewer canvas")
    links = page.locator("#similar-images .card a.name")
    expected = [reverse("web:image_detail", args=[image.pk]) for image in neighbours]  # most similar first
    assert [links.nth(index).get_attribute("href") for index in range(links.count())] == expected
    page.wait_for_function(
        "[...document.querySelectorAll('#similar-images img')].every(img => img.complete && img.naturalWidth > 0)"
    )

    toggle, slider = page.locator("#heatmap-toggle"), page.locator("#heatmap-opacity")
    assert slider.is_disabled()
    toggle.check()
    page.wait_for_selector("#heatmap-controls[data-state=shown]", timeout=240_000)
    assert HeatMap.objects.get(image=query).status == HeatMap.Status.READY
    assert page.evaluate("imageViewer.world.getItemCount()") == 2
    overlay_opacity = "imageViewer.world.getItemAt(1).getOpacity()"
    assert page.evaluate(overlay_opacity) == pytest.approx(0.6)
    # Over the image from its top-left corner, as wide, as tall as the model's input (no data bar).
    bounds = page.evaluate(
        "(() => { const b = imageViewer.world.getItemAt(1).getBounds(); return [b.x, b.y, b.width, b.height]; })()"
    )
    with Image.open(query.derivative.path) as derivative:
        assert bounds == pytest.approx([0, 0, 1, derivative.height / derivative.width], abs=1e-3)

    slider.focus()
    for _ in range(4):
        page.keyboard.press("ArrowLeft")  # step 5 %
    assert slider.input_value() == "40" and page.evaluate(overlay_opacity) == pytest.approx(0.4)
    page.wait_for_timeout(500)  # the redraw
    screenshot(page, "16-image-heat-map")
    toggle.uncheck()
    assert page.evaluate(overlay_opacity) == 0 and slider.is_disabled()
    toggle.check()
    assert page.evaluate(overlay_opacity) == pytest.approx(0.4)
    assert page.evaluate("imageViewer.world.getItemCount()") == 2  # shown again, not loaded again

    with page.expect_navigation():
        links.first.click()
    assert page.url.endswith(expected[0])
    page.problems.assert_none()


TRUST_CLASSES = ["Fibres", "Particles", "Powder"]


def test_prediction_set_out_of_scope_and_the_not_classifiable_mark(
    browser, make_model, upload_images, django_user_model
):
    """Issue 24: the image page shows the prediction set with the coverage and the out-of-scope status;
    the review queue offers the out-of-scope image first, then a set of two categories; the curator's
    "not SEM / not classifiable" button takes the image out of the queue. No worker: the predictions are
    saved through the classification service with a real conformal calibration."""
    page = browser
    curator, sample = lab(django_user_model)
    confident, pair, outside = upload_images(sample, curator, 3)
    model = calibrated_model(make_model)
    classify(model, {confident: [0.92, 0.05, 0.03], pair: [0.55, 0.40, 0.05], outside: [0.97, 0.02, 0.01]}, outside)
    log_in(page, curator.username)

    page.goto(reverse("web:image_detail", args=[pair.pk]))
    shown = page.text_content("#prediction-set")
    assert "Fibres or Particles" in shown and "not confident" in shown and "90\u00a0%" in shown, shown
    assert "set: Fibres or Particles" in page.text_content("#predicted")
    assert page.text_content("#status-badge").strip() == "Classified, uncertain"
    assert page.locator("#out-of-scope").count() == 0
    screenshot(page, "17-image-prediction-set")
    page.goto(reverse("web:image_detail", args=[confident.pk]))
    assert page.text_content("#prediction-set").startswith("Fibres (confident")

    page.goto(reverse("web:image_detail", args=[outside.pk]))
    assert page.text_content("#status-badge").strip() == "Out of scope"
    assert "unlike every image the model learnt from" in page.text_content("#out-of-scope")
    # A one-category set, but out of scope: not a confident prediction.
    assert page.text_content("#prediction-set").startswith("Fibres (not confident, out of scope")
    assert page.is_visible("#predicted .badge.status-out_of_scope")
    screenshot(page, "18-image-out-of-scope")

    # The queue: the out-of-scope image, then the two-category set, then the confident prediction.
    page.goto(reverse("web:review"))
    assert page.get_attribute("#review", "data-image-id") == str(outside.pk)
    assert page.get_attribute("#viewer", "data-next-url") == reverse("web:image_full", args=[pair.pk])
    assert "out of scope" in page.text_content("#uncertain-note")
    assert page.text_content("#remaining-total").strip() == "3"
    screenshot(page, "19-review-out-of-scope-first")

    page.goto(reverse("web:image_detail", args=[outside.pk]))
    with page.expect_navigation():
        page.click("#not-classifiable-form button[value='1']")
    assert "marked not SEM / not classifiable" in page.text_content(".messages")
    assert "Not SEM / not classifiable" in page.text_content("#not-classifiable")
    assert page.is_visible("#not-classifiable-form button[value='0']")
    assert SEMImage.objects.get(pk=outside.pk).not_classifiable
    screenshot(page, "20-image-not-classifiable")

    page.goto(reverse("web:review"))
    assert page.get_attribute("#review", "data-image-id") == str(pair.pk)
    assert page.text_content("#remaining-total").strip() == "2"
    page.problems.assert_none()


def calibrated_model(make_model) -> ModelVersion:
    """A production model whose metadata carries a conformal calibration: for each class 20 held-out
    images whose true class got 0.30 to 1.00, so at 90 % a class enters the set from about 0.34 on."""
    from classifier.conformal import fit_conformal

    truth = np.linspace(0.30, 1.0, 20)
    probabilities, labels = [], []
    for index in range(len(TRUST_CLASSES)):
        for p in truth:
            row = np.full(len(TRUST_CLASSES), (1 - p) / 2)
            row[index] = p
            probabilities.append(row)
            labels.append(index)
    metadata = {"conformal": fit_conformal(np.array(probabilities), labels, TRUST_CLASSES)}
    return make_model(1, status=ModelVersion.Status.PRODUCTION, classes=TRUST_CLASSES, metadata=metadata)


def classify(model, probabilities: dict, outside) -> None:
    """Save predictions as the worker does: the sets at the lab's coverage from the model's calibration
    (classification_inference.mark_trust), `outside` past the out-of-scope threshold."""
    from types import SimpleNamespace

    from classifier.engine import prediction_from_probabilities
    from portal.services.learning.classification_inference import mark_trust
    from portal.services.learning.classification_results import save_results

    ids = [image.pk for image in probabilities]
    results = [prediction_from_probabilities(np.array(p), TRUST_CLASSES) for p in probabilities.values()]
    for image, result in zip(probabilities, results):
        result.out_of_scope, result.ood_score = image == outside, 1.7 if image == outside else 0.4
    mark_trust(SimpleNamespace(metadata=model.metadata, classes=TRUST_CLASSES), ids, results)
    assert [result.prediction_set for result in results] == [["Fibres"], ["Fibres", "Particles"], ["Fibres"]]
    save_results(model, TRUST_CLASSES, dict(zip(ids, results)))


def give_embeddings(model, query, neighbours, monkeypatch) -> None:
    """The session's model is a fine-tuned resnet, which stores no embeddings: give the query and its
    curated neighbours some (the first neighbour the nearer), as the feature head's classification would."""
    from portal.services.curation import similar

    monkeypatch.setattr(similar, "_index", None)  # this process's matrix from an earlier test's rows
    categories = list(Category.objects.filter(active=True))
    for image, vector in zip([query, *neighbours], ([1.0, 0.0], [1.0, 0.5], [0.0, 1.0])):
        padded = np.zeros(64, np.float32)
        padded[:2] = vector
        Embedding.objects.create(image=image, model_version=model, dimension=64, vector=similar.encode(padded))
    for image, category in zip(neighbours, categories):
        set_label(image, category, source=Label.Source.IMPORT)
    similar.bump_generation()
