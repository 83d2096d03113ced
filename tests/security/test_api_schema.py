"""The OpenAPI schema matches what the API does (issue 11, item 7).

The class: responses and validation that contradict /api/schema/. Before: fields that are null in
practice were typed non-nullable (curated_category, predicted_category, predicted_model_version,
promoted_by, requested_by), downloads answered content types the schema did not list, `page_size=abc`
and `?status=` were silently ignored, `"note": 0` was stored as "0", a duplicate lab sample ID or an
unknown project answered 400 to a schema-valid request.

Two tests: a fast one that checks responses with nulls and a few requests against the schema, and the
full schemathesis run (every check: its default, the same set as `--checks all`, stateful phase included,
tests/security/schemathesis.toml) against gunicorn for a curator and an admin.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import schemathesis
from rest_framework.test import APIClient
from schemathesis.specs.openapi.checks import ignored_auth

from portal.models import ModelVersion, TrainingRun
from portal.services.delivery.tokens import create_token
from portal.services.ingestion.ingest import ingest_file
from tests.conftest import REPO_ROOT
from tests.helpers import png_bytes

pytestmark = pytest.mark.django_db

CONFIG = REPO_ROOT / "tests" / "security" / "schemathesis.toml"
EXAMPLES = os.environ.get("SEM_SCHEMA_EXAMPLES", "25")


@pytest.fixture
def api_schema(keep_test_connection):
    from django.core.wsgi import get_wsgi_application

    return schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())


@pytest.fixture
def world(admin_user, member, other_project, categories):
    """An image nobody labelled or classified, a model nobody promoted, a run nobody requested."""
    from portal.models import Membership, Project, Sample

    project = Project.objects.create(name="Schema project")
    Membership.objects.create(project=project, user=member, role=Membership.Role.CURATOR)
    sample = Sample.objects.create(project=project, lab_sample_id="SCH-1", name="s", owner=member)
    image = ingest_file(io.BytesIO(png_bytes(4242)), filename="n.png", sample=sample, uploaded_by=member).image
    model = ModelVersion.objects.create(
        version=7,
        status=ModelVersion.Status.CANDIDATE,
        artifact_sha256="0" * 64,
        arch="resnet18",
        classes=["Fibres", "Particles"],
        metrics={},
    )
    run = TrainingRun.objects.create(
        trigger=TrainingRun.Trigger.SCHEDULE, status=TrainingRun.Status.FAILED, active=None
    )
    return {
        "image": image,
        "model": model,
        "run": run,
        "sample": sample,
        "curator": member,
        "admin": admin_user,
        "hidden_project": other_project,
    }


def conforms(api_schema, user, method: str, path: str, *, path_parameters=None, query=None):
    operation = api_schema[path][method]
    case = operation.Case(path_parameters=path_parameters or {}, query=query)
    response = case.call(headers={"Authorization": f"Bearer {create_token(user, 'schema').secret}"})
    # Every check schemathesis has for one response, but the authentication probe: the full run below
    # does that one over HTTP (in process, the WSGI transport replays the request with its own cookies).
    case.validate_response(response, excluded_checks=[ignored_auth])
    return response


def test_responses_with_nulls_and_strict_requests_match_the_schema(api_schema, world):
    curator, admin, image = world["curator"], world["admin"], world["image"]
    assert (
        conforms(api_schema, curator, "GET", "/api/images/{id}/", path_parameters={"id": image.pk}).status_code == 200
    )
    assert conforms(api_schema, curator, "GET", "/api/images/").status_code == 200
    assert conforms(api_schema, curator, "GET", "/api/review-queue/").status_code == 200
    assert conforms(api_schema, admin, "GET", "/api/models/").status_code == 200
    assert (
        conforms(
            api_schema, admin, "GET", "/api/training-runs/{id}/", path_parameters={"id": world["run"].pk}
        ).status_code
        == 200
    )
    assert (
        conforms(api_schema, curator, "GET", "/api/images/{id}/original/", path_parameters={"id": image.pk}).status_code
        == 200
    )
    # An invisible project is no different from one that does not exist: an empty list, not a 400.
    assert (
        conforms(api_schema, curator, "GET", "/api/samples/", query={"project": world["hidden_project"].pk}).json()[
            "results"
        ]
        == []
    )


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/api/images/", {"page_size": "abc"}),
        ("/api/images/", {"page_size": "0"}),
        ("/api/images/", {"status": ""}),
        ("/api/images/", {"uploaded_before": ""}),
        ("/api/images/", {"max_confidence": "7"}),
    ],
)
def test_query_values_the_schema_refuses_are_refused(world, path, query):
    client = APIClient()
    client.force_authenticate(world["curator"])
    response = client.get(path, query)
    assert response.status_code == 400, response.content[:300]


@pytest.mark.parametrize("body", [{"category": "fibres", "note": 0}, {"category": 5}, {"category": ["fibres"]}])
def test_json_values_of_the_wrong_type_are_refused_not_converted(world, body):
    client = APIClient()
    client.force_authenticate(world["curator"])
    response = client.post(f"/api/images/{world['image'].pk}/labels/", body, format="json")
    assert response.status_code == 400, response.content[:300]
    assert response.json()["error"]["fields"]


def test_taken_ids_conflict_and_unknown_references_are_not_found(world):
    client = APIClient()
    client.force_authenticate(world["curator"])
    project = world["sample"].project_id
    taken = client.post("/api/samples/", {"project": project, "lab_sample_id": "SCH-1", "name": "x"}, format="json")
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "duplicate"
    assert "lab_sample_id" in taken.json()["error"]["fields"]
    unknown = client.post("/api/samples/", {"project": 10**6, "lab_sample_id": "SCH-2", "name": "x"}, format="json")
    assert unknown.status_code == 404 and "project" in unknown.json()["error"]["fields"]


# --- the full run ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # gunicorn sees this test's rows
def test_schemathesis_full_check_set_passes_for_a_curator_and_an_admin(world, tmp_path):
    from tests.faults.test_broker_down import portal_server

    tokens = {
        "curator": create_token(world["curator"], "fuzz").secret,
        "admin": create_token(world["admin"], "fuzz").secret,
    }
    env = {
        "SEM_VAR_DIR": str(tmp_path / "var"),
        "SEM_API_RATE": "100000/min",
        "SEM_API_UPLOAD_RATE": "100000/min",
        "SEM_WEBHOOK_ALLOW_LOOPBACK": "true",
    }
    failures = {}
    with portal_server("memory://", tmp_path / "gunicorn.log", **env) as url:
        for role, secret in tokens.items():
            done = subprocess.run(
                [
                    str(Path(sys.executable).with_name("schemathesis")),
                    "--config-file",
                    str(CONFIG),
                    "--no-color",
                    "run",
                    f"{url}/api/schema/",
                    "-H",
                    f"Authorization: Bearer {secret}",
                    "--max-examples",
                    EXAMPLES,
                    "--seed",
                    "1",
                    "--workers",
                    "1",
                    "--report",
                    "ndjson",
                    "--report-dir",
                    str(tmp_path / role),
                ],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=900,
            )
            if done.returncode != 0:
                failures[role] = done.stdout[-6000:] + done.stderr[-2000:]
    assert not failures, json.dumps(failures, indent=1)[:12000]
