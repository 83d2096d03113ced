"""Issue 23 (UI), items 4, 9, 10, 11 and the lows: a new installation's first run, the user admin's project
roles, the upload page, the viewer, focus, the skip link, wording, search and tokens. Browser tests drive
Debian's Chromium (the `browser` fixture of test_browser.py); the others use Django's test client."""

from __future__ import annotations

from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from portal.models import ApiToken, Membership, SEMImage, TrainingRun
from tests.web.conftest import PASSWORD  # noqa: F401  (users of make_user sign in with it)
from tests.web.issue14_support import browser_test, running_run, sign_in  # noqa: F401
from tests.web.test_browser import browser, screenshot  # noqa: F401  (the fixture)

# --- 4: the first run and the first steps -------------------------------------------------------------


def test_browse_shows_the_first_runs_progress_and_the_first_steps(client, admin_user, running_run):
    client.force_login(admin_user)
    page = client.get(reverse("web:browse")).content.decode()
    banner = page.split('id="first-run-banner"')[1].split('id="first-steps"')[0]
    assert "The first model is training" in banner and f"Run {running_run.pk}" in banner
    assert f'data-progress-url="{reverse("web:training_progress", args=[running_run.pk])}"' in banner
    steps = page.split('id="first-steps"')[1].split("</ol>")[0]
    for link in ("admin:portal_project_add", "admin:auth_user_changelist", "web:upload", "web:review"):
        assert f'href="{reverse(link)}"' in steps
    assert "js/training.js" in page  # the progress bar is live


def test_no_banner_once_a_model_exists(client, admin_user, running_run, make_model):
    make_model(1, status="production", counts=[[9, 1], [1, 9]], classes=("Fibres", "Particles"))
    client.force_login(admin_user)
    page = client.get(reverse("web:browse")).content.decode()
    assert 'id="first-run-banner"' not in page and 'id="first-steps"' not in page


def test_training_page_says_the_first_model_is_being_trained(client, admin_user, running_run):
    client.force_login(admin_user)
    text = client.get(reverse("web:training")).content.decode().split('id="no-model-yet">')[1].split("</p>")[0]
    assert f"being trained by run {running_run.pk}" in text and "No model trained yet" not in text


# --- 9: project roles on the user's admin page --------------------------------------------------------


def test_user_admin_page_edits_project_roles(client, django_user_model, member, project):
    boss = django_user_model.objects.create_superuser("boss", "boss@example.org", PASSWORD)
    client.force_login(boss)
    url = reverse("admin:auth_user_change", args=[member.pk])
    page = client.get(url).content.decode()
    assert "Project roles (memberships)" in page and "Portal access comes from the project roles below" in page
    form = client.get(url).context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None and name != "password"}
    data.update(
        {
            "username": member.username,
            "date_joined_0": "2026-01-01",
            "date_joined_1": "10:00:00",
            "memberships-TOTAL_FORMS": "1",
            "memberships-INITIAL_FORMS": "1",
            "memberships-0-id": str(Membership.objects.get(user=member).pk),
            "memberships-0-user": str(member.pk),
            "memberships-0-project": str(project.pk),
            "memberships-0-role": "curator",
        }
    )
    data.pop("last_login", None)
    data.pop("groups", None)
    data.pop("user_permissions", None)
    response = client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    assert Membership.objects.get(user=member, project=project).role == "curator"


# --- lows: wording and search -------------------------------------------------------------------------


def test_inbox_403_speaks_of_the_inbox(client, member):
    client.force_login(member)
    response = client.get(reverse("web:inbox"))
    text = response.content.decode()
    assert response.status_code == 403
    assert "The inbox (what the watch folders picked up) needs the curator role" in text
    assert "Reviewing labels" not in text


def test_sample_search_matches_part_of_the_lab_sample_id(client, curator, sample, make_image):
    image = make_image(sample)  # lab sample ID S-0001, name "Test wafer"
    client.force_login(curator)
    found = client.get(reverse("web:browse"), {"sample": "0001"}).context["page"].object_list
    assert [row.pk for row in found] == [image.pk]


