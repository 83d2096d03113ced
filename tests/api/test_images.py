"""Images: idempotent upload through the ingestion service, filters, downloads, predictions, labels."""

from __future__ import annotations

import hashlib

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from portal.models import Label, ModelVersion, SEMImage
from tests.api.conftest import classify, ingest_png, make_model, png_bytes

pytestmark = pytest.mark.django_db


def upload(client, data: bytes, *, name="wire.png", key=None, **fields):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    payload = {"file": SimpleUploadedFile(name, data, content_type="image/png"), **fields}
    return client.post("/api/images/", payload, format="multipart", **headers)


# --- upload ---------------------------------------------------------------------------------------


def test_upload_stores_the_image_and_answers_201(member_api, member, sample):
    data = png_bytes(10)
    response = upload(member_api, data, sample=sample.pk, vendor="Hitachi", accelerating_voltage_kv="5.0")
    assert response.status_code == 201, response.json()
    body = response.json()
    image = SEMImage.objects.get(pk=body["id"])
    assert image.sha256 == hashlib.sha256(data).hexdigest() == body["sha256"]
    assert image.uploaded_by == member and image.sample == sample
    assert (body["format"], body["width"], body["height"], body["status"]) == ("PNG", 48, 48, "pending")
    # The PNG carries no instrument tags: the client's values fill the typed columns.
    assert (image.vendor, image.accelerating_voltage_kv) == ("Hitachi", 5.0)
    assert image.metadata["client"] == {"vendor": "Hitachi", "accelerating_voltage_kv": 5.0}
    assert response["Location"] == f"/api/images/{image.pk}/"
    assert body["links"]["original"] == f"/api/images/{image.pk}/original/"


def test_upload_by_lab_sample_id(member_api, sample):
    response = upload(member_api, png_bytes(11), lab_sample_id=sample.lab_sample_id)
    assert response.status_code == 201
    assert response.json()["sample"] == sample.pk


def test_same_bytes_return_the_existing_image_with_200(member_api, sample):
    data = png_bytes(12)
    first = upload(member_api, data, sample=sample.pk)
    second = upload(member_api, data, name="renamed.png", sample=sample.pk)
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["original_filename"] == "wire.png"
    assert SEMImage.objects.count() == 1


def test_same_idempotency_key_returns_the_first_image(member_api, sample):
    first = upload(member_api, png_bytes(13), key="lims-run-77/file-1", sample=sample.pk)
    # A retried request: even different bytes under the same key never make a second image.
    retry = upload(member_api, png_bytes(14), key="lims-run-77/file-1", sample=sample.pk)
    assert (first.status_code, retry.status_code) == (201, 200)
    assert retry.json()["id"] == first.json()["id"]
    assert SEMImage.objects.count() == 1


def test_idempotency_keys_are_per_user(member_api, curator_api, sample):
    first = upload(member_api, png_bytes(15), key="k-1", sample=sample.pk)
    other_user = upload(curator_api, png_bytes(16), key="k-1", sample=sample.pk)
    assert (first.status_code, other_user.status_code) == (201, 201)
    assert SEMImage.objects.count() == 2


def test_too_long_idempotency_key_is_a_400(member_api, sample):
    response = upload(member_api, png_bytes(17), key="k" * 151, sample=sample.pk)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["error"]["fields"]
    assert SEMImage.objects.count() == 0


@pytest.mark.parametrize(
    "data, name, code",
    [
        (b"", "empty.png", "empty"),
        (b"<html><script>alert(1)</script></html>", "evil.png", None),
        (png_bytes(18)[:60], "truncated.png", None),
    ],
)
def test_refused_files_give_400_with_the_ingest_code(member_api, sample, data, name, code):
    response = upload(member_api, data, name=name, sample=sample.pk)
    assert response.status_code == 400
    error = response.json()["error"]
    if code:
        assert error["code"] == code
    assert error["code"] not in ("invalid", "error") and error["message"]
    assert error["fields"]["file"] == [error["message"]]
    assert SEMImage.objects.count() == 0


def test_missing_file_or_sample_are_field_errors(member_api, sample):
    no_file = member_api.post("/api/images/", {"sample": sample.pk}, format="multipart")
    assert no_file.status_code == 400 and "file" in no_file.json()["error"]["fields"]
    no_sample = upload(member_api, png_bytes(19))
    assert no_sample.status_code == 400 and "sample" in no_sample.json()["error"]["fields"]


def test_cannot_upload_to_another_projects_sample(outsider_api, sample):
    # Issue 11 item 7: a sample you cannot see is not found (404), like one that does not exist.
    response = upload(outsider_api, png_bytes(20), sample=sample.pk)
    assert response.status_code == 404
    assert response.json()["error"]["fields"]["sample"] == ["No such sample in your projects."]
    by_lab_id = upload(outsider_api, png_bytes(20), lab_sample_id=sample.lab_sample_id)
    assert by_lab_id.status_code == 404
    assert SEMImage.objects.count() == 0


