"""Issue 25, item 3 on the pages: the Training page's "Refit head" and its rule, the Review page's note."""

from __future__ import annotations

import pytest
from django.urls import reverse

from portal.models import ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db

FROZEN = {"recipe": "frozen_head", "arch": "efficientnet_lite0"}


@pytest.fixture
def frozen_production(make_model, settings):
    settings.SEM_TRAIN_ARCH = "efficientnet_lite0"
    return make_model(1, status=ModelVersion.Status.PRODUCTION, arch="efficientnet_lite0", metadata=FROZEN)


def test_an_admin_refits_a_frozen_feature_production_from_the_training_page(client, admin_user, frozen_production):
    client.force_login(admin_user)
    page = client.get(reverse("web:training")).content.decode()
    assert 'id="refit-now"' in page and 'id="refit-now" disabled' not in page
    rule = page[page.index('id="refit-rule"') :][:400]
    assert "head is refitted on its stored embeddings once 10 curated" in rule, rule

    response = client.post(reverse("web:training_refit"), follow=True)

    run = TrainingRun.objects.get()
    assert run.kind == TrainingRun.Kind.HEAD_REFIT and run.trigger == TrainingRun.Trigger.MANUAL and run.forced
    assert f"Head refit {run.pk} queued" in response.content.decode()
    assert "Head refit" in client.get(reverse("web:training")).content.decode()  # its row says what it was


def test_a_fine_tuned_production_says_why_there_is_no_refit(client, admin_user, make_model, settings):
    settings.SEM_TRAIN_ARCH = "resnet34"
    make_model(1, status=ModelVersion.Status.PRODUCTION, arch="resnet34", metadata={"arch": "resnet34"})
    client.force_login(admin_user)
    page = client.get(reverse("web:training")).content.decode()
    assert 'id="refit-now" disabled title="The model is not a frozen-feature model' in page

    response = client.post(reverse("web:training_refit"), follow=True)

    assert not TrainingRun.objects.exists()
    assert "No head refit: the model is not a frozen-feature model" in response.content.decode()


def test_members_cannot_refit(client, member, frozen_production):
    client.force_login(member)
    assert client.post(reverse("web:training_refit")).status_code in (302, 403)
    assert not TrainingRun.objects.exists()


def test_the_review_page_says_what_a_pause_does(client, curator, project, frozen_production, settings):
    client.force_login(curator)
    assert 'id="refit-note"' in client.get(reverse("web:review")).content.decode()
    settings.SEM_REFIT_MIN_NEW_LABELS = 0
    assert 'id="refit-note"' not in client.get(reverse("web:review")).content.decode()
