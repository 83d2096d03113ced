"""Every page and action, for every role: anonymous, member, curator, admin, and another project's
images (404, never a hint that they exist)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from portal.models import Label, ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def own_image(make_image, sample):
    return make_image(sample)


@pytest.fixture
def foreign_image(make_image, other_sample):
    return make_image(other_sample)


def page_urls(image, run, model) -> list[str]:
    return [
        reverse("web:browse"),
        reverse("web:upload"),
        reverse("web:image_detail", args=[image.pk]),
        reverse("web:image_original", args=[image.pk]),
        reverse("web:image_thumbnail", args=[image.pk]),
        reverse("web:image_derivative", args=[image.pk]),
        reverse("web:image_full", args=[image.pk]),
        reverse("web:image_preview", args=[image.pk]),
        reverse("web:upload_status") + f"?ids={image.pk}",
        reverse("web:dashboard"),
        reverse("web:confusion_cell", args=[model.version]) + "?actual=Fibres&predicted=Particles",
        reverse("web:training"),
        reverse("web:training_run", args=[run.pk]),
        reverse("web:training_progress", args=[run.pk]),
        reverse("web:review"),
    ]


@pytest.fixture
def run(db):
    return TrainingRun.objects.create(
        trigger=TrainingRun.Trigger.MANUAL, active=None, status=TrainingRun.Status.SUCCEEDED
    )


def test_anonymous_is_sent_to_login_everywhere(client, own_image, run, make_model):
    model = make_model(1)
    fetched = {reverse("web:upload_status") + f"?ids={own_image.pk}", reverse("web:training_progress", args=[run.pk])}
    for url in page_urls(own_image, run, model):
        response = client.get(url)
        if url in fetched:  # endpoints of page scripts: 401 JSON, not the login page (issue 14)
            assert response.status_code == 401, url
            continue
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login") + "?next="), url


def test_anonymous_posts_change_nothing(client, own_image, categories):
    client.post(reverse("web:image_label", args=[own_image.pk]), {"category": categories["Fibres"].pk})
    client.post(reverse("web:training_start"))
    assert not Label.objects.exists()
    assert not TrainingRun.objects.exists()


def test_member_sees_own_project_pages_but_not_the_review_queue(client, member, own_image, run, make_model):
    model = make_model(1)
    client.force_login(member)
    for url in page_urls(own_image, run, model):
        expected = 403 if url == reverse("web:review") else 200
        assert client.get(url).status_code == expected, url


@pytest.mark.parametrize("role", ["member", "curator"])
def test_other_projects_images_are_404(client, make_user, project, foreign_image, role):
    client.force_login(make_user(f"someone-{role}", project=project, role=role))
    for name in (
        "web:image_detail",
        "web:image_original",
        "web:image_thumbnail",
        "web:image_derivative",
        "web:image_full",
        "web:image_preview",
    ):
        assert client.get(reverse(name, args=[foreign_image.pk])).status_code == 404, name
    response = client.post(reverse("web:image_label", args=[foreign_image.pk]), {"category": 1})
    assert response.status_code == 404
    status = client.get(reverse("web:upload_status") + f"?ids={foreign_image.pk}").json()
    assert status == {"images": []}


def test_browse_lists_only_visible_images(client, member, own_image, foreign_image):
    client.force_login(member)
    page = client.get(reverse("web:browse"))
    ids = [image.pk for image in page.context["page"].object_list]
    assert ids == [own_image.pk]
    assert foreign_image.original_filename not in page.content.decode()


def test_admin_sees_every_project(client, admin_user, own_image, foreign_image):
    client.force_login(admin_user)
    page = client.get(reverse("web:browse"))
    assert {image.pk for image in page.context["page"].object_list} == {own_image.pk, foreign_image.pk}
    assert client.get(reverse("web:image_detail", args=[foreign_image.pk])).status_code == 200


def test_member_cannot_correct_labels(client, member, own_image, categories):
    client.force_login(member)
    response = client.post(reverse("web:image_label", args=[own_image.pk]), {"category": categories["Fibres"].pk})
    assert response.status_code == 403
    assert not Label.objects.filter(image=own_image).exists()
    detail = client.get(reverse("web:image_detail", args=[own_image.pk])).content.decode()
    assert "Correct the label" not in detail


def test_curator_corrects_a_label_in_one_click(client, curator, own_image, categories):
    client.force_login(curator)
    detail = client.get(reverse("web:image_detail", args=[own_image.pk])).content.decode()
    assert "Correct the label" in detail
    response = client.post(reverse("web:image_label", args=[own_image.pk]), {"category": categories["Powder"].pk})
    assert response.status_code == 302
    assert response["Location"] == reverse("web:image_detail", args=[own_image.pk])
    own_image.refresh_from_db()
    assert own_image.curated_category == categories["Powder"]
    label = Label.objects.get(image=own_image, is_current=True)
    assert (label.source, label.created_by) == (Label.Source.IMAGE_PAGE, curator)


def test_curator_of_another_project_cannot_curate_here(
    client, make_user, project, other_project, own_image, categories
):
    # A member here who curates elsewhere sees the image but may not label it.
    person = make_user("mixed", project=project, role="member")
    from portal.models import Membership

    Membership.objects.create(project=other_project, user=person, role="curator")
    client.force_login(person)
    response = client.post(reverse("web:image_label", args=[own_image.pk]), {"category": categories["Fibres"].pk})
    assert response.status_code == 403


def test_label_redirect_ignores_foreign_next_urls(client, curator, own_image, categories):
    client.force_login(curator)
    response = client.post(
        reverse("web:image_label", args=[own_image.pk]),
        {"category": categories["Tips"].pk, "next": "https://evil.example/"},
    )
    assert response["Location"] == reverse("web:image_detail", args=[own_image.pk])


@pytest.mark.parametrize("role", ["member", "curator"])
def test_only_admins_may_train_promote_and_roll_back(client, make_user, project, make_model, role):
    candidate = make_model(2)
    client.force_login(make_user(f"not-admin-{role}", project=project, role=role))
    assert client.post(reverse("web:training_start")).status_code == 403
    assert client.post(reverse("web:model_promote", args=[2])).status_code == 403
    assert client.post(reverse("web:model_rollback")).status_code == 403
    assert not TrainingRun.objects.exists()
    candidate.refresh_from_db()
    assert candidate.status == ModelVersion.Status.CANDIDATE
    page = client.get(reverse("web:training")).content.decode()
    assert 'id="train-now"' not in page and "Promote</button>" not in page


def test_admin_starts_a_training_run_once(client, admin_user):
    client.force_login(admin_user)
    page = client.get(reverse("web:training")).content.decode()
    assert 'id="train-now"' in page
    client.post(reverse("web:training_start"))
    run = TrainingRun.objects.get()
    assert (run.status, run.active, run.trigger, run.requested_by) == (
        TrainingRun.Status.QUEUED,
        True,
        TrainingRun.Trigger.MANUAL,
        admin_user,
    )
    # The lock holds: a second click does not queue a second run.
    response = client.post(reverse("web:training_start"), follow=True)
    assert TrainingRun.objects.count() == 1
    assert "already queued or running" in response.content.decode()


def test_training_actions_need_post(client, admin_user, make_model):
    make_model(2)
    client.force_login(admin_user)
    assert client.get(reverse("web:training_start")).status_code == 405
    assert client.get(reverse("web:model_promote", args=[2])).status_code == 405
    assert client.get(reverse("web:model_rollback")).status_code == 405


def test_admin_promotes_and_rolls_back(client, admin_user, make_model, tmp_path):
    artifact = tmp_path / "model.pth"
    artifact.write_bytes(b"weights")
    first = make_model(1, status=ModelVersion.Status.PRODUCTION, artifact_path=str(artifact))
    second = make_model(2, artifact_path=str(artifact))
    client.force_login(admin_user)
    client.post(reverse("web:model_promote", args=[2]))
    first.refresh_from_db(), second.refresh_from_db()
    assert (first.status, second.status) == (ModelVersion.Status.RETIRED, ModelVersion.Status.PRODUCTION)
    assert second.promoted_by == admin_user
    response = client.post(reverse("web:model_rollback"), follow=True)
    first.refresh_from_db(), second.refresh_from_db()
    assert (first.status, second.status) == (ModelVersion.Status.PRODUCTION, ModelVersion.Status.REJECTED)
    assert "v1 is in production again" in response.content.decode()


def test_refused_promotion_shows_the_reason(client, admin_user, make_model):
    make_model(3, artifact_path="/nonexistent/model.pth")
    client.force_login(admin_user)
    response = client.post(reverse("web:model_promote", args=[3]), follow=True)
    assert "artifact file is missing" in response.content.decode()
    assert ModelVersion.objects.get(version=3).status == ModelVersion.Status.CANDIDATE


def test_review_queue_is_for_curators_and_admins(client, member, curator, admin_user):
    client.force_login(member)
    assert client.get(reverse("web:review")).status_code == 403
    assert 'href="/review/"' not in client.get(reverse("web:browse")).content.decode()
    client.force_login(curator)
    assert client.get(reverse("web:review")).status_code == 200
    assert 'href="/review/"' in client.get(reverse("web:browse")).content.decode()
    client.force_login(admin_user)
    assert client.get(reverse("web:review")).status_code == 200


def test_login_and_logout(client, member):
    page = client.get(reverse("login"))
    assert page.status_code == 200 and 'name="password"' in page.content.decode()
    response = client.post(reverse("login"), {"username": member.username, "password": "wrong"})
    assert response.status_code == 200 and "_auth_user_id" not in client.session
    response = client.post(
        reverse("login"),
        {"username": member.username, "password": "pw-web-tests-123", "next": reverse("web:dashboard")},
    )
    assert response["Location"] == reverse("web:dashboard")
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("web:browse")).status_code == 302


def test_home_redirects_to_browse(client, member):
    client.force_login(member)
    assert client.get("/")["Location"] == reverse("web:browse")