# --- 10: upload ---------------------------------------------------------------------------------------


@browser_test
def test_picking_a_sample_enables_the_drop_zone_without_a_reload(
    browser, live_server, client, curator, sample, tmp_path
):
    from tests.web.conftest import png_bytes

    page = browser
    sign_in(page, live_server, client, curator)
    page.goto(reverse("web:upload"))
    assert page.get_attribute("#dropzone", "aria-disabled") == "true"
    page.evaluate("window.notReloaded = true")
    page.select_option("#id_sample_pick", str(sample.pk))
    assert page.get_attribute("#dropzone", "aria-disabled") is None
    assert page.evaluate("window.notReloaded") is True
    assert sample.lab_sample_id in page.text_content("#upload-target")
    assert page.is_visible("#known-category-field")  # alice curates the sample's project
    path = tmp_path / "picked.png"
    path.write_bytes(png_bytes(960))
    page.set_input_files("#id_files", str(path))
    page.wait_for_function("document.querySelectorAll('.file-row .outcome.stored').length === 1")
    assert SEMImage.objects.filter(sample=sample).count() == 1
    # Coming back to Upload: the last sample is chosen and the drop zone is ready.
    page.goto(reverse("web:upload"))
    assert page.input_value("#id_sample_pick") == str(sample.pk)
    assert page.get_attribute("#dropzone", "aria-disabled") is None
    screenshot(page, "i23-upload-remembered")
    page.problems.assert_none()


def test_last_upload_sample_is_remembered(client, curator, sample, other_sample):
    from tests.web.conftest import png_bytes

    client.force_login(curator)
    assert client.get(reverse("web:upload")).context["selected"] is None
    upload = SimpleUploadedFile("a.png", png_bytes(961), content_type="image/png")
    assert client.post(reverse("web:upload_file"), {"sample": sample.pk, "file": upload}).status_code == 201
    assert client.get(reverse("web:upload")).context["selected"] == sample
    # A sample of a project the user cannot see is never preselected.
    session = client.session
    session["upload_last_sample"] = other_sample.pk
    session.save()
    assert client.get(reverse("web:upload")).context["selected"] is None


def test_a_members_only_project_is_preselected_for_a_new_sample(client, member, project, other_project):
    client.force_login(member)
    page = client.get(reverse("web:upload")).content.decode()
    assert f'<option value="{project.pk}" selected>' in page


# --- lows: tokens, focus, skip link, validation loss ----------------------------------------------------


@browser_test
def test_token_secret_has_a_copy_button_and_revoke_asks_and_confirms(browser, live_server, client, member):
    page = browser
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(page, live_server, client, member)
    page.goto(reverse("account:tokens"))
    page.fill("#id_name", "LIMS")
    with page.expect_navigation():
        page.click("button.primary[type=submit]")
    secret = page.text_content("#new-token-secret").strip()
    page.click("#copy-token")
    page.wait_for_function("document.getElementById('copy-token-status').textContent.length > 0")
    assert page.text_content("#copy-token-status") == "Copied."
    assert page.evaluate("navigator.clipboard.readText()") == secret
    questions = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    page.click("button:has-text('Revoke')")  # the help text also says 'revoke'
    assert questions and "Revoke the token “LIMS”" in questions[0]
    assert ApiToken.objects.get(user=member).revoked_at is None  # dismissed: nothing happened
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.click("button:has-text('Revoke')")  # the help text also says 'revoke'
    assert "Token “LIMS” revoked" in page.text_content(".messages")
    assert ApiToken.objects.get(user=member).revoked_at is not None
    page.problems.assert_none()


@browser_test
def test_focus_stays_on_the_label_button_after_the_reload(
    browser, live_server, client, curator, sample, make_image, categories
):
    image = make_image(sample)
    page = browser
    sign_in(page, live_server, client, curator)
    page.goto(reverse("web:image_detail", args=[image.pk]))
    fibres = categories["Fibres"].pk
    page.focus(f'form[data-label-form] button[value="{fibres}"]')
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "labelled Fibres" in page.text_content(".messages")
    assert page.evaluate("document.activeElement.tagName") == "BUTTON"
    assert page.evaluate("document.activeElement.value") == str(fibres)
    page.problems.assert_none()