def test_same_bytes_stored_in_an_invisible_project_is_409_without_details(outsider_api, other_sample, image):
    data = image.original.open("rb").read()
    response = upload(outsider_api, data, sample=other_sample.pk)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "duplicate"
    assert str(image.pk) not in response.content.decode()


def test_curated_label_at_upload_needs_the_curator_role(member_api, curator_api, sample):
    refused = upload(member_api, png_bytes(21), sample=sample.pk, curated_category="fibres")
    assert refused.status_code == 403
    assert SEMImage.objects.count() == 0
    accepted = upload(curator_api, png_bytes(21), sample=sample.pk, curated_category="fibres")
    assert accepted.status_code == 201
    assert accepted.json()["curated_category"] == "fibres"
    label = Label.objects.get(image_id=accepted.json()["id"])
    assert (label.category.slug, label.source, label.is_current) == ("fibres", "upload", True)


def test_unknown_category_at_upload_is_a_field_error(curator_api, sample):
    response = upload(curator_api, png_bytes(22), sample=sample.pk, curated_category="unicorns")
    assert response.status_code == 404 and "curated_category" in response.json()["error"]["fields"]


def test_anonymous_cannot_upload(anon_api, sample):
    assert upload(anon_api, png_bytes(23), sample=sample.pk).status_code == 401
    assert SEMImage.objects.count() == 0


# --- list, detail, filters --------------------------------------------------------------------------


def test_list_is_scoped_to_the_users_projects(member_api, admin_api, image, other_image):
    assert [item["id"] for item in member_api.get("/api/images/").json()["results"]] == [image.pk]
    assert {item["id"] for item in admin_api.get("/api/images/").json()["results"]} == {image.pk, other_image.pk}


def test_detail_includes_metadata_and_outsiders_get_404(member_api, outsider_api, image):
    body = member_api.get(f"/api/images/{image.pk}/").json()
    assert body["sha256"] == image.sha256 and "metadata" in body
    assert outsider_api.get(f"/api/images/{image.pk}/").status_code == 404
    assert outsider_api.get(f"/api/images/{image.pk}/original/").status_code == 404
    assert outsider_api.get(f"/api/images/{image.pk}/labels/").status_code == 404


def test_filters(member_api, sample, user, categories):
    model = make_model(1, status=ModelVersion.Status.PRODUCTION)
    sure = classify(ingest_png(sample, user, seed=30), model, {"Fibres": 0.9, "Particles": 0.1})
    unsure = classify(ingest_png(sample, user, seed=31), model, {"Fibres": 0.45, "Particles": 0.55})
    pending = ingest_png(sample, user, seed=32)
    SEMImage.objects.filter(pk=pending.pk).update(vendor="Zeiss", instrument_model="Sigma 300")

    def ids(**params):
        response = member_api.get("/api/images/", params)
        assert response.status_code == 200, response.json()
        return {item["id"] for item in response.json()["results"]}

    assert ids(predicted_category="fibres") == {sure.pk}
    assert ids(min_confidence="0.5", max_confidence="0.6") == {unsure.pk}
    assert ids(status="pending") == {pending.pk}
    assert ids(instrument="sigma") == {pending.pk}
    assert ids(vendor="zeiss") == {pending.pk}
    assert ids(uploaded_by="alice") == {sure.pk, unsure.pk, pending.pk}
    assert ids(uploaded_by="mona") == set()
    assert ids(sample=sample.pk, project=sample.project_id) == {sure.pk, unsure.pk, pending.pk}
    assert ids(uploaded_after="2000-01-01T00:00:00Z", uploaded_before="2100-01-01T00:00:00Z") == {
        sure.pk,
        unsure.pk,
        pending.pk,
    }
    assert ids(uploaded_after="2100-01-01T00:00:00Z") == set()
    from portal.services.curation.labels import set_label

    set_label(unsure, categories["particles"], source=Label.Source.REVIEW, user=user)
    assert ids(curated_category="particles") == {unsure.pk}
    assert ids(curated_category="none") == {sure.pk, pending.pk}


@pytest.mark.parametrize(
    "params",
    [
        {"status": "bogus"},
        {"min_confidence": "abc"},
        {"uploaded_after": "yesterday"},
        {"uploaded_before": ""},
        {"sample": "1.5"},
    ],
)
def test_bad_filter_values_are_400_with_field_errors(member_api, image, params):
    response = member_api.get("/api/images/", params)
    assert response.status_code == 400
    assert set(params) <= set(response.json()["error"]["fields"])


# --- files ------------------------------------------------------------------------------------------


def test_original_download_is_byte_identical_and_safe(member_api, image):
    response = member_api.get(f"/api/images/{image.pk}/original/", HTTP_ACCEPT="image/tiff")
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert hashlib.sha256(body).hexdigest() == image.sha256
    assert response["Content-Type"] == "image/png"
    assert response["Content-Disposition"].startswith("attachment;") and "img-1.png" in response["Content-Disposition"]
    assert response["X-Content-Type-Options"] == "nosniff"


def test_thumbnail_download(member_api, image):
    response = member_api.get(f"/api/images/{image.pk}/thumbnail/")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    assert b"".join(response.streaming_content)[:2] == b"\xff\xd8"
    assert response["X-Content-Type-Options"] == "nosniff"


