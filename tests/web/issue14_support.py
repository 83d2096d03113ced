"""Shared by the issue 14 UI tests: the browser-test marker, signing in, the review queue and a running
training run."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from portal.models import TrainingRun
from tests.web.conftest import PASSWORD  # noqa: F401  (users of make_user sign in with it)
from tests.web.test_browser import browser, screenshot  # noqa: F401  (the fixture)


def browser_test(function):
    """Chromium against the live server. The categories of the data migration are put back by the
    nffa_categories fixture: a transactional test before this one emptied the tables (serialized_rollback
    collided with content types restored by other transactional tests in a full run)."""
    for mark in (
        pytest.mark.browser,
        pytest.mark.slow,
        pytest.mark.django_db(transaction=True),
        pytest.mark.usefixtures("nffa_categories"),
    ):
        function = mark(function)
    return function


# --- helpers ---------------------------------------------------------------------------------------

CONTRAST_JS = """
(selectors) => {
  function parse(colour) {
    const m = colour.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return [255, 255, 255, 1];
    const parts = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
    return [parts[0], parts[1], parts[2], parts.length > 3 ? parts[3] : 1];
  }
  function over(top, bottom) {
    const a = top[3];
    return [0, 1, 2].map(i => top[i] * a + bottom[i] * (1 - a)).concat([1]);
  }
  function background(element) {
    const layers = [];
    for (let node = element; node && node.nodeType === 1; node = node.parentElement) {
      const colour = parse(getComputedStyle(node).backgroundColor);
      if (colour[3] > 0) layers.push(colour);
      if (colour[3] >= 1) break;
    }
    let result = [255, 255, 255, 1];
    for (let i = layers.length - 1; i >= 0; i--) result = over(layers[i], result);
    return result;
  }
  function luminance(rgb) {
    const c = rgb.slice(0, 3).map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  }
  function ratio(a, b) {
    const la = luminance(a), lb = luminance(b);
    return (Math.max(la, lb) + 0.05) / (Math.min(la, lb) + 0.05);
  }
  const found = [];
  for (const selector of selectors) {
    document.querySelectorAll(selector).forEach(element => {
      if (!element.textContent.trim() || !element.getClientRects().length) return;
      const bg = background(element);
      const fg = over(parse(getComputedStyle(element).color), bg);
      found.push({selector, text: element.textContent.trim().slice(0, 30), ratio: ratio(fg, bg)});
    });
  }
  return found;
}
"""


def sign_in(page, live_server, client, user) -> None:
    """Sign the browser in with a session made by Django's test client (faster than the login form)."""
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    page.context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie.value, "url": live_server.url}])


@pytest.fixture
def model(make_model):
    return make_model(1, status="production", classes=("Fibres", "Particles", "Powder"))


@pytest.fixture
def review_queue(make_image, sample, categories, model, predict):
    """Three unlabelled images, most uncertain first; the model suggests Fibres for each."""
    images = []
    for margin in (0.05, 0.2, 0.4):
        image = make_image(sample)
        predict(image, model, {"Fibres": 0.5 + margin / 2, "Particles": 0.5 - margin / 2, "Powder": 0.0}, categories)
        images.append(image)
    return images


def review_head(page) -> int:
    return int(page.get_attribute("#review", "data-image-id"))


def epoch_event(stage: int, size: int, epoch: int, epochs: int, fraction: float) -> dict:
    return {
        "event": "epoch_end",
        "stage": stage,
        "stages": 2,
        "size": size,
        "epoch": epoch,
        "epochs": epochs,
        "train_loss": 2.0 - 0.1 * epoch,
        "valid_loss": 2.2 - 0.1 * epoch,
        "metrics": {},
        "duration_s": 3.0,
        "fraction": fraction,
    }


@pytest.fixture
def running_run(admin_user):
    return TrainingRun.objects.create(
        status=TrainingRun.Status.RUNNING,
        active=True,
        trigger=TrainingRun.Trigger.MANUAL,
        requested_by=admin_user,
        started_at=timezone.now() - timedelta(seconds=95),
        heartbeat_at=timezone.now(),
        config={"arch": "resnet18", "sizes": [64, 128], "epochs": [3, 2], "pretrained": True},
        history=[epoch_event(0, 64, e, 3, 0.1 * (e + 1)) for e in range(3)],
        progress=epoch_event(0, 64, 2, 3, 0.3),
        progress_fraction=0.3,
        log="2024-01-01 10:00:00 stage 1 at 64 px\n2024-01-01 10:00:09 epoch 3 of stage 1 done",
        train_image_count=40,
        test_image_count=8,
    )
