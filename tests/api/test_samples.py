"""Samples CRUD with project scoping, and look-up by lab sample ID or LIMS ID."""

from __future__ import annotations

import pytest

from portal.models import Sample
from tests.api.conftest import ingest_png

pytestmark = pytest.mark.django_db


def new_sample(project, **extra):
    return {"project": project.pk, "lab_sample_id": "S-0100", "name": "Si wafer", "material": "Si", **extra}


def test_member_creates_a_sample_owned_by_them(member_api, member, project):
    response = member_api.post("/api/samples/", new_sample(project, lims_id="L-1"), format="json")
    assert response.status_code == 201, response.json()
    sample = Sample.objects.get(lab_sample_id="S-0100")
    assert sample.owner == member and sample.lims_id == "L-1"
    assert response.json()["owner"] == "mona" and response.json()["image_count"] == 0


def test_cannot_create_a_sample_in_another_project(outsider_api, project):
    response = outsider_api.post("/api/samples/", new_sample(project), format="json")
    assert response.status_code == 404  # the project is not one of yours: not found (issue 11 item 7)
    assert "project" in response.json()["error"]["fields"]
    assert not Sample.objects.filter(lab_sample_id="S-0100").exists()


def test_duplicate_lab_sample_id_is_a_field_error(curator_api, sample, project):
    response = curator_api.post("/api/samples/", new_sample(project, lab_sample_id=sample.lab_sample_id), format="json")
    assert response.status_code == 409 and response.json()["error"]["code"] == "duplicate"
    assert list(response.json()["error"]["fields"]) == ["lab_sample_id"]


def test_duplicate_lims_id_is_a_field_error_and_blank_means_none(curator_api, sample, project):
    sample.lims_id = "L-7"
    sample.save()
    clash = curator_api.post("/api/samples/", new_sample(project, lims_id="L-7"), format="json")
    assert clash.status_code == 409 and "lims_id" in clash.json()["error"]["fields"]
    blank = curator_api.post("/api/samples/", new_sample(project, lims_id=""), format="json")
    assert blank.status_code == 201 and blank.json()["lims_id"] is None
    second_blank = curator_api.post(
        "/api/samples/", new_sample(project, lab_sample_id="S-0101", lims_id=""), format="json"
    )
    assert second_blank.status_code == 201


def test_list_is_scoped_and_filterable(curator_api, admin_api, sample, other_sample):
    mine = curator_api.get("/api/samples/").json()["results"]
    assert [item["lab_sample_id"] for item in mine] == [sample.lab_sample_id]
    everything = admin_api.get("/api/samples/").json()["results"]
    assert {item["lab_sample_id"] for item in everything} == {sample.lab_sample_id, other_sample.lab_sample_id}
    by_lab_id = admin_api.get("/api/samples/", {"lab_sample_id": other_sample.lab_sample_id}).json()["results"]
    assert [item["id"] for item in by_lab_id] == [other_sample.pk]


def test_lookup_by_lims_id(curator_api, outsider_api, sample):
    sample.lims_id = "LIMS/42 a"
    sample.save()
    response = curator_api.get("/api/samples/by-lims/LIMS%2F42%20a/")
    # A slash inside the ID cannot be a path segment; the query filter covers that case.
    assert response.status_code == 404
    assert curator_api.get("/api/samples/", {"lims_id": "LIMS/42 a"}).json()["results"][0]["id"] == sample.pk
    sample.lims_id = "LIMS-42"
    sample.save()
    assert curator_api.get("/api/samples/by-lims/LIMS-42/").json()["id"] == sample.pk
    assert outsider_api.get("/api/samples/by-lims/LIMS-42/").status_code == 404
    assert curator_api.get("/api/samples/by-lims/nope/").json()["error"]["code"] == "not_found"


def test_detail_update_and_outsider_404(curator_api, outsider_api, sample):
    url = f"/api/samples/{sample.pk}/"
    assert curator_api.get(url).json()["name"] == "Test wafer"
    response = curator_api.patch(url, {"material": "GaN", "lims_id": "L-9"}, format="json")
    assert response.status_code == 200
    sample.refresh_from_db()
    assert (sample.material, sample.lims_id) == ("GaN", "L-9")
    assert outsider_api.get(url).status_code == 404
    assert outsider_api.patch(url, {"material": "x"}, format="json").status_code == 404
    assert outsider_api.delete(url).status_code == 404


def test_member_cannot_delete_someone_elses_sample(member_api, sample):
    response = member_api.delete(f"/api/samples/{sample.pk}/")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert Sample.objects.filter(pk=sample.pk).exists()


def test_owner_deletes_an_empty_sample_but_not_one_with_images(curator_api, sample, user):
    ingest_png(sample, user, seed=5)
    response = curator_api.delete(f"/api/samples/{sample.pk}/")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "protected"
    empty = Sample.objects.create(project=sample.project, lab_sample_id="S-EMPTY", name="e", owner=user)
    assert curator_api.delete(f"/api/samples/{empty.pk}/").status_code == 204
    assert not Sample.objects.filter(pk=empty.pk).exists()


def test_image_count_is_reported(curator_api, sample, user):
    ingest_png(sample, user, seed=6)
    ingest_png(sample, user, seed=7)
    assert curator_api.get(f"/api/samples/{sample.pk}/").json()["image_count"] == 2


def test_projects_are_scoped(curator_api, outsider_api, project, other_project):
    assert [p["id"] for p in curator_api.get("/api/projects/").json()["results"]] == [project.pk]
    assert outsider_api.get(f"/api/projects/{project.pk}/").status_code == 404


def test_cursor_pagination_walks_every_sample_once(curator_api, project, user):
    for number in range(7):
        Sample.objects.create(project=project, lab_sample_id=f"P-{number}", name="p", owner=user)
    seen, url = [], "/api/samples/?page_size=3"
    while url:
        page = curator_api.get(url).json()
        seen += [item["lab_sample_id"] for item in page["results"]]
        url = page["next"]
    assert sorted(seen) == sorted(f"P-{n}" for n in range(7))
