"""Issue 14, "A curator's working day": the bugs seen by new users in review, upload, dashboard and
training pages, each with a test that failed before the fix. Browser tests drive Debian's Chromium
(the `browser` fixture of test_browser.py, no worker); the others use Django's test client."""

from __future__ import annotations

from django.urls import reverse

from portal.models import ApiToken, SEMImage
from tests.web.conftest import PASSWORD  # noqa: F401  (users of make_user sign in with it)
from tests.web.issue14_support import browser_test, model, review_head, review_queue, sign_in  # noqa: F401
from tests.web.test_browser import browser, screenshot  # noqa: F401  (the fixture)

# --- 1 and 7: review keys ----------------------------------------------------------------------------


@browser_test
def test_review_enter_on_a_focused_control_activates_that_control(
    browser, live_server, client, curator, review_queue, categories
):
    page = browser
    sign_in(page, live_server, client, curator)
    page.goto(reverse("web:review"))
    first = review_head(page)
    # Enter on the focused "Powder" button labels Powder, not the top suggestion (Fibres).
    page.focus(f'#category-keys button[value="{categories["Powder"].pk}"]')
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert SEMImage.objects.get(pk=first).curated_category == categories["Powder"]
    # Enter on the focused "Undo last" button undoes; it does not accept a suggestion for the next image.
    second = review_head(page)
    page.focus("#undo-form button")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert SEMImage.objects.get(pk=first).curated_category is None
    assert SEMImage.objects.get(pk=second).curated_category is None
    # With nothing focused, Enter still accepts the suggestion.
    assert review_head(page) == first
    page.evaluate("document.activeElement && document.activeElement.blur()")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert SEMImage.objects.get(pk=first).curated_category == categories["Fibres"]
    page.problems.assert_none()


@browser_test
def test_review_u_after_s_undoes_the_skip(browser, live_server, client, curator, review_queue, categories):
    page = browser
    sign_in(page, live_server, client, curator)
    page.goto(reverse("web:review"))
    first = review_head(page)
    particles = page.get_attribute(f'#category-keys button[value="{categories["Particles"].pk}"]', "data-key")
    with page.expect_navigation():
        page.keyboard.press(particles)
    second = review_head(page)
    with page.expect_navigation():
        page.keyboard.press("s")
    assert review_head(page) != second
    with page.expect_navigation():
        page.keyboard.press("u")
    # The skip is undone: the skipped image is back, and the label before it stays.
    assert review_head(page) == second
    assert SEMImage.objects.get(pk=first).curated_category == categories["Particles"]
    with page.expect_navigation():
        page.keyboard.press("u")
    assert SEMImage.objects.get(pk=first).curated_category is None
    page.problems.assert_none()


# --- 2 and 3: upload ---------------------------------------------------------------------------------


def test_fetch_endpoints_answer_401_json_when_signed_out(client, sample, curator):
    for method, url in (
        ("post", reverse("web:upload_file")),
        ("get", reverse("web:upload_status") + "?ids=1"),
        ("get", reverse("web:training_progress", args=[1])),
    ):
        response = getattr(client, method)(url, HTTP_ACCEPT="application/json")
        assert response.status_code == 401, url
        body = response.json()
        assert body["error"]["code"] == "not_authenticated"
        assert "signed out" in body["reason"].lower()
    # The pages themselves still send a browser to the login page.
    assert client.get(reverse("web:upload")).status_code == 302


