"""What an answer discloses (issue 11, item 10).

The class: answers that tell a client about the server or about projects it cannot see. Before: a refused
upload's message carried the server's temporary path ("cannot identify image file
'/…/sem-upload-….bin'"); `/api/samples/?project=N` answered 400 for a project that does not exist and
an empty 200 for one the client cannot see, so project ids could be enumerated. Now decoder messages are
cleaned of paths and addresses, and every look-up answers the same for "not there" and "not yours".
The schema and the API docs stay public (decided in docs/api.md): they describe endpoints, not data.
"""

from __future__ import annotations

import io
import re
import uuid

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from portal.models import Membership, Project, Sample
from portal.services.delivery.tokens import create_token
from portal.services.ingestion.ingest import ingest_file
from portal.services.ingestion.ingest_errors import IngestError
from tests.helpers import png_bytes
from tests.hostile.corpus import HTML, refused, valid_png, valid_tiff

pytestmark = pytest.mark.django_db

SERVER_DETAIL = re.compile(r"sem-upload-|upload-spool|/tmp/|/var/|/work/|/srv/|/home/| at 0x[0-9a-f]+")
CORRUPT = {
    "png_magic_html": b"\x89PNG\r\n\x1a\n" + HTML,
    "png_bad_ihdr": b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
    "tiff_magic_html": b"II*\x00" + HTML,
    "tiff_cut_ifd": valid_tiff(3)[:40],
    "jpeg_magic_html": b"\xff\xd8\xff" + HTML,
    "bmp_header_junk": b"BM" + b"\x00" * 12 + b"\x28\x00\x00\x00" + b"\xff" * 40,
}


def refusal_message(data: bytes, name: str, sample, user) -> str:
    with pytest.raises(IngestError) as caught:
        ingest_file(io.BytesIO(data), filename=name, sample=sample, uploaded_by=user)
    return caught.value.message


@pytest.mark.parametrize("name", list(CORRUPT) + [entry.id for entry in refused()])
def test_refusal_messages_name_no_server_path(name, sample, user, settings, tmp_path):
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "upload-spool")
    (tmp_path / "upload-spool").mkdir()
    data = CORRUPT[name] if name in CORRUPT else next(entry.data for entry in refused() if entry.id == name)
    message = refusal_message(data, f"{name}.bin", sample, user)
    assert not SERVER_DETAIL.search(message), message
    assert str(tmp_path) not in message and str(settings.MEDIA_ROOT) not in message, message


def test_the_api_and_the_web_answers_carry_no_server_path(user, sample):
    token = create_token(user, "lims").secret
    web = Client()
    web.force_login(user)
    for data in CORRUPT.values():
        boundary = uuid.uuid4().hex
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="sample"\r\n\r\n{sample.pk}\r\n'
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        content_type = f"multipart/form-data; boundary={boundary}"
        for response in (
            Client().post("/api/images/", data=body, content_type=content_type, HTTP_AUTHORIZATION=f"Bearer {token}"),
            web.post(reverse("web:upload_file"), data=body, content_type=content_type),
        ):
            assert response.status_code in (400, 422), response.content[:300]
            assert not SERVER_DETAIL.search(response.content.decode()), response.content[:500]


# --- "not there" and "not yours" answer alike ---------------------------------------------------------


@pytest.fixture
def hidden(django_user_model):
    """A project the requesting user cannot see, with a sample and an image."""
    owner = django_user_model.objects.create_user("hidden-owner", "h@example.org", "pw-hidden-1")
    # Ids of a distinctive length, so that a page's text can be compared with the id blanked out.
    project = Project.objects.create(pk=7_000_001, name="Hidden alloys")
    Membership.objects.create(project=project, user=owner, role=Membership.Role.CURATOR)
    sample = Sample.objects.create(
        pk=7_000_002,
        project=project,
        lab_sample_id="HID-1",
        name="Secret alloy",
        owner=owner,
        lims_id="LIMS-HID-1",
        material="Unobtainium",
    )
    image = ingest_file(io.BytesIO(png_bytes(9090)), filename="secret.png", sample=sample, uploaded_by=owner).image
    return {"project": project.pk, "sample": sample.pk, "image": image.pk}


MISSING = 9_000_001  # ids no row has

API_PROBES = [
    ("get", "/api/samples/?project={project}", None),
    ("get", "/api/images/?project={project}", None),
    ("get", "/api/images/?sample={sample}", None),
    ("get", "/api/review-queue/?project={project}", None),
    ("get", "/api/projects/{project}/", None),
    ("get", "/api/samples/{sample}/", None),
    ("get", "/api/images/{image}/", None),
    ("get", "/api/images/{image}/labels/", None),
    ("get", "/api/images/{image}/predictions/", None),
    ("get", "/api/images/{image}/original/", None),
    ("post", "/api/samples/", {"project": "{project}", "lab_sample_id": "NEW-1", "name": "n"}),
    (
        "post",
        "/api/webhooks/",
        {"url": "https://lims.example.org/h", "events": ["label.changed"], "project": "{project}"},
    ),
    ("post", "/api/images/{image}/labels/", {"category": "fibres"}),
]


