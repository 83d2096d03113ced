"""Property-based run over the OpenAPI schema: no request, however odd, may produce a 5xx.

Bounded (few examples per operation) so the whole run stays well under two minutes in CI. It runs as
an admin, so that every operation is reachable, against a database with a project, a sample, an
image, a production model and a webhook subscription.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from portal.models import ModelVersion, TrainingRun, WebhookSubscription
from tests.api.conftest import classify, make_model
from tests.api.test_webhooks import closed_port_url

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

# Per operation; raise SEM_FUZZ_EXAMPLES (and set SEM_FUZZ_RANDOM=1) for a longer, randomised hunt.
MAX_EXAMPLES = int(os.environ.get("SEM_FUZZ_EXAMPLES", "12"))
DERANDOMIZE = os.environ.get("SEM_FUZZ_RANDOM", "") != "1"


@pytest.fixture
def known_objects(admin_user, sample, image, tmp_path) -> dict[str, dict]:
    """Path parameters of real rows, per path template: random ids alone would mostly test the 404s."""
    artifact = tmp_path / "model.pth"
    artifact.write_bytes(b"weights")
    model = make_model(1, status=ModelVersion.Status.PRODUCTION, artifact_path=str(artifact))
    classify(image, model, {"Fibres": 0.6, "Particles": 0.4})
    subscription = WebhookSubscription.objects.create(
        owner=admin_user, url=closed_port_url(), events=["label.changed"], secret="x" * 32
    )
    run = TrainingRun.objects.create(
        trigger=TrainingRun.Trigger.API, status=TrainingRun.Status.SUCCEEDED, active=None, model_version=model
    )
    sample.lims_id = "LIMS-1"
    sample.save()
    by_prefix = {
        "/api/samples/by-lims/": {"lims_id": "LIMS-1"},
        "/api/samples/": {"id": sample.pk},
        "/api/images/": {"id": image.pk},
        "/api/webhooks/": {"id": subscription.pk},
        "/api/training-runs/": {"id": run.pk},
        "/api/models/": {"version": model.version},
        "/api/categories/": {"slug": "fibres"},
        "/api/projects/": {"id": sample.project_id},
    }
    return by_prefix


@pytest.fixture
def api_schema(keep_test_connection, known_objects):
    from django.core.wsgi import get_wsgi_application

    return schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())


@pytest.fixture
def admin_header(admin_user):
    from portal.services.delivery.tokens import create_token

    return {"Authorization": f"Bearer {create_token(admin_user, 'fuzz').secret}"}


def test_no_server_errors(api_schema, admin_header, known_objects):
    # Driven with plain Hypothesis rather than schemathesis' pytest plugin, which does not support
    # pytest 9 yet; the strategies and the check are schemathesis' own.
    failures = {}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 30
    for operation in operations:
        try:
            _fuzz(operation, admin_header, _known_for(operation.path, known_objects))
        except Exception as failure:  # collect them all: one report names every failing operation
            failures[operation.label] = failure
    assert not failures, "\n\n".join(f"{label}: {failure}" for label, failure in failures.items())


def _known_for(path: str, known_objects: dict) -> dict:
    for prefix, parameters in known_objects.items():
        if path.startswith(prefix):
            return parameters
    return {}


def _fuzz(operation, headers, known: dict):
    @given(case=operation.as_strategy(), use_known=st.booleans())
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=DERANDOMIZE,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case, use_known):
        if use_known and case.path_parameters:
            case.path_parameters = {name: known.get(name, value) for name, value in case.path_parameters.items()}
        response = case.call(headers=headers)
        case.validate_response(response, checks=[not_a_server_error])

    run()