@browser_test
def test_upload_after_the_session_ended_says_so_and_retries(browser, live_server, client, curator, sample, tmp_path):
    from tests.web.conftest import png_bytes

    page = browser
    sign_in(page, live_server, client, curator)
    page.goto(f"{reverse('web:upload')}?sample={sample.pk}")
    files = []
    for index in range(2):
        path = tmp_path / f"after-logout-{index}.png"
        path.write_bytes(png_bytes(900 + index))
        files.append(str(path))
    # Signed out in another tab: same browser, same cookies.
    other = page.context.new_page()
    other.goto(reverse("web:browse"))
    with other.expect_navigation():
        other.click(".account button[type=submit]")
    other.close()
    page.set_input_files("#id_files", files)
    page.wait_for_function("document.querySelectorAll('.file-row .outcome.rejected').length === 2")
    outcomes = page.locator(".file-row .outcome").all_text_contents()
    assert all("signed out" in text.lower() for text in outcomes), outcomes
    assert not any("Server error" in text for text in outcomes), outcomes
    assert "signed out" in page.text_content("#upload-summary").lower()
    assert SEMImage.objects.filter(sample=sample).count() == 0
    retry = page.locator("#retry-failed")
    assert retry.is_visible()
    screenshot(page, "i14-upload-signed-out")
    # Signed in again (in another tab): the failed files go up without choosing them again.
    sign_in(page, live_server, client, curator)
    retry.click()
    page.wait_for_function("document.querySelectorAll('.file-row .outcome.stored').length === 2")
    assert SEMImage.objects.filter(sample=sample).count() == 2
    assert page.locator("#retry-failed").is_hidden()
    # The browser logs the refused requests themselves (401); nothing else may fail.
    page.problems.items = [item for item in page.problems.items if "status of 401" not in item]
    page.problems.assert_none()


@browser_test
def test_drop_zone_is_reachable_with_the_keyboard(browser, live_server, client, curator, sample, tmp_path):
    from tests.web.conftest import png_bytes

    page = browser
    sign_in(page, live_server, client, curator)
    page.goto(f"{reverse('web:upload')}?sample={sample.pk}")
    reached = False
    for _ in range(60):
        page.keyboard.press("Tab")
        if page.evaluate("!!document.activeElement.closest('#dropzone')"):
            reached = True
            break
    assert reached, "Tab never reaches the drop zone"
    outline = page.evaluate("getComputedStyle(document.getElementById('dropzone')).outlineStyle")
    assert outline != "none", "the focused drop zone shows no focus ring"
    path = tmp_path / "keyboard.png"
    path.write_bytes(png_bytes(950))
    page.focus("#dropzone")  # Tab may have stopped on a control inside the zone; Enter on the zone itself
    # Enter must open the chooser, i.e. click the hidden file input. The click is recorded rather than waiting
    # for Chromium's file-chooser event, which a loaded 2-core machine sometimes failed to deliver in 20 s.
    page.evaluate(
        "document.getElementById('id_files').addEventListener('click', e => { window.chooserOpened = true; "
        "e.preventDefault(); })"
    )
    page.keyboard.press("Enter")
    page.wait_for_function("window.chooserOpened === true")
    page.set_input_files("#id_files", str(path))
    page.wait_for_function("document.querySelectorAll('.file-row .outcome.stored').length === 1")
    page.problems.assert_none()


# --- 4: API tokens -------------------------------------------------------------------------------------


def test_token_page_posts_redirects_and_shows_the_secret_once(client, member):
    client.force_login(member)
    response = client.post(reverse("account:tokens"), {"name": "LIMS production"})
    assert response.status_code == 302 and response["Location"] == reverse("account:tokens")
    assert ApiToken.objects.filter(user=member).count() == 1
    shown = client.get(reverse("account:tokens")).content.decode()
    token = ApiToken.objects.get(user=member)
    assert 'id="new-token-secret"' in shown and token.prefix in shown
    secret = shown.split('id="new-token-secret">')[1].split("<")[0]
    assert secret.startswith(token.prefix)
    # Reloading shows the list, not the secret, and creates nothing.
    again = client.get(reverse("account:tokens")).content.decode()
    assert 'id="new-token-secret"' not in again and secret not in again
    assert ApiToken.objects.filter(user=member).count() == 1
    # An invalid form is shown again without a redirect.
    assert client.post(reverse("account:tokens"), {"name": ""}).status_code == 200
