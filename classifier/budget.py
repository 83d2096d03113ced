"""Fitting the progressive-resizing schedule into a wall-clock budget (pure Python, no torch).

The trainer measures its own step time at every stage size on the first batches; the planner then
scales the schedule's epoch shape (15/10/10 for 64/128/224 px by default) so that training,
validation and the final calibration fit into the budget, on a 2-core CPU and on a GPU alike.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

# A small data set on a fast GPU would otherwise get hundreds of epochs: at most this many times
# the schedule's shape (45/30/30 epochs by default).
MAX_SCALE = 3.0
# Validation is a forward pass only: about a third of a training step per image.
FORWARD_SHARE = 1 / 3


@dataclass
class StageCost:
    """Measured cost of one stage: seconds per training step and the steps it takes."""

    size: int
    batch_size: int
    train_steps: int  # optimiser steps per epoch
    valid_batches: int  # forward-only batches per epoch
    step_s: float

    @property
    def epoch_s(self) -> float:
        return self.step_s * (self.train_steps + FORWARD_SHARE * self.valid_batches)


@dataclass
class BudgetPlan:
    budget_s: float
    reserved_s: float  # measuring, calibration, evaluation and the artifact
    shape: tuple[int, ...]
    epochs: tuple[int, ...]
    stages: list[StageCost] = field(default_factory=list)
    note: str = ""
    reserved_s_final: float = 0.0  # of which after training: calibration, evaluation and the artifact

    @property
    def planned_s(self) -> float:
        return self.reserved_s + sum(e * s.epoch_s for e, s in zip(self.epochs, self.stages))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["shape"], data["epochs"] = list(self.shape), list(self.epochs)
        data["planned_s"] = self.planned_s
        for stage, entry in zip(self.stages, data["stages"]):
            entry["epoch_s"] = stage.epoch_s
        return data


def plan_epochs(
    budget_s: float,
    shape,
    stages: list[StageCost],
    reserved_s: float,
    max_scale: float = MAX_SCALE,
    reserved_s_final: float = 0.0,
) -> BudgetPlan:
    """Epochs per stage: the shape scaled by the largest factor (<= max_scale) that fits the budget,
    each stage at least one epoch. A budget too small even for that says so in `note`."""
    shape = tuple(int(e) for e in shape)
    if len(shape) != len(stages) or not stages:
        raise ValueError("one epoch-shape entry per stage is needed")
    unit_s = sum(e * s.epoch_s for e, s in zip(shape, stages))
    usable = budget_s - reserved_s
    scale = min(max_scale, usable / unit_s) if unit_s > 0 else max_scale
    epochs = tuple(max(1, math.floor(scale * e + 1e-9)) for e in shape)
    plan = BudgetPlan(budget_s, reserved_s, shape, epochs, list(stages), reserved_s_final=reserved_s_final)
    if plan.planned_s > budget_s * 1.001:
        plan.note = (
            f"the budget of {budget_s:.0f} s is too small for one epoch per stage "
            f"(about {plan.planned_s:.0f} s needed); training one epoch per stage"
        )
    return plan


def replan_remaining(
    plan: BudgetPlan, stage: int, planned_done_s: float, actual_done_s: float, remaining_s: float
) -> tuple[int, ...]:
    """Epochs for stages `stage`.. once the earlier stages ran: when they took longer than planned (a
    busier machine), the rest is scaled down by the same slowdown to end within the budget; never up."""
    slowdown = max(1.0, actual_done_s / planned_done_s) if planned_done_s > 0 else 1.0
    rest = [
        StageCost(c.size, c.batch_size, c.train_steps, c.valid_batches, c.step_s * slowdown)
        for c in plan.stages[stage:]
    ]
    final_s = plan.reserved_s_final
    fitted = plan_epochs(remaining_s, plan.epochs[stage:], rest, final_s * slowdown, max_scale=1.0)
    return plan.epochs[:stage] + fitted.epochs