@browser_test
def test_first_tab_reaches_a_visible_skip_link(browser, live_server, client, member):
    page = browser
    sign_in(page, live_server, client, member)
    page.goto(reverse("web:dashboard"))
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    box = page.locator(".skip-link").bounding_box()
    assert box and box["y"] >= 0, "the focused skip link is on screen"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "content"


@browser_test
def test_progress_labels_the_validation_loss(browser, live_server, client, admin_user, running_run):
    page = browser
    sign_in(page, live_server, client, admin_user)
    page.goto(reverse("web:training"))
    detail = '.run-progress [data-field="detail"]'
    page.wait_for_function(f"document.querySelector('{detail}').textContent.includes('loss')")
    text = page.text_content(detail)
    assert "validation loss 2.000" in text, text  # the epoch_end event of running_run: valid_loss 2.2 - 0.2
    TrainingRun.objects.filter(pk=running_run.pk).update(
        progress={"event": "batch", "stage": 0, "stages": 2, "batch": 3, "batches": 9, "train_loss": 1.5}
    )
    page.wait_for_function(f"document.querySelector('{detail}').textContent.includes('batch loss 1.500')")
    page.problems.assert_none()


# --- 11: the viewer -----------------------------------------------------------------------------------


@browser_test
def test_viewer_controls_focus_ring_scale_bar_and_navigator(browser, live_server, client, curator, sample):
    import io

    from portal.services.ingestion.ingest import ingest_file
    from tests.helpers import png_bytes

    image = ingest_file(io.BytesIO(png_bytes(77, size=1000)), filename="big.png", sample=sample, uploaded_by=curator)
    SEMImage.objects.filter(pk=image.image.pk).update(pixel_size_nm=2.5)
    page = browser
    sign_in(page, live_server, client, curator)
    page.goto(reverse("web:image_detail", args=[image.image.pk]))
    page.wait_for_function("window.imageViewer && window.imageViewer.world.getItemCount() === 1")
    viewer = page.locator("#viewer").bounding_box()
    navigator = page.locator("#viewer .navigator").bounding_box()
    assert navigator["y"] + navigator["height"] < viewer["y"] + viewer["height"] / 2, "navigator at the top"
    assert page.is_hidden("#viewer-scale-bar"), "at the home view the instrument's own bar is enough"
    # The canvas's focus ring is drawn inside the clipped box.
    page.focus("#viewer .openseadragon-canvas")
    ring = page.evaluate(
        "(() => { const s = getComputedStyle(document.activeElement); return [s.outlineStyle, s.outlineOffset]; })()"
    )
    assert ring[0] != "none" and ring[1].startswith("-"), ring
    # Tab from the canvas reaches "Zoom in"; Enter zooms in.
    for _ in range(8):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.getAttribute('aria-label')") == "Zoom in":
            break
    assert page.evaluate("document.activeElement.getAttribute('role')") == "button"
    home = page.evaluate("window.imageViewer.viewport.getZoom(true)")
    page.keyboard.press("Enter")
    page.wait_for_function(f"window.imageViewer.viewport.getZoom(true) > {home} * 1.1")
    page.wait_for_selector("#viewer-scale-bar", state="visible")
    text = page.text_content("#viewer-scale-bar")
    assert text.endswith(" nm") or text.endswith(" µm"), text
    width = page.evaluate("parseFloat(document.querySelector('#viewer-scale-bar div').style.width)")
    zoom = page.evaluate(
        "(() => { const i = window.imageViewer.world.getItemAt(0);"
        " return i.imageToViewerElementCoordinates(new OpenSeadragon.Point(1, 0)).x -"
        " i.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, 0)).x; })()"
    )
    shown_nm = float(text.split()[0]) * (1000 if text.endswith("µm") else 1)
    assert abs(width / zoom * 2.5 - shown_nm) / shown_nm < 0.02, (width, zoom, text)  # the bar is that long
    screenshot(page, "i23-viewer-zoomed")
    page.problems.assert_none()
