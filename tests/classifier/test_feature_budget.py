"""Issue 23, item 5: the frozen-feature recipe plans its views within the budget, names its phases, and
its progress fraction follows the planned time (not a count of images that leaves 0 % for minutes)."""

from __future__ import annotations

from classifier.feature_budget import ALL_VIEWS, FEATURE_BUDGET_SHARE, INFERENCE_VIEWS, plan_views


def test_the_evaluation_gets_fewer_views_when_one_training_view_does_not_fit_beside_eight():
    # 200 training and 100 test images at 0.1 s per image view: 8 test-time views alone take 80 s, the
    # whole feature share of a 100 s budget; the old plan kept them (one training view, 105 s planned).
    plan = plan_views(100, spent_s=5, per_view_s=0.1, n_train=200, n_eval=100)
    assert (plan.train_views, plan.eval_views) == (1, 4)
    assert plan.spent_s + plan.features_s + plan.evaluation_s <= 100 * FEATURE_BUDGET_SHARE
    assert plan.planned_s <= 100 and not plan.note


def test_a_budget_that_fits_gets_every_view_and_one_that_does_not_says_what_it_needs():
    roomy = plan_views(600, spent_s=5, per_view_s=0.01, n_train=200, n_eval=50)
    # all 8 views for training; inference averages 4 (as accurate as 8, half the cost: bench/ablate_views.py)
    assert (roomy.train_views, roomy.eval_views) == (ALL_VIEWS, INFERENCE_VIEWS) == (8, 4)
    assert plan_views(600, 5, 0.01, 200, 50, inference_views=8).eval_views == 8
    tiny = plan_views(10, spent_s=5, per_view_s=0.1, n_train=200, n_eval=50)
    assert (tiny.train_views, tiny.eval_views) == (1, 1)
    assert "too small" in tiny.note and "about 38 s" in tiny.note  # (5 + 0.1 * 250) / 0.8


def test_the_evaluation_drops_views_when_the_features_ran_late():
    plan = plan_views(100, spent_s=5, per_view_s=0.05, n_train=200, n_eval=50)
    assert plan.eval_views == INFERENCE_VIEWS
    on_time = plan.eval_views_for_time_left(elapsed_s=plan.spent_s + plan.features_s, features_took_s=plan.features_s)
    assert on_time == INFERENCE_VIEWS
    # The features took twice as long as measured at the start (a busier machine): 85 s of 100 gone.
    late = plan.eval_views_for_time_left(elapsed_s=5 + 2 * plan.features_s, features_took_s=2 * plan.features_s)
    assert late == 2
    assert 5 + 2 * plan.features_s + 2 * plan.per_view_s * 50 * late <= 100


def test_the_fraction_is_the_planned_time_done():
    plan = plan_views(180, spent_s=20, per_view_s=0.2, n_train=240, n_eval=60)
    assert plan.after_features(0) == plan.spent_s / plan.planned_s  # loading is already part of the way
    assert 0.4 < plan.after_features(240) < 0.97
    unbudgeted = plan_views(None, spent_s=20, per_view_s=0.2, n_train=240, n_eval=60)
    assert unbudgeted.train_views == ALL_VIEWS and 0.3 < unbudgeted.after_features(120) < 0.6


def test_the_recipe_names_its_phases_and_plans_within_its_budget(tmp_path):
    from classifier.config import TrainConfig
    from classifier.train import train
    from tests.classifier.conftest import make_dataset

    items = make_dataset(tmp_path / "train", {"dots": 6, "noise": 6}, seed=5)
    test_items = make_dataset(tmp_path / "test", {"dots": 3, "noise": 3}, seed=6)
    events: list[dict] = []
    config = TrainConfig(seed=1, budget_s=600)
    result = train(items, config, str(tmp_path / "m.safetensors"), test_items=test_items, progress=events.append)
    phases = [e["phase"] for e in events if e.get("phase")]
    assert phases[0] == "loading weights"
    order = [
        "loading weights",
        "measuring the feature cost",
        "computing features",
        "computing the outliers' features",
        "fitting head",
        "evaluating",
    ]
    assert [p for p in dict.fromkeys(phases)] == [*order, "saving"]
    features = [e for e in events if e.get("phase") == "computing features"]
    assert features[-1]["done"] == features[-1]["total"] == len(items)
    plan = next(e for e in events if e["event"] == "plan")
    assert plan["budget_s"] == 600 and plan["per_view_s"] > 0 and plan["n_eval"] == len(test_items)
    fractions = [e["fraction"] for e in events if "fraction" in e and e["event"] != "done"]
    assert max(fractions) < 1.0 and fractions[-1] >= fractions[0]
    assert result.metadata["tta_views"] == plan["eval_views"]
    assert result.metadata["budget"]["used_s"] <= 600
