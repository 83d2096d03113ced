"""Fitting the frozen-feature recipe into a wall-clock budget (pure Python, no torch).

Nearly all of that recipe's time is the backbone's forward passes: one per dihedral view of every
training image, and one per test-time view of every evaluation image. The cost of one image view,
measured on the first batch, decides how many views each side gets: all 8 when they fit, else fewer
for training first, and only when one training view does not fit either, fewer test-time views too
(the artifact then averages that many at inference, so what was evaluated is what production runs).
The web process imports this module for the request-time estimate (portal.services.learning.training_estimate).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Share of the budget that the forward passes (training features and evaluation) may take; the rest
# is the head's fit, the calibration and saving.
FEATURE_BUDGET_SHARE = 0.8
ALL_VIEWS = 8  # feature_head.VIEWS, the dihedral group (named here: feature_head imports torch)
VIEW_CHOICES = (ALL_VIEWS, 4, 2, 1)
# Views averaged at inference (the artifact's tta_views): 4 scored as well as all 8 under grouped
# cross-validation on real micrographs (0.573 vs 0.568 accuracy, 10 seeds; 2 views -0.006, 1 view -0.023:
# bench/ablate_views.py) at half the cost of every classification. Training still averages all 8.
INFERENCE_VIEWS = 4
# Saving the artifact and closing the run, kept free when the evaluation's views are chosen.
CLOSING_SHARE = 0.03
KIND = "frozen features"


def needed_budget_s(spent_s: float, per_view_s: float, n_train: int, n_eval: int, train_views: int, eval_views: int):
    """The budget whose feature share covers what was spent so far and these forward passes."""
    forward_s = per_view_s * (n_train * train_views + n_eval * eval_views)
    return (spent_s + forward_s) / FEATURE_BUDGET_SHARE


@dataclass
class FeaturePlan:
    budget_s: float | None
    spent_s: float  # before the features: loading the weights and measuring
    per_view_s: float  # measured seconds per image and view
    n_train: int
    n_eval: int
    train_views: int
    eval_views: int
    note: str = ""

    @property
    def features_s(self) -> float:
        return self.per_view_s * self.n_train * self.train_views

    @property
    def evaluation_s(self) -> float:
        return self.per_view_s * self.n_eval * self.eval_views

    @property
    def reserve_s(self) -> float:
        """The fit, calibration and saving: the budget's remainder, else a tenth of the forward passes."""
        if self.budget_s:
            return self.budget_s * (1 - FEATURE_BUDGET_SHARE)
        return 0.1 * (self.features_s + self.evaluation_s)

    @property
    def planned_s(self) -> float:
        return self.spent_s + self.features_s + self.reserve_s + self.evaluation_s

    def fraction(self, work_s: float) -> float:
        """Progress as the share of the planned seconds that the work done so far was planned to take
        (not of images): the remaining-time estimate then extrapolates time, not a count of images."""
        return max(0.0, min(0.97, work_s / self.planned_s)) if self.planned_s > 0 else 0.0

    def fraction_at(self, elapsed_s: float, left_s: float) -> float:
        """Progress once the features are done: the time spent against the planned time still to go."""
        return max(0.0, min(0.97, elapsed_s / max(1e-9, elapsed_s + left_s)))

    def after_features(self, done: int) -> float:
        return self.fraction(self.spent_s + self.features_s * done / max(1, self.n_train))

    def eval_views_for_time_left(self, elapsed_s: float, features_took_s: float) -> int:
        """The test-time views that still fit once the training features and the fit are done, at
        the slower of the planned and the really measured cost (a machine busier than at the start)."""
        if not self.budget_s or not self.n_eval:
            return self.eval_views
        measured = features_took_s / max(1, self.n_train * self.train_views)
        per_view = max(self.per_view_s, measured)
        left = self.budget_s * (1 - CLOSING_SHARE) - elapsed_s
        for views in VIEW_CHOICES:
            if views <= self.eval_views and per_view * self.n_eval * views <= left:
                return views
        return 1

    def event(self) -> dict:
        """The plan as a progress event (stored on the TrainingRun, shown on its page)."""
        data = asdict(self)
        data.update(
            event="plan",
            kind=KIND,
            features_s=self.features_s,
            evaluation_s=self.evaluation_s,
            reserve_s=self.reserve_s,
            planned_s=self.planned_s,
        )
        return data


def plan_views(
    budget_s,
    spent_s: float,
    per_view_s: float,
    n_train: int,
    n_eval: int,
    views: int = ALL_VIEWS,
    inference_views: int = INFERENCE_VIEWS,
):
    """The most training views (up to ``views``) that fit with all test-time views (up to
    ``inference_views``); fewer test-time views only when not even one training view fits. A budget too
    small for one view each says so in ``note``."""
    inference_views = min(views, inference_views)
    plan = FeaturePlan(budget_s, spent_s, per_view_s, n_train, n_eval, views, inference_views)
    if not budget_s:
        return plan
    available = budget_s * FEATURE_BUDGET_SHARE - spent_s
    for eval_views in (v for v in VIEW_CHOICES if v <= inference_views):
        affordable = (available - per_view_s * n_eval * eval_views) / max(per_view_s * n_train, 1e-9)
        fitting = [v for v in VIEW_CHOICES if v <= min(affordable, views)]
        if fitting:
            plan.train_views, plan.eval_views = fitting[0], eval_views
            return plan
    plan.train_views = plan.eval_views = 1
    needed = needed_budget_s(spent_s, per_view_s, n_train, n_eval, 1, 1)
    plan.note = (
        f"the budget of {budget_s:.0f} s is too small for this training set: one view of each of its "
        f"{n_train} training and {n_eval} evaluation images needs a budget of about {needed:.0f} s"
    )
    return plan
