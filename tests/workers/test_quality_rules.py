"""Small and imbalanced data: a category with too few curated images is not offered, a first model must
beat the majority-class baseline, and a run's epochs are planned from its time budget."""

from __future__ import annotations

from collections import Counter

import pytest

from portal.models import SEMImage, TrainingRun
from portal.services.learning import promotion, training
from tests.workers.test_training import TINY_SETTINGS, _train_now


@pytest.fixture
def quality_rules(settings):
    """The product's rules as shipped (tests/conftest.py waives them for the mechanics tests)."""
    settings.SEM_MIN_IMAGES_PER_CLASS = 5
    settings.SEM_GATE_BASELINE_MARGIN = 0.05
    settings.SEM_GATE_FIRST_MODEL_FLOOR = 0.0
    return settings


def _train_counts(images) -> Counter:
    return Counter(i.curated_category.name for i in images if i.split == SEMImage.Split.TRAIN)


def test_a_category_below_the_minimum_is_not_offered_and_says_how_many_it_needs(
    quality_rules, sample, user, upload_images
):
    images = upload_images(sample, user, 40, labelled=True, folders=("Fibres", "Particles"))
    images += upload_images(sample, user, 3, labelled=True, seed=100, folders=("Powder",))
    powder_train = _train_counts(images)["Powder"]

    data = training.training_data()

    assert "Powder" not in data.classes and set(data.classes) == {"Fibres", "Particles"}
    assert all(label != "Powder" for _, label in data.train_items + data.test_items)
    assert data.too_few == {"Powder": powder_train} or powder_train == 0
    readiness = {row["name"]: row for row in training.class_readiness()}
    assert readiness["Powder"]["needed"] == 5 - powder_train
    assert readiness["Fibres"]["needed"] == 0


@pytest.mark.slow
def test_the_model_never_predicts_a_category_it_had_too_few_images_for(quality_rules, sample, user, upload_images):
    for name, value in TINY_SETTINGS.items():
        setattr(quality_rules, name, value)
    quality_rules.SEM_GATE_BASELINE_MARGIN = -1.0  # this tiny model is not meant to be good
    upload_images(sample, user, 30, labelled=True, folders=("Fibres", "Particles"))
    upload_images(sample, user, 2, labelled=True, seed=200, folders=("Powder",))

    run = _train_now()

    assert run.status == TrainingRun.Status.SUCCEEDED
    assert "Powder" not in run.model_version.classes
    assert "Not offered (fewer than 5 curated training images)" in run.log or "Powder" not in run.log


def test_the_training_page_and_dashboard_say_what_a_category_still_needs(
    quality_rules, sample, user, upload_images, client, django_user_model
):
    upload_images(sample, user, 2, labelled=True, folders=("Powder",))
    admin = django_user_model.objects.create_superuser("boss", "boss@example.org", "pw-123456789")
    client.force_login(admin)
    for page in ("/training/", "/dashboard/"):
        html = client.get(page).content.decode()
        assert "Categories not offered yet" in html, page
        assert "Powder" in html and "more</td>" in html, page


def _evaluation(correct: dict[str, int], support: dict[str, int]) -> dict:
    n = sum(support.values())
    per_class = {
        name: {"precision": 1.0, "recall": correct[name] / s, "f1": correct[name] / s, "support": s}
        for name, s in support.items()
    }
    recall = sum(v["recall"] for v in per_class.values()) / len(per_class)
    return {
        "accuracy": sum(correct.values()) / n,
        "per_class": per_class,
        "macro_avg": {"precision": 1.0, "recall": recall, "f1": recall},
    }


def test_a_first_model_no_better_than_always_answering_the_largest_class_is_refused(quality_rules):
    support = {"Particles": 43, "Fibres": 30, "Biological": 27}
    majority_guess = _evaluation({"Particles": 43, "Fibres": 0, "Biological": 0}, support)
    barely_better = _evaluation({"Particles": 40, "Fibres": 5, "Biological": 0}, support)  # 0.45 vs 0.43
    clearly_better = _evaluation({"Particles": 38, "Fibres": 20, "Biological": 15}, support)  # 0.73

    decision = promotion.gate_decision(majority_guess, None)
    passed, reason = decision.passed, decision.reason
    assert passed is False and "majority-class baseline" in reason and "'Particles': 43.0\u00a0%" in reason
    assert promotion.gate_decision(barely_better, None).passed is False
    decision = promotion.gate_decision(clearly_better, None)
    passed, reason = decision.passed, decision.reason
    assert passed is True and "beats the majority-class baseline" in reason


def test_a_first_model_without_test_images_is_not_promoted_blindly(quality_rules):
    decision = promotion.gate_decision({"accuracy": 0.9, "per_class": {}, "macro_avg": {"f1": 0.9}}, None)
    passed, reason = decision.passed, decision.reason
    assert passed is False and "no test images" in reason


def test_runs_plan_their_epochs_from_the_budget_unless_epochs_are_fixed(settings):
    settings.SEM_TRAIN_EPOCHS = None
    settings.SEM_TRAIN_BUDGET_S = 1200.0
    config = training.training_config()
    assert config["budget_s"] == 1200.0 and config["epochs"] == [15, 10, 10]  # the shape the planner scales

    assert training.training_config({"budget_s": 90})["budget_s"] == 90
    settings.SEM_TRAIN_EPOCHS = [4, 3, 2]
    fixed = training.training_config()
    assert fixed["budget_s"] is None and fixed["epochs"] == [4, 3, 2]


def test_the_schedule_rule_lives_in_the_classifier(settings):
    """Issue 15, item 4: the portal passes settings through; per-stage defaults for fewer stages (the last
    stages of the default schedule) come from classifier.config alone."""
    from classifier.config import TrainConfig

    settings.SEM_TRAIN_EPOCHS, settings.SEM_TRAIN_SIZES = None, [128, 224]
    config = training.training_config()
    expected = TrainConfig(sizes=(128, 224))
    assert (config["epochs"], config["lrs"], config["batch_sizes"]) == (
        list(expected.epochs),
        list(expected.lrs),
        list(expected.batch_sizes),
    )
    assert config["epochs"] == [10, 10] and config["lrs"] == [1e-3, 5e-4]


@pytest.mark.slow
def test_a_budgeted_run_records_its_plan_and_stays_within_it(quality_rules, sample, user, upload_images):
    quality_rules.SEM_TRAIN_ARCH, quality_rules.SEM_TRAIN_SIZES = "resnet18", [32, 48]
    quality_rules.SEM_TRAIN_EPOCHS, quality_rules.SEM_TRAIN_BUDGET_S = None, 25.0
    quality_rules.SEM_GATE_BASELINE_MARGIN = -1.0
    upload_images(sample, user, 24, labelled=True)

    run = _train_now()

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    plan = run.plan
    assert plan["budget_s"] == 25.0 and plan["planned_s"] <= 25.0 or "too small" in plan["note"]
    assert len(plan["epochs"]) == 2 and all(e >= 1 for e in plan["epochs"])
    assert [stage["epochs"] for stage in run.stages] == plan["epochs"]
    assert [stage["epochs"] for stage in run.stages] == [len(stage["epoch_results"]) for stage in run.stages]
    assert all(s["step_s"] > 0 for s in plan["stages"])
    assert run.model_version.metadata["budget"]["used_s"] > 0
    assert "Budget 25 s" in run.log