def _fill(value, ids: dict):
    if isinstance(value, str):
        filled = value.format(**ids)
        return int(filled) if filled.isdigit() and value.startswith("{") else filled
    if isinstance(value, dict):
        return {key: _fill(item, ids) for key, item in value.items()}
    return value


def _normalised(response, ids: dict) -> tuple[int, str]:
    text = response.content.decode(errors="replace")
    for value in ids.values():
        text = re.sub(rf"\b{value}\b", "<id>", text)
    return response.status_code, text


@pytest.mark.parametrize(("method", "path", "body"), API_PROBES, ids=[f"{m} {p}" for m, p, _ in API_PROBES])
def test_api_answers_the_same_for_missing_and_invisible(method, path, body, user, project, sample, hidden, categories):
    token = create_token(user, "probe").secret
    answers = []
    for ids in (hidden, {"project": MISSING, "sample": MISSING + 1, "image": MISSING + 2}):
        client = Client()
        kwargs = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
        if body is not None:
            kwargs.update(data=_fill(body, ids), content_type="application/json")
        response = getattr(client, method)(_fill(path, ids), **kwargs)
        used = {key: value for key, value in ids.items() if f"{{{key}}}" in path + str(body)}
        answers.append(_normalised(response, used))
    assert answers[0] == answers[1], answers
    assert "Secret alloy" not in answers[0][1] and "Hidden alloys" not in answers[0][1]


def test_api_upload_to_a_missing_or_invisible_sample_answers_alike(user, sample, hidden):
    token = create_token(user, "probe").secret
    answers = []
    for sample_id in (hidden["sample"], MISSING):
        boundary = uuid.uuid4().hex
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="sample"\r\n\r\n{sample_id}\r\n'
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
            ).encode()
            + valid_png(7070)
            + f"\r\n--{boundary}--\r\n".encode()
        )
        response = Client().post(
            "/api/images/",
            data=body,
            content_type=f"multipart/form-data; boundary={boundary}",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        answers.append(_normalised(response, {"sample": sample_id}))
    assert answers[0] == answers[1] and answers[0][0] == 404, answers


@pytest.mark.parametrize("path", ["/browse/?project={project}", "/upload/?sample={sample}", "/images/{image}/"])
def test_pages_answer_the_same_for_missing_and_invisible(path, user, project, hidden):
    client = Client()
    client.force_login(user)
    answers = []
    for ids in (hidden, {"project": MISSING, "sample": MISSING + 1, "image": MISSING + 2}):
        response = client.get(path.format(**ids))
        status, text = _normalised(response, {key: value for key, value in ids.items() if f"{{{key}}}" in path})
        text = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", text)
        answers.append((status, text))
    assert answers[0] == answers[1]


def test_a_taken_lab_or_lims_id_conflicts_without_naming_anything_of_the_other_project(user, project, sample, hidden):
    api = Client()
    token = {"HTTP_AUTHORIZATION": f"Bearer {create_token(user, 'probe').secret}"}
    sample.lims_id = "LIMS-MINE"
    sample.save()
    bodies = []
    for lab_id, lims_id in (("HID-1", None), (sample.lab_sample_id, None), ("N-1", "LIMS-HID-1"), ("N-2", "LIMS-MINE")):
        payload = {"project": project.pk, "lab_sample_id": lab_id, "name": "n"}
        if lims_id:
            payload["lims_id"] = lims_id
        response = api.post("/api/samples/", payload, content_type="application/json", **token)
        assert response.status_code == 409, response.content
        text = response.content.decode()
        assert not any(
            secret in text
            for secret in ("Secret alloy", "Unobtainium", "Hidden alloys", "hidden-owner", str(hidden["sample"]))
        )
        bodies.append(text)
    # Taken in an invisible project or in one's own: the same answer.
    assert bodies[0] == bodies[1] and bodies[2] == bodies[3]


def test_the_schema_and_the_docs_are_public_and_carry_no_instance_data(user, project, sample, hidden):
    anonymous = Client()
    schema = anonymous.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    text = schema.content.decode()
    for secret in (
        "Secret alloy",
        "HID-1",
        "LIMS-HID-1",
        "Hidden alloys",
        "hidden-owner",
        str(settings.MEDIA_ROOT),
        str(settings.BASE_DIR),
        settings.SECRET_KEY,
    ):
        assert secret not in text, secret
    assert anonymous.get("/api/docs/").status_code == 200
