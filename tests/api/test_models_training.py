"""Models (evaluation, metrics, promote, roll back) and training runs (progress, start): admins act."""

from __future__ import annotations

import pytest

from portal.models import ModelVersion, TrainingRun
from tests.api.conftest import make_model

pytestmark = pytest.mark.django_db

EVALUATION = {  # the shape classifier.metrics.evaluate returns
    "n": 4,
    "classes": ["Fibres", "Particles"],
    "accuracy": 0.75,
    "top2_accuracy": 1.0,
    "ece": 0.1,
    "per_class": {
        "Fibres": {"precision": 1.0, "recall": 0.5, "f1": 0.667, "support": 2},
        "Particles": {"precision": 0.667, "recall": 1.0, "f1": 0.8, "support": 2},
    },
    "macro_avg": {"precision": 0.833, "recall": 0.75, "f1": 0.733, "support": 4},
    "weighted_avg": {"precision": 0.833, "recall": 0.75, "f1": 0.733, "support": 4},
    "confusion_matrix": [[1, 1], [0, 2]],
    "confusion_matrix_pct": [[50.0, 50.0], [0.0, 100.0]],
}


@pytest.fixture
def artifact(tmp_path):
    def make(version: int) -> str:
        path = tmp_path / f"v{version}" / "model.pth"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"weights")
        return str(path)

    return make


@pytest.fixture
def models(artifact):
    first = make_model(1, status=ModelVersion.Status.RETIRED, artifact_path=artifact(1), metrics=EVALUATION)
    ModelVersion.objects.filter(pk=first.pk).update(promoted_at="2025-01-01T00:00:00Z")
    second = make_model(2, status=ModelVersion.Status.PRODUCTION, artifact_path=artifact(2), metrics=EVALUATION)
    ModelVersion.objects.filter(pk=second.pk).update(promoted_at="2025-02-01T00:00:00Z")
    third = make_model(3, artifact_path=artifact(3), metrics=EVALUATION)
    return first, second, third


def status_of(version: int) -> str:
    return ModelVersion.objects.get(version=version).status


def test_members_list_models_and_read_the_evaluation(member_api, models):
    listing = member_api.get("/api/models/").json()["results"]
    assert [(m["version"], m["status"]) for m in listing] == [(3, "candidate"), (2, "production"), (1, "retired")]
    assert listing[0]["macro_f1"] == 0.733 and "evaluation" not in listing[0]
    detail = member_api.get("/api/models/2/").json()
    assert detail["evaluation"]["accuracy"] == 0.75
    assert member_api.get("/api/models/42/").status_code == 404


def test_metrics_have_per_class_rows_and_a_labelled_confusion_matrix(member_api, models):
    metrics = member_api.get("/api/models/2/metrics/").json()
    assert metrics["version"] == 2 and metrics["accuracy"] == 0.75 and metrics["top2_accuracy"] == 1.0
    assert metrics["per_class"][0] == {"name": "Fibres", "precision": 1.0, "recall": 0.5, "f1": 0.667, "support": 2}
    assert metrics["confusion_matrix"] == {
        "labels": ["Fibres", "Particles"],
        "counts": [[1, 1], [0, 2]],
        "row_percent": [[50.0, 50.0], [0.0, 100.0]],
    }


def test_metrics_of_an_unevaluated_model_are_404(member_api):
    make_model(9)
    response = member_api.get("/api/models/9/metrics/")
    assert response.status_code == 404 and response.json()["error"]["code"] == "no_metrics"


def test_admin_promotes_and_rolls_back(admin_api, admin_user, models):
    response = admin_api.post("/api/models/3/promote/")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "production" and response.json()["promoted_by"] == "root"
    assert (status_of(2), status_of(3)) == ("retired", "production")

    rolled = admin_api.post("/api/models/rollback/")
    assert rolled.status_code == 200
    assert rolled.json()["version"] == 2
    assert (status_of(2), status_of(3)) == ("production", "rejected")


def test_promote_and_rollback_are_admin_only(member_api, curator_api, models):
    for client in (member_api, curator_api):
        assert client.post("/api/models/3/promote/").status_code == 403
        assert client.post("/api/models/rollback/").status_code == 403
    assert (status_of(2), status_of(3)) == ("production", "candidate")


