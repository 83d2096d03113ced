"""Issue 26 item 3: each gate rule returns its decision as data (rule, verdict, figures), stored on the
version and turned into words by one function, which the Training page's Reason box and the run page show;
a version gated before decisions were stored keeps showing its stored words."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from portal.models import ModelVersion, TrainingRun
from portal.services.learning import promotion
from portal.services.learning.gate_rules import (
    GateDecision,
    first_model_decision,
    gate_decision,
    gate_words,
    not_compared,
    stored_reason,
)

pytestmark = pytest.mark.django_db


def _metrics(accuracy: float, f1: float, recall: dict[str, float], support: dict[str, int]) -> dict:
    per_class = {name: {"recall": value, "support": support[name]} for name, value in recall.items()}
    return {"accuracy": accuracy, "macro_avg": {"f1": f1}, "per_class": per_class}


SUPPORT = {"Fibres": 30, "Particles": 50, "Powder": 20}
PRODUCTION = _metrics(0.8, 0.8, {"Fibres": 0.8, "Particles": 0.8, "Powder": 0.8}, SUPPORT)


GATE_SETTINGS = {
    "SEM_GATE_MACRO_F1_TOLERANCE": 0.01,
    "SEM_GATE_MAX_RECALL_DROP": 0.05,
    "SEM_GATE_FIRST_MODEL_FLOOR": 0.4,
    "SEM_GATE_BASELINE_MARGIN": 0.05,
}


@pytest.fixture
def gate_settings(settings):
    for name, value in GATE_SETTINGS.items():
        setattr(settings, name, value)


def test_the_first_model_rule_returns_its_figures(gate_settings):
    decision = first_model_decision(_metrics(0.62, 0.55, {"Fibres": 0.6, "Particles": 0.7, "Powder": 0.5}, SUPPORT))

    assert (decision.rule, decision.passed) == ("first_model", True)
    assert decision.figures == {
        "accuracy": 0.62,
        "macro_f1": 0.55,
        "floor": 0.4,
        "margin": 0.05,
        "baseline_class": "Particles",
        "baseline": 0.5,
    }
    assert gate_words(decision) == (
        "First model: accuracy 62.0\u00a0% beats the majority-class baseline (always 'Particles': 50.0\u00a0%) by "
        "more than 5.0\u00a0points; macro-F1 55.0\u00a0%"
    )
    short = first_model_decision(_metrics(0.52, 0.55, {}, {}))
    assert short.passed is False and short.figures["baseline"] is None
    assert short.reason == "First model: no test images to compare it with the majority-class baseline"


def test_the_point_rule_returns_its_figures(gate_settings):
    dropped = _metrics(0.85, 0.85, {"Fibres": 0.7, "Particles": 0.9, "Powder": 0.78}, SUPPORT)

    decision = gate_decision(dropped, PRODUCTION)

    assert (decision.rule, decision.passed) == ("point", False)
    assert decision.figures["macro_f1"] == 0.85 and decision.figures["production_macro_f1"] == 0.8
    assert decision.figures["tolerance"] == 0.01 and decision.figures["max_recall_drop"] == 0.05
    assert [name for name, _ in decision.figures["recall_drops"]] == ["Fibres"]
    assert decision.figures["recall_drops"][0][1] == pytest.approx(0.1)
    assert decision.reason == "Recall dropped by more than 5.0\u00a0points: Fibres 10.0\u00a0points"

    worse = gate_decision(_metrics(0.78, 0.78, {"Fibres": 0.8, "Particles": 0.8, "Powder": 0.8}, SUPPORT), PRODUCTION)
    assert worse.passed is False and worse.figures["recall_drops"] == []
    assert worse.reason == "Macro-F1 78.0\u00a0% is below production's 80.0\u00a0% (tolerance 1.0\u00a0points)"
    better = gate_decision(_metrics(0.9, 0.9, {"Fibres": 0.9, "Particles": 0.9, "Powder": 0.9}, SUPPORT), PRODUCTION)
    assert better.passed is True
    assert (
        better.reason
        == "Macro-F1 90.0\u00a0% vs production 80.0\u00a0%; no class recall dropped more than 5.0\u00a0points"
    )


def test_a_decision_is_stored_as_json_and_read_back_with_the_same_words(gate_settings):
    for decision in (
        first_model_decision(_metrics(0.42, 0.3, {}, SUPPORT)),
        gate_decision(_metrics(0.78, 0.78, {"Fibres": 0.8}, SUPPORT), PRODUCTION),
        not_compared("production v3 offers other categories than this candidate"),
    ):
        stored = json.loads(json.dumps(decision.as_data()))
        assert GateDecision.from_data(stored) == decision
        assert stored_reason({"gate": stored}) == decision.reason
    assert not_compared("x").reason == "Not compared: x. An admin may promote it by hand."
    assert GateDecision.from_data({"decision": "promoted", "macro_f1": {}}) is None  # before decisions were data


def _run_page(client, model) -> str:
    run = TrainingRun.objects.create(
        trigger=TrainingRun.Trigger.MANUAL, active=None, status=TrainingRun.Status.SUCCEEDED, model_version=model
    )
    return client.get(reverse("web:training_run", args=[run.pk])).content.decode()


def _reason_box(client, version: int) -> str:
    html = client.get(reverse("web:training")).content.decode()
    row = next(r for r in html.split("<tr>") if f"?model={version}" in r)
    return row.split("<summary>Reason</summary>")[1].split("</details>")[0]


def test_pages_render_the_stored_decision_and_old_rows_keep_their_words(client, member, make_model, gate_settings):
    decision = gate_decision(_metrics(0.78, 0.78, {"Fibres": 0.8}, SUPPORT), PRODUCTION)
    recorded = make_model(1, gate_passed=False, gate_reason="words written back then")
    recorded.metrics = {**recorded.metrics, "gate": decision.as_data()}
    recorded.save()
    old = make_model(2, gate_passed=False, gate_reason="Macro-F1 0.700 is below production's 0.800 (tolerance 0.000)")
    client.force_login(member)

    words = "Macro-F1 78.0\u00a0% is below production&#x27;s 80.0\u00a0% (tolerance 1.0\u00a0points)"
    run_page = _run_page(client, recorded)
    assert _reason_box(client, 1) == words and words in run_page and "words written back then" not in run_page
    old_words = "Macro-F1 0.700 is below production&#x27;s 0.800 (tolerance 0.000)"
    assert _reason_box(client, 2) == old_words and old_words in _run_page(client, old)


def test_the_gate_records_its_decision_and_a_roll_back_adds_to_its_words(make_model, gate_settings, monkeypatch):
    monkeypatch.setattr(promotion, "artifact_exists", lambda model: True)
    candidate = make_model(1, metrics=_metrics(0.62, 0.55, {"Fibres": 0.6, "Particles": 0.7, "Powder": 0.5}, SUPPORT))

    assert promotion.apply_gate(candidate) is True
    candidate.refresh_from_db()
    assert candidate.metrics["gate"]["rule"] == "first_model" and candidate.metrics["gate"]["baseline"] == 0.5
    assert candidate.gate_reason == stored_reason(candidate.metrics) and candidate.gate_reason.startswith("First")

    make_model(0, status=ModelVersion.Status.RETIRED, promoted_at=candidate.promoted_at.replace(year=2000))
    promotion.rollback(None)
    candidate.refresh_from_db()
    first_line, rolled_back = candidate.gate_reason.split("\n")
    assert rolled_back.startswith("Rolled back to v0 by the system on ")
    assert candidate.metrics["gate_notes"][0]["to"] == 0 and stored_reason(candidate.metrics) == candidate.gate_reason
