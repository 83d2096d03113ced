"""Issue 23, item 5 and the last lows: the training budget said at request time, the phase and the budget
on the run page with a remaining time within it; the budget field's format and errors; relabels that
were reverted; a confusion cell's relabel with its source and an Undo; API tokens that expire."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from portal.models import TrainingRun
from tests.web.conftest import PASSWORD  # noqa: F401  (users of make_user sign in with it)
from tests.web.issue14_support import browser_test, sign_in  # noqa: F401
from tests.web.test_browser import browser, screenshot  # noqa: F401  (the fixture)

# --- 5: the time budget -------------------------------------------------------------------------------


@pytest.fixture
def measured_run(db):
    """An earlier run of the frozen-feature recipe that measured 0.5 s per image view."""
    plan = {"event": "plan", "kind": "frozen features", "per_view_s": 0.5, "spent_s": 10.0, "budget_s": 600}
    return TrainingRun.objects.create(
        status=TrainingRun.Status.SUCCEEDED, active=None, trigger=TrainingRun.Trigger.MANUAL, plan=plan
    )


@pytest.fixture
def training_set(make_image, sample, categories):
    """20 curated training images and 5 test images in two categories."""
    for index in range(25):
        category = categories["Fibres" if index % 2 else "Particles"]
        make_image(sample, curated=category, split="train" if index < 20 else "test")


def test_a_budget_too_small_for_the_training_set_is_said_when_the_run_is_requested(
    client, admin_user, measured_run, training_set
):
    client.force_login(admin_user)
    response = client.post(reverse("web:training_start"), {"budget": "20s"}, follow=True)
    text = " ".join(str(message) for message in response.context["messages"])
    # (10 s + 0.5 s × 25 images) / 0.8 = 28 s with one view each; 8 views: 138 s.
    assert "The budget of 20 s is too small" in text and "at least 28 s" in text, text
    assert "measured by run" in text
    run = TrainingRun.objects.get(active=True)
    assert "too small" in run.plan["request"]["warning"] and "too small" in run.log
    detail = client.get(reverse("api:training-run-detail", args=[run.pk])).json()
    assert "too small" in detail["budget_warning"]


def test_a_budget_that_fits_gets_no_warning_and_the_page_says_what_the_set_needs(
    client, admin_user, measured_run, training_set
):
    client.force_login(admin_user)
    page = client.get(reverse("web:training")).content.decode()
    estimate = page.split('id="budget-estimate">')[1].split("</p>")[0]
    # The budget's label, field, hint and Train now share one line with the other buttons (portal.css).
    assert '<form method="post" action="/training/start/" class="inline" id="train-form">' in page
    assert (
        "20 training, 5 evaluation images" in estimate
        and "about 2 min 05 s for all 8 views of each training image" in estimate
    )
    client.post(reverse("web:training_start"), {"budget": "10min"})
    assert TrainingRun.objects.get(active=True).plan["request"]["warning"] is None


@pytest.fixture
def feature_run(admin_user):
    """A 3-minute run 2 minutes in, computing features at 6 %: extrapolated, about 30 minutes remaining."""
    return TrainingRun.objects.create(
        status=TrainingRun.Status.RUNNING,
        active=True,
        trigger=TrainingRun.Trigger.MANUAL,
        requested_by=admin_user,
        started_at=timezone.now() - timedelta(seconds=120),
        heartbeat_at=timezone.now(),
        config={"arch": "efficientnet_lite0", "sizes": [224], "budget_s": 180.0},
        progress={"event": "batch", "phase": "computing features", "done": 32, "total": 240, "fraction": 0.06},
        progress_fraction=0.06,
        plan={"kind": "frozen features", "budget_s": 180.0, "planned_s": 170.0, "per_view_s": 0.1, "train_views": 2,
              "eval_views": 8, "n_train": 240, "n_eval": 60, "spent_s": 20.0, "features_s": 48.0,
              "evaluation_s": 48.0, "reserve_s": 36.0},
    )  # fmt: skip


def test_the_run_page_shows_the_phase_the_budget_and_a_remaining_time_within_it(client, admin_user, feature_run):
    client.force_login(admin_user)
    page = client.get(reverse("web:training_run", args=[feature_run.pk])).content.decode()
    assert "computing features 32/240" in page
    assert "running for 2 min 00 s of a 3 min 00 s budget · about 1 min 00 s remaining" in page
    budget = page.split('id="run-budget"')[1].split("</div>")[0]
    assert "180 s" in budget and "2 of 8 for the 240 training images" in budget
    progress = client.get(reverse("web:training_progress", args=[feature_run.pk])).json()
    assert progress["phase"] == "computing features 32/240"
    TrainingRun.objects.filter(pk=feature_run.pk).update(started_at=timezone.now() - timedelta(seconds=200))
    progress = client.get(reverse("web:training_progress", args=[feature_run.pk])).json()
    assert "20 s over its budget" in progress["elapsed"] and "remaining" not in progress["elapsed"]


def test_a_finished_feature_run_says_why_it_has_no_loss_curves(client, member, feature_run):
    """A head on frozen features has no epochs: the run page showed an empty "Loss curves" panel and a
    "Progressive resizing stages" table of one 0-epoch stage, with no word on why."""
    TrainingRun.objects.filter(pk=feature_run.pk).update(
        status=TrainingRun.Status.SUCCEEDED,
        active=None,
        finished_at=timezone.now(),
        stages=[{"stage": 0, "size": 224, "epochs": 0, "best_valid_loss": 0.03, "duration_s": 100.0}],
    )
    client.force_login(member)
    page = client.get(reverse("web:training_run", args=[feature_run.pk])).content.decode()
    assert "No loss curves: this run fitted a head on frozen ImageNet features" in page
    assert 'id="loss-chart"' not in page and "No epoch finished yet" not in page
    stages = page.split('id="stage-panel"')[1].split("</div>")[0]
    assert "<h2>Feature stage</h2>" in stages and "no epochs and no progressive resizing" in stages


def test_the_worker_keeps_the_request_warning_and_logs_the_feature_plan(feature_run):
    from classifier.config import TrainConfig
    from classifier.feature_budget import plan_views
    from portal.services.learning.training_monitor import RunMonitor
    from portal.services.learning.training_run import _config_within_budget

    TrainingRun.objects.filter(pk=feature_run.pk).update(
        plan={"request": {"budget_s": 180.0, "warning": "The budget of 3 min is too small"}},
        log="2026-01-01 10:00:00 The budget of 3 min is too small",
    )
    feature_run.refresh_from_db()
    monitor = RunMonitor(feature_run)
    monitor.progress({"event": "phase", "phase": "reading the training set", "fraction": 0.0})
    monitor.progress({"event": "phase", "phase": "loading weights", "fraction": 0.0})  # within the same second
    assert TrainingRun.objects.get(pk=feature_run.pk).progress["phase"] == "loading weights"
    monitor.progress(plan_views(150, 20, 0.1, 240, 60).event())
    config = _config_within_budget(TrainConfig(budget_s=180), feature_run, monitor)
    assert 55 < config.budget_s <= 60  # the 2 minutes since the run started count against it
    monitor.write()
    feature_run.refresh_from_db()
    assert feature_run.plan["kind"] == "frozen features" and "too small" in feature_run.plan["request"]["warning"]
    assert feature_run.log.startswith("2026-01-01 10:00:00 The budget of 3 min is too small")
    assert "Budget 150 s: 2 views per training image (240 images), 4 test-time views" in feature_run.log


@browser_test
def test_the_progress_bar_names_the_phase_as_it_changes(browser, live_server, client, admin_user, feature_run):
    page = browser
    sign_in(page, live_server, client, admin_user)
    page.goto(reverse("web:training_run", args=[feature_run.pk]))
    detail = '.run-progress [data-field="detail"]'
    page.wait_for_function(f"document.querySelector('{detail}').textContent.includes('computing features 32/240')")
    assert "of a 3 min 00 s budget" in page.text_content('.run-progress [data-field="elapsed"]')
    TrainingRun.objects.filter(pk=feature_run.pk).update(
        progress={"event": "phase", "phase": "fitting head", "fraction": 0.6}, progress_fraction=0.6
    )
    page.wait_for_function(f"document.querySelector('{detail}').textContent.includes('fitting head')")
    page.problems.assert_none()


# --- lows: the budget field ---------------------------------------------------------------------------


@browser_test
def test_the_budget_format_is_visible_and_a_bad_value_stays_with_its_error(browser, live_server, client, admin_user):
    page = browser
    sign_in(page, live_server, client, admin_user)
    page.goto(reverse("web:training"))
    assert page.is_visible("#budget-format") and "20min" in page.text_content("#budget-format")
    page.fill("#train-budget", "3 minutes")
    with page.expect_navigation():
        page.click("#train-now")
    assert page.input_value("#train-budget") == "3 minutes"
    assert page.is_visible("#budget-error") and "not a duration" in page.text_content("#budget-error")
    assert page.get_attribute("#train-budget", "aria-invalid") == "true"
    assert not TrainingRun.objects.exists()


# --- lows: relabels on the dashboard ------------------------------------------------------------------


@pytest.fixture
def evaluated_test_image(sample, make_image, make_model, predict, categories):
    """A test image labelled Fibres before v1 was evaluated; v1 predicted Particles."""
    from portal.models import Label

    image = make_image(sample, split="test", curated=categories["Fibres"])
    Label.objects.filter(image=image).update(created_at=timezone.now() - timedelta(hours=1))
    model = make_model(1, status="production", classes=("Fibres", "Particles"), counts=[[1, 1], [0, 1]])
    predict(image, model, {"Particles": 0.8, "Fibres": 0.2}, categories)
    return image


def test_a_relabel_that_was_reverted_is_not_counted_as_a_change(client, curator, evaluated_test_image, categories):
    from portal.services.curation.labels import set_label

    client.force_login(curator)
    set_label(evaluated_test_image, categories["Particles"], source="review", user=curator)
    assert 'id="labels-changed"' in client.get(reverse("web:dashboard")).content.decode()
    set_label(evaluated_test_image, categories["Fibres"], source="review", user=curator)  # back to what it was
    assert 'id="labels-changed"' not in client.get(reverse("web:dashboard")).content.decode()


@browser_test
def test_a_confusion_cell_relabel_is_recorded_as_such_and_can_be_undone(
    browser, live_server, client, curator, evaluated_test_image, categories
):
    from portal.models import Label

    page = browser
    sign_in(page, live_server, client, curator)
    cell = reverse("web:confusion_cell", args=[1]) + "?actual=Fibres&predicted=Particles"
    page.goto(cell)
    card = f'.card[data-image-id="{evaluated_test_image.pk}"]'
    page.select_option(f"{card} select", str(categories["Particles"].pk))
    with page.expect_navigation():
        page.click(f"{card} button")
    label = Label.objects.get(image=evaluated_test_image, is_current=True)
    assert label.category == categories["Particles"] and label.source == Label.Source.CONFUSION_CELL
    assert label.get_source_display() == "Dashboard (confusion cell)"
    assert f"You relabelled {evaluated_test_image.original_filename}" in page.text_content("#relabel-undo")
    with page.expect_navigation():
        page.click("#relabel-undo button")
    assert "undone: Fibres again" in page.text_content(".messages")
    current = Label.objects.get(image=evaluated_test_image, is_current=True)
    assert current.category == categories["Fibres"] and current.source == "import"
    assert not page.is_visible("#relabel-undo")
    page.problems.assert_none()


def test_only_the_offered_relabel_can_be_undone(client, curator, make_user, project, evaluated_test_image, categories):
    from portal.models import Label

    other = make_user("carl-curator", project=project, role="curator")
    client.force_login(curator)
    data = {"category": categories["Particles"].pk, "from": "confusion_cell"}
    client.post(reverse("web:image_label", args=[evaluated_test_image.pk]), data)
    label = Label.objects.get(image=evaluated_test_image, is_current=True)
    client.force_login(other)  # another curator's session offers nothing
    assert client.post(reverse("web:relabel_undo", args=[label.pk])).status_code == 404
    assert Label.objects.get(image=evaluated_test_image, is_current=True) == label


# --- lows: API tokens that expire ----------------------------------------------------------------------


def test_an_expired_token_is_refused_with_a_401_that_says_so(member):
    from rest_framework.test import APIClient

    from portal.services.delivery.tokens import create_token

    created = create_token(member, "LIMS", expires_at=timezone.now() + timedelta(hours=1))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {created.secret}")
    assert client.get(reverse("api:project-list")).status_code == 200
    type(created.token).objects.filter(pk=created.token.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    response = client.get(reverse("api:project-list"))
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "authentication_failed"
    assert "This token expired on" in error["message"] and "/account/tokens/" in error["message"]


def test_a_past_expiry_day_is_refused_on_the_token_page(client, member):
    from portal.models import ApiToken

    client.force_login(member)
    yesterday = (timezone.localdate() - timedelta(days=1)).isoformat()
    page = client.post(reverse("account:tokens"), {"name": "LIMS", "expires": yesterday}).content.decode()
    assert "That day is past" in page and not ApiToken.objects.exists()


@browser_test
def test_a_token_gets_an_expiry_date_shown_in_the_list(browser, live_server, client, member):
    from portal.models import ApiToken

    page = browser
    sign_in(page, live_server, client, member)
    page.goto(reverse("account:tokens"))
    last_day = timezone.localdate() + timedelta(days=30)
    page.fill("#id_name", "LIMS")
    page.fill("#id_expires", last_day.isoformat())
    with page.expect_navigation():
        page.click("button.primary[type=submit]")
    token = ApiToken.objects.get(user=member)
    assert timezone.localtime(token.expires_at).date() == last_day + timedelta(days=1)  # refused from midnight
    row = page.text_content("table.data tbody tr")
    assert f"{last_day + timedelta(days=1):%Y-%m-%d} 00:00" in row and "active" in row
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    page.reload()
    assert "expired" in page.text_content("table.data tbody tr")
    page.problems.assert_none()