def test_model_action_errors_are_409(admin_api, models):
    ModelVersion.objects.filter(version=1).update(promoted_at=None)  # no earlier production model left
    response = admin_api.post("/api/models/rollback/")
    assert response.status_code == 409
    assert response.json()["error"] == {
        "code": "model_action_failed",
        "message": "No earlier production model to roll back to",
        "fields": {},
    }
    ModelVersion.objects.filter(version=3).update(artifact_path="/nonexistent/model.pth")
    missing = admin_api.post("/api/models/3/promote/")
    assert missing.status_code == 409 and "missing" in missing.json()["error"]["message"]
    assert admin_api.post("/api/models/77/promote/").status_code == 404


# --- training runs ----------------------------------------------------------------------------------


def test_admin_starts_training_then_a_second_start_is_409(admin_api):
    response = admin_api.post("/api/training-runs/", {"force": True}, format="json")
    assert response.status_code == 202, response.json()
    run = TrainingRun.objects.get()
    assert (run.status, run.trigger, run.forced, run.active) == ("queued", "api", True, True)
    assert response.json()["id"] == run.pk and response.json()["config"]["sizes"]

    again = admin_api.post("/api/training-runs/", {"force": True}, format="json")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "training_active"
    assert TrainingRun.objects.count() == 1


def test_unforced_start_without_new_labels_is_409(admin_api):
    response = admin_api.post("/api/training-runs/", {}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "no_new_labels"
    assert not TrainingRun.objects.exists()


def test_only_admins_start_training(member_api, curator_api):
    for client in (member_api, curator_api):
        response = client.post("/api/training-runs/", {"force": True}, format="json")
        assert response.status_code == 403
    assert not TrainingRun.objects.exists()


def test_bad_start_payload_is_400(admin_api):
    response = admin_api.post("/api/training-runs/", {"force": "maybe"}, format="json")
    assert response.status_code == 400 and "force" in response.json()["error"]["fields"]


def test_runs_list_and_detail_with_progress(member_api, admin_user, models):
    run = TrainingRun.objects.create(
        trigger=TrainingRun.Trigger.MANUAL,
        requested_by=admin_user,
        status=TrainingRun.Status.RUNNING,
        progress_fraction=0.4,
        progress={"stage": 2, "epoch": 1},
        history=[{"epoch": 0, "loss": 1.2}],
        log="stage 1 done",
    )
    done = TrainingRun.objects.create(
        trigger=TrainingRun.Trigger.SCHEDULE, status=TrainingRun.Status.SUCCEEDED, active=None, model_version=models[2]
    )
    listing = member_api.get("/api/training-runs/").json()["results"]
    assert [(r["id"], r["status"]) for r in listing] == [(done.pk, "succeeded"), (run.pk, "running")]
    assert listing[0]["model_version"] == 3 and "log" not in listing[0]
    detail = member_api.get(f"/api/training-runs/{run.pk}/").json()
    assert (detail["progress_fraction"], detail["progress"], detail["log"]) == (
        0.4,
        {"stage": 2, "epoch": 1},
        "stage 1 done",
    )
    assert detail["history"] == [{"epoch": 0, "loss": 1.2}] and detail["requested_by"] == "root"
    assert member_api.get("/api/training-runs/", {"status": "succeeded"}).json()["results"][0]["id"] == done.pk
    assert member_api.get("/api/models/3/").json()["training_run"] == done.pk


def test_admin_cancels_an_active_run(admin_api, member_api):
    run = TrainingRun.objects.create(trigger=TrainingRun.Trigger.API, status=TrainingRun.Status.RUNNING)
    assert member_api.post(f"/api/training-runs/{run.pk}/cancel/").status_code == 403
    response = admin_api.post(f"/api/training-runs/{run.pk}/cancel/")
    assert response.status_code == 202 and response.json()["cancel_requested"] is True
    TrainingRun.objects.filter(pk=run.pk).update(active=None, status=TrainingRun.Status.CANCELLED)
    assert admin_api.post(f"/api/training-runs/{run.pk}/cancel/").status_code == 409
