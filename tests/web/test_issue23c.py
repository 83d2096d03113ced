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
    assert "20 training, 5 evaluation images" in estimate and "about 2 min 18 s for all 8 views" in estimate
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


def test_the_worker_keeps_the_request_warning_and_logs_the_feature_plan(feature_run):
    from classifier.config import TrainConfig
    from classifier.feature_budget import plan_views
    from portal.services.training import RunMonitor, _config_within_budget

    TrainingRun.objects.filter(pk=feature_run.pk).update(
        plan={"request": {"budget_s": 180.0, "warning": "The budget of 3 min is too small"}},
        log="2026-01-01 10:00:00 The budget of 3 min is too small",
    )
    feature_run.refresh_from_db()
    monitor = RunMonitor(feature_run)
    monitor.progress(plan_views(150, 20, 0.1, 240, 60).event())
    config = _config_within_budget(TrainConfig(budget_s=180), feature_run, monitor)
    assert 55 < config.budget_s <= 60  # the 2 minutes since the run started count against it
    monitor._write()
    feature_run.refresh_from_db()
    assert feature_run.plan["kind"] == "frozen features" and "too small" in feature_run.plan["request"]["warning"]
    assert feature_run.log.startswith("2026-01-01 10:00:00 The budget of 3 min is too small")
    assert "Budget 150 s: 2 views per training image (240 images), 8 test-time views" in feature_run.log


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
