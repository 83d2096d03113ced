"""The gate with uncertainty (issue 13): a paired, stratified bootstrap of candidate minus production."""

from __future__ import annotations

import pytest

from classifier.bootstrap import metric_intervals, paired_bootstrap
from portal.services.learning import promotion

CLASSES = ["Fibres", "Powder", "Tips"]


def _decided(*args) -> tuple:
    """(passed, reason, figures) of the bootstrap rule's decision."""
    decision = promotion.bootstrap_gate_decision(*args)
    assert decision.rule == "bootstrap"
    return decision.passed, decision.reason, decision.figures


def _truth(per_class: int = 20) -> list[str]:
    return [name for name in CLASSES for _ in range(per_class)]


def _with_errors(truth: list[str], wrong: set[int]) -> list[str]:
    """The true labels, except at `wrong` (answered with the next class)."""
    return [CLASSES[(CLASSES.index(y) + 1) % 3] if i in wrong else y for i, y in enumerate(truth)]


@pytest.fixture
def gate_settings(settings):
    settings.SEM_GATE_MACRO_F1_TOLERANCE = 0.0
    settings.SEM_GATE_MAX_RECALL_DROP = 0.05
    settings.SEM_GATE_CONFIDENCE = 0.9
    settings.SEM_GATE_BOOTSTRAP_RESAMPLES = 2000
    settings.SEM_GATE_MIN_TEST_IMAGES = 30
    settings.SEM_GATE_MIN_TEST_PER_CLASS = 3
    return settings


def test_one_lucky_image_is_not_enough(gate_settings):
    truth = _truth()
    production_wrong = {0, 1, 2, 20, 21, 22, 40, 41, 42, 43}
    production = _with_errors(truth, production_wrong)
    candidate = _with_errors(truth, production_wrong - {43})  # right on one more image, same elsewhere
    passed, reason, summary = _decided(truth, candidate, production, CLASSES)
    assert passed is False and "Not shown to be at least as good" in reason
    assert summary["macro_f1"]["diff"] > 0 and summary["macro_f1"]["low"] <= 0 < summary["macro_f1"]["high"]
    assert summary["resamples"] >= 1000 and "interval" in reason


def test_a_clearly_better_candidate_is_promoted(gate_settings):
    truth = _truth()
    production = _with_errors(truth, {0, 1, 2, 3, 4, 20, 21, 22, 23, 24, 40, 41, 42, 43, 44})
    candidate = _with_errors(truth, {0, 20})
    passed, reason, summary = _decided(truth, candidate, production, CLASSES)
    assert passed is True and reason.startswith("Promoted")
    assert summary["macro_f1"]["low"] > 0
    assert all(r["support"] == 20 for r in summary["recall"].values())


def test_a_class_whose_recall_may_have_collapsed_is_refused(gate_settings):
    gate_settings.SEM_GATE_MACRO_F1_TOLERANCE = 0.2  # macro-F1 alone would let it through
    truth = _truth()
    production = _with_errors(truth, {20, 21, 40, 41})
    candidate = _with_errors(truth, set(range(0, 8)))  # Fibres loses 8 of 20; the others gain little
    passed, reason, _ = _decided(truth, candidate, production, CLASSES)
    assert passed is False and "recall may have dropped" in reason and "Fibres" in reason


def test_a_small_test_split_says_so(gate_settings):
    truth = _truth(per_class=2)
    passed, reason, summary = _decided(truth, truth, _with_errors(truth, {0}), CLASSES)
    assert passed is None and summary["decision"] == "too_small"
    assert "6 test images (at least 30 needed)" in reason and "Fibres 2" in reason


def test_bootstrap_is_seeded_and_paired():
    truth = _truth()
    same = _with_errors(truth, {0, 25, 50})
    first = paired_bootstrap(truth, same, same, CLASSES, resamples=1000, seed=3)
    assert first == paired_bootstrap(truth, same, same, CLASSES, resamples=1000, seed=3)
    # Paired: identical predictions differ by exactly zero in every resample.
    assert first["macro_f1"] == {"diff": 0.0, "low": 0.0, "high": 0.0}
    intervals = metric_intervals(truth, same, CLASSES, resamples=1000)
    assert intervals["Fibres"]["recall"][0] < 0.95 <= intervals["Fibres"]["recall"][1] + 1e-9
