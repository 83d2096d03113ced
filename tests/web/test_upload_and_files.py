"""Upload page (sample creation, the per-file JSON endpoint through the real ingestion service, the
status endpoint) and the permission-checked file views."""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from portal.models import Label, Sample, SEMImage

pytestmark = pytest.mark.django_db


def synthetic_png(folder="Particles", seed=1) -> bytes:
    from classifier.synthetic import make_image

    buffer = io.BytesIO()
    make_image(folder, seed, size=(160, 120)).save(buffer, format="PNG")
    return buffer.getvalue()


def post_file(client, sample, name, content, **extra):
    return client.post(
        reverse("web:upload_file"), {"sample": sample.pk, "file": SimpleUploadedFile(name, content), **extra}
    )


def test_member_creates_a_sample_with_its_metadata(client, member, project):
    client.force_login(member)
    response = client.post(
        reverse("web:upload"),
        {
            "project": project.pk,
            "lab_sample_id": "TF-2031",
            "name": "ZnO nanowires on Si",
            "material": "ZnO",
            "preparation": "5 nm Pt sputter",
            "description": "",
            "lims_id": "LIMS-77",
        },
    )
    sample = Sample.objects.get(lab_sample_id="TF-2031")
    assert response["Location"] == f"{reverse('web:upload')}?sample={sample.pk}"
    assert (sample.owner, sample.project, sample.material, sample.lims_id) == (member, project, "ZnO", "LIMS-77")
    page = client.get(response["Location"]).content.decode()
    assert 'id="upload-panel"' in page and f'data-sample-id="{sample.pk}"' in page


def test_sample_form_offers_only_own_projects(client, member, project, other_project):
    client.force_login(member)
    response = client.post(reverse("web:upload"), {"project": other_project.pk, "lab_sample_id": "X-1", "name": "x"})
    assert response.status_code == 200 and response.context["sample_form"].errors["project"]
    assert not Sample.objects.filter(lab_sample_id="X-1").exists()


def test_upload_stores_reports_duplicates_and_rejects(client, member, sample):
    client.force_login(member)
    content = synthetic_png()
    stored = post_file(client, sample, "particles.png", content)
    assert stored.status_code == 201
    body = stored.json()
    image = SEMImage.objects.get(pk=body["id"])
    assert (body["outcome"], body["status"], body["url"]) == (
        "stored",
        "pending",
        reverse("web:image_detail", args=[image.pk]),
    )
    assert image.uploaded_by == member and image.original_filename == "particles.png"

    duplicate = post_file(client, sample, "again.png", content)
    assert duplicate.status_code == 200
    assert duplicate.json()["outcome"] == "duplicate" and duplicate.json()["id"] == image.pk
    assert duplicate.json()["existing_filename"] == "particles.png"

    rejected = post_file(client, sample, "page.png", b"<html><script>alert(1)</script></html>")
    assert rejected.status_code == 422
    assert rejected.json()["outcome"] == "rejected" and rejected.json()["reason"]
    assert SEMImage.objects.count() == 1


def test_duplicate_of_an_invisible_image_reveals_nothing(client, member, sample, other_sample):
    from portal.services.ingestion.ingest import ingest_file

    content = synthetic_png("Fibres", 7)
    ingest_file(io.BytesIO(content), filename="secret.png", sample=other_sample, uploaded_by=other_sample.owner)
    client.force_login(member)
    body = post_file(client, sample, "mine.png", content).json()
    assert body == {"outcome": "duplicate", "filename": "mine.png"}


def test_upload_into_a_foreign_sample_is_refused(client, member, other_sample):
    client.force_login(member)
    response = post_file(client, other_sample, "x.png", synthetic_png())
    assert response.status_code == 404 and not SEMImage.objects.exists()


