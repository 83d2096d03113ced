"""The hostile corpus (tests/hostile/corpus.py) through every way in: ingest_file, the web upload
endpoint, the REST API and `manage.py import_folder`.

A refused file gets a clear 4xx (or IngestError / a summary line) with its code, and nothing is
stored: no row, no file under MEDIA_ROOT, no temporary file. An accepted file (a real image with a
hostile name or huge metadata) is stored byte-for-byte under its content hash inside MEDIA_ROOT,
with the sanitised name recorded.
"""

from __future__ import annotations

import io
import json
import re
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.urls import reverse

from portal.models import SEMImage
from portal.services.ingestion.ingest import ingest_file
from portal.services.ingestion.ingest_errors import IngestError
from tests.hostile.conftest import multipart_body
from tests.hostile.corpus import HostileFile, accepted, corpus, refused

pytestmark = pytest.mark.django_db

REFUSED = [pytest.param(entry, id=entry.id) for entry in refused()]
ACCEPTED = [pytest.param(entry, id=entry.id) for entry in accepted()]
# Bounded by portal.services.ingestion.metadata (MAX_RAW_STRING, MAX_TAG_BYTES): megabytes of tags never reach the row.
MAX_STORED_METADATA_CHARS = 100_000


# --- shared assertions --------------------------------------------------------------------------


def assert_nothing_stored(before) -> None:
    assert before.new_rows() == {}
    assert before.new_files() == set(), "a refused upload left files behind"


def assert_stored_safely(entry: HostileFile, before, image_id: int) -> None:
    image = SEMImage.objects.get(pk=image_id)
    assert image.original_filename == entry.stored_as
    assert before.new_rows() == {"SEMImage": 1}
    media = Path(settings.MEDIA_ROOT).resolve()
    new_files = before.new_files()
    assert len(new_files) == 3, new_files  # original, derivative, thumbnail; no temporary file left
    assert all(path.resolve().is_relative_to(media) for path in new_files), "written outside MEDIA_ROOT"
    original = Path(image.original.path).resolve()
    # The client's name never reaches the file system: the original lives under its sha256.
    assert original.name == f"{image.sha256}{image.extension}"
    assert original.read_bytes() == entry.data
    assert len(json.dumps(image.metadata)) < MAX_STORED_METADATA_CHARS


# --- (a) the ingestion service --------------------------------------------------------------------


def ingest(entry: HostileFile, sample, user):
    return ingest_file(io.BytesIO(entry.data), filename=entry.filename, sample=sample, uploaded_by=user)


@pytest.mark.parametrize("entry", REFUSED)
def test_ingest_file_refuses(entry, sample, user, snapshot):
    before = snapshot()
    with pytest.raises(IngestError) as caught:
        ingest(entry, sample, user)
    error = caught.value
    assert error.code == entry.refused_with, error.message
    assert len(error.message) > 15 and "Traceback" not in error.message
    assert "/" not in error.filename and "\x00" not in error.filename
    assert_nothing_stored(before)


@pytest.mark.parametrize("entry", ACCEPTED)
def test_ingest_file_stores_real_images_safely(entry, sample, user, snapshot):
    before = snapshot()
    result = ingest(entry, sample, user)
    assert result.created
    assert_stored_safely(entry, before, result.image.pk)


@pytest.mark.parametrize("name", [".", "..", "../..", "/", "\x00", " \t "])
def test_names_that_are_only_path_syntax_become_upload(name, sample, user):
    from tests.hostile.corpus import valid_png

    image = ingest_file(io.BytesIO(valid_png(99)), filename=name, sample=sample, uploaded_by=user).image
    assert image.original_filename == "upload"


# --- (b) the web upload endpoint (what the upload page's script posts) -------------------------------


def post_to_web(client, sample, entry: HostileFile):
    body, content_type = multipart_body({"sample": str(sample.pk)}, entry.filename, entry.data)
    return client.post(reverse("web:upload_file"), data=body, content_type=content_type)


@pytest.mark.parametrize("entry", REFUSED)
def test_web_upload_refuses(entry, client, member, sample, snapshot):
    client.force_login(member)
    before = snapshot()
    response = post_to_web(client, sample, entry)
    assert response.status_code == 422
    body = response.json()
    assert (body["outcome"], body["code"]) == ("rejected", entry.refused_with)
    assert len(body["reason"]) > 15
    assert_nothing_stored(before)