def test_missing_original_on_disk_is_a_json_404(member_api, image):
    image.original.storage.delete(image.original.name)
    response = member_api.get(f"/api/images/{image.pk}/original/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


# --- predictions and labels -------------------------------------------------------------------------


def test_predictions_per_image_and_per_model(member_api, outsider_api, image, other_image):
    # Predictions are stored only while their model is production: v1's first, then v2 replaces it.
    old = make_model(1, status=ModelVersion.Status.PRODUCTION)
    classify(image, old, {"Fibres": 0.7, "Particles": 0.3})
    ModelVersion.objects.filter(pk=old.pk).update(status=ModelVersion.Status.RETIRED)
    new = make_model(2, status=ModelVersion.Status.PRODUCTION)
    classify(image, new, {"Fibres": 0.2, "Particles": 0.8})
    classify(other_image, new, {"Fibres": 0.6, "Particles": 0.4})

    per_image = member_api.get(f"/api/images/{image.pk}/predictions/").json()["results"]
    assert [(p["model_version"], p["category"]) for p in per_image] == [(2, "particles"), (1, "fibres")]
    assert per_image[0]["probabilities"] == {"Fibres": 0.2, "Particles": 0.8}

    per_model = member_api.get("/api/models/2/predictions/").json()["results"]
    assert [p["image"] for p in per_model] == [image.pk]  # the outsider's image is not visible
    assert [p["image"] for p in outsider_api.get("/api/models/2/predictions/").json()["results"]] == [other_image.pk]
    filtered = member_api.get("/api/models/2/predictions/", {"category": "fibres"}).json()["results"]
    assert filtered == []
    assert member_api.get("/api/models/2/predictions/", {"min_confidence": "x"}).status_code == 400
    assert member_api.get("/api/models/99/predictions/").status_code == 404


def test_curator_posts_a_correction_with_source_api(curator_api, curator, image):
    response = curator_api.post(
        f"/api/images/{image.pk}/labels/", {"category": "nanowires", "note": "checked"}, format="json"
    )
    assert response.status_code == 201, response.json()
    label = Label.objects.get(image=image, is_current=True)
    assert (label.category.slug, label.source, label.created_by, label.note) == ("nanowires", "api", curator, "checked")
    image.refresh_from_db()
    assert image.curated_category.slug == "nanowires"
    again = curator_api.post(f"/api/images/{image.pk}/labels/", {"category": "nanowires"}, format="json")
    assert again.status_code == 200 and again.json()["id"] == label.pk
    corrected = curator_api.post(f"/api/images/{image.pk}/labels/", {"category": "tips"}, format="json")
    assert corrected.status_code == 201
    history = curator_api.get(f"/api/images/{image.pk}/labels/").json()["results"]
    assert [(item["category"], item["is_current"]) for item in history] == [("tips", True), ("nanowires", False)]


def test_members_cannot_correct_labels(member_api, image):
    response = member_api.post(f"/api/images/{image.pk}/labels/", {"category": "tips"}, format="json")
    assert response.status_code == 403
    assert not Label.objects.filter(image=image).exists()
    assert member_api.get(f"/api/images/{image.pk}/labels/").status_code == 200


def test_curator_of_another_project_gets_404(outsider_api, image):
    response = outsider_api.post(f"/api/images/{image.pk}/labels/", {"category": "tips"}, format="json")
    assert response.status_code == 404
    assert not Label.objects.filter(image=image).exists()


def test_admin_may_correct_any_label(admin_api, image):
    assert admin_api.post(f"/api/images/{image.pk}/labels/", {"category": "tips"}, format="json").status_code == 201


@pytest.mark.parametrize("payload", [{}, {"category": "unicorns"}, {"category": 3}, {"category": None}])
def test_bad_label_payloads_are_400(curator_api, image, payload):
    response = curator_api.post(f"/api/images/{image.pk}/labels/", payload, format="json")
    # A category that does not exist is not found (issue 11 item 7); a malformed payload is a 400.
    assert response.status_code == (404 if payload == {"category": "unicorns"} else 400)
    assert "category" in response.json()["error"]["fields"]


def test_inactive_category_is_refused(curator_api, image, categories):
    categories["tips"].active = False
    categories["tips"].save()
    response = curator_api.post(f"/api/images/{image.pk}/labels/", {"category": "tips"}, format="json")
    assert response.status_code == 400


@pytest.mark.parametrize(
    "moment", ["0978-04-22T06:57:38-23:04", "2024-01-01T00:00:00+15:30", "0001-01-01T00:30:00+01:00"]
)
def test_extreme_time_zone_offsets_are_normalised_or_refused(member_api, image, moment):
    # Found by the schemathesis run: PostgreSQL refuses offsets beyond +-15:59, which ISO 8601 allows.
    response = member_api.get("/api/images/", {"uploaded_before": moment})
    assert response.status_code in (200, 400)
    if response.status_code == 400:
        assert "uploaded_before" in response.json()["error"]["fields"]