def test_known_category_at_upload_needs_the_curator_role(client, member, curator, sample, categories):
    client.force_login(member)
    body = post_file(client, sample, "a.png", synthetic_png("Tips", 1), category=categories["Tips"].pk).json()
    assert SEMImage.objects.get(pk=body["id"]).curated_category is None
    client.force_login(curator)
    body = post_file(client, sample, "b.png", synthetic_png("Tips", 2), category=categories["Tips"].pk).json()
    image = SEMImage.objects.get(pk=body["id"])
    assert image.curated_category == categories["Tips"]
    assert Label.objects.get(image=image).source == Label.Source.UPLOAD


def test_status_endpoint_reports_classification(client, member, sample, make_image, make_model, predict, categories):
    image = make_image(sample)
    client.force_login(member)
    url = reverse("web:upload_status") + f"?ids={image.pk},abc,999999"
    assert client.get(url).json()["images"][0]["status"] == "pending"
    predict(image, make_model(1), {"Powder": 0.75, "Fibres": 0.25}, categories)
    [status] = client.get(url).json()["images"]
    assert (status["status"], status["predicted_category_name"], status["predicted_confidence"]) == (
        "classified",
        "Powder",
        0.75,
    )
    # The shared representation (portal.representations): the API's names and values.
    assert (status["predicted_category"], status["predicted_model_version"], status["project"]) == (
        "powder",
        1,
        sample.project_id,
    )


def test_files_have_safe_types_and_dispositions(client, member, sample):
    import numpy as np
    import tifffile

    from portal.services.ingestion.ingest import ingest_file

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, (np.arange(200 * 150, dtype=np.uint16).reshape(150, 200) * 2))
    image = ingest_file(
        io.BytesIO(buffer.getvalue()), filename='evil"name.tif', sample=sample, uploaded_by=member
    ).image
    client.force_login(member)

    original = client.get(reverse("web:image_original", args=[image.pk]))
    assert original["Content-Type"] == "image/tiff"
    assert original["Content-Disposition"].startswith("attachment;")
    assert b"".join(original.streaming_content) == buffer.getvalue()  # byte for byte

    thumbnail = client.get(reverse("web:image_thumbnail", args=[image.pk]))
    assert thumbnail["Content-Type"] == "image/jpeg" and thumbnail["Content-Disposition"].startswith("inline;")
    assert client.get(reverse("web:image_derivative", args=[image.pk]))["Content-Type"] == "image/png"

    full = client.get(reverse("web:image_full", args=[image.pk]))
    assert full["Content-Type"] == "image/png" and full["X-Content-Type-Options"] == "nosniff"
    rendered = Image.open(io.BytesIO(b"".join(full.streaming_content)))
    assert (rendered.mode, rendered.size) == ("L", (200, 150))  # 16-bit shown as 8-bit, full resolution
    preview = client.get(reverse("web:image_preview", args=[image.pk]))
    assert Image.open(io.BytesIO(b"".join(preview.streaming_content))).size == (200, 150)


def test_detail_page_shows_metadata_predictions_and_history(
    client, curator, sample, make_image, make_model, predict, categories
):
    image = make_image(
        sample,
        vendor="Zeiss",
        instrument_model="Sigma 300",
        accelerating_voltage_kv=5.0,
        working_distance_mm=4.2,
        magnification=25000,
        pixel_size_nm=2.5,
        detector="InLens",
        curated=categories["Fibres"],
    )
    predict(image, make_model(1, status="production"), {"Powder": 0.7, "Fibres": 0.2, "Particles": 0.1}, categories)
    client.force_login(curator)
    client.post(reverse("web:image_label", args=[image.pk]), {"category": categories["Powder"].pk})
    html = client.get(reverse("web:image_detail", args=[image.pk])).content.decode()
    for text in (
        "Sigma 300",
        "5 kV",
        "4.2 mm",
        "25,000×",
        "2.5 nm",
        "InLens",
        "Test wafer",
        "S-0001",
        "Model v1",
        "70\u00a0%",
        "Folder import",
        "Image page",
        'id="viewer"',
    ):
        assert text in html, text