@pytest.mark.parametrize("entry", ACCEPTED)
def test_web_upload_stores_real_images_safely(entry, client, member, sample, snapshot):
    client.force_login(member)
    before = snapshot()
    response = post_to_web(client, sample, entry)
    assert response.status_code == 201, response.content
    assert response.json()["outcome"] == "stored"
    assert_stored_safely(entry, before, response.json()["id"])


# --- (c) the REST API ---------------------------------------------------------------------------------


def post_to_api(api, sample, entry: HostileFile, **headers):
    body, content_type = multipart_body({"sample": str(sample.pk)}, entry.filename, entry.data)
    return api.post("/api/images/", data=body, content_type=content_type, **headers)


@pytest.mark.parametrize("entry", REFUSED)
def test_api_upload_refuses(entry, member_api, sample, snapshot):
    before = snapshot()
    response = post_to_api(member_api, sample, entry)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == entry.refused_with
    assert len(error["message"]) > 15 and error["fields"]["file"] == [error["message"]]
    assert_nothing_stored(before)


@pytest.mark.parametrize("entry", ACCEPTED)
def test_api_upload_stores_real_images_safely(entry, member_api, sample, snapshot):
    before = snapshot()
    response = post_to_api(member_api, sample, entry)
    assert response.status_code == 201, response.content
    assert response.json()["original_filename"] == entry.stored_as
    assert_stored_safely(entry, before, response.json()["id"])


@pytest.mark.parametrize("key", ["nul\x00key", "tab\tkey", "k" * 151], ids=["nul", "tab", "too_long"])
def test_api_refuses_hostile_idempotency_keys(key, member_api, sample, snapshot):
    from tests.hostile.corpus import valid_png

    before = snapshot()
    entry = HostileFile("key", "ok.png", valid_png(98), stored_as="ok.png")
    response = post_to_api(member_api, sample, entry, HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["error"]["fields"]
    assert_nothing_stored(before)


# --- (d) manage.py import_folder on one folder holding the whole corpus ------------------------------

REJECTED_LINE = re.compile(r"^  Powder/(?P<id>[^/]+)/.*: \[(?P<code>\w+)\] (?P<message>.+)$", re.M)


def write_corpus_tree(root: Path) -> Path:
    """root/Powder/<entry id>/<file>: one category folder; a sub-folder per entry keeps names unique."""
    for entry in corpus():
        folder = root / "Powder" / entry.id
        folder.mkdir(parents=True)
        (folder / entry.disk_name).write_bytes(entry.data)
    return root


def expected_import_name(entry: HostileFile) -> str:
    # Names a file system cannot hold were written under a safe disk name instead.
    return entry.stored_as if entry.disk_name == entry.filename else entry.disk_name


def test_import_folder_lists_every_refused_file_and_stores_only_the_images(tmp_path, sample, snapshot):
    root = write_corpus_tree(tmp_path / "corpus")
    before = snapshot()
    out = StringIO()
    # call_command raises CommandError (exit status 1) on failure; returning means exit status 0:
    # a partly refused folder is a completed import whose summary lists the refusals.
    call_command("import_folder", str(root), "--sample", sample.lab_sample_id, "--no-progress", stdout=out)
    output = out.getvalue()

    assert f"Stored: {len(accepted())}   duplicate (already stored): 0   rejected: {len(refused())}" in output, output
    reported = {match["id"]: match["code"] for match in REJECTED_LINE.finditer(output)}
    assert reported == {entry.id: entry.refused_with for entry in refused()}
    assert all(len(match["message"]) > 15 for match in REJECTED_LINE.finditer(output))

    stored = {image.original_filename: image for image in SEMImage.objects.all()}
    assert sorted(stored) == sorted(expected_import_name(entry) for entry in accepted())
    for entry in accepted():
        image = stored[expected_import_name(entry)]
        assert Path(image.original.path).read_bytes() == entry.data
    assert before.new_rows() == {"SEMImage": len(accepted()), "Label": len(accepted())}
    media = Path(settings.MEDIA_ROOT).resolve()
    assert len(before.new_files()) == 3 * len(accepted())
    assert all(path.resolve().is_relative_to(media) for path in before.new_files())


def test_names_too_long_for_a_multipart_header_are_refused_over_http(client, member, member_api, sample, snapshot):
    """Django refuses a part header over 1 KiB while parsing the body: 400, before any ingestion."""
    from tests.hostile.corpus import valid_png

    entry = HostileFile("huge_name", "y" * 2000 + ".png", valid_png(97), stored_as="unused")
    client.force_login(member)
    before = snapshot()
    assert post_to_web(client, sample, entry).status_code == 400
    response = post_to_api(member_api, sample, entry)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"
    assert_nothing_stored(before)
