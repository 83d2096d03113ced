"""Measuring a training step at every stage size, and planning (and re-planning) the epochs of a run
into its wall-clock budget with `classifier.budget` (which is pure Python). torch is imported lazily."""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time

from .budget import BudgetPlan, StageCost, plan_epochs, replan_remaining
from .config import TrainConfig
from .run_records import StageSummary

log = logging.getLogger(__name__)

# Seconds for the artifact, model copies and other work outside the measured passes.
FIXED_OVERHEAD_S = 5.0


def plan_for_budget(model, stage_dls, config: TrainConfig, device, n_test: int, spent_s: float) -> BudgetPlan:
    """Measure a training step at every stage size on real batches, then fit the epochs into what
    is left of the budget (the time already spent, e.g. on the measurement, counts)."""
    measure_started = time.monotonic()
    costs = [
        StageCost(size, dls.train.bs, len(dls.train), len(dls.valid), measure_step_s(model, dls, device))
        for size, dls in zip(config.sizes, stage_dls)
    ]
    spent_s += time.monotonic() - measure_started
    last = costs[-1]
    # Calibration (validation) and evaluation (test) run once at the last size, forward only.
    final_batches = last.valid_batches + math.ceil(n_test / max(1, last.batch_size))
    final_s = FIXED_OVERHEAD_S + final_batches * last.step_s / 3
    plan = plan_epochs(config.budget_s, config.epochs, costs, spent_s + final_s, reserved_s_final=final_s)
    log.info(
        "budget %.0f s: epochs %s planned (%.0f s), from step times %s",
        config.budget_s,
        plan.epochs,
        plan.planned_s,
        [round(c.step_s, 3) for c in costs],
    )
    return plan


def replan_config(plan: BudgetPlan, config: TrainConfig, stages: list[StageSummary], stage: int, budget_left: float):
    """Before each later stage: if the finished stages ran slower than measured, fewer epochs now."""
    planned = sum(e * c.epoch_s for e, c in zip(config.epochs[:stage], plan.stages[:stage]))
    actual = sum(summary["duration_s"] for summary in stages)
    epochs = replan_remaining(plan, stage, planned, actual, budget_left)
    if epochs != tuple(config.epochs):
        log.info("stages ran %.0f s instead of %.0f s: epochs now %s", actual, planned, epochs)
        plan.note = (
            plan.note + "; " if plan.note else ""
        ) + f"re-planned to {'/'.join(map(str, epochs))} epochs after stage {stage} (machine slower than measured)"
        plan.epochs = epochs
    return dataclasses.replace(config, epochs=epochs)


def measure_step_s(model, dls, device, steps: int = 2) -> float:
    """Seconds of one training step (loading a batch, forward, backward) at this stage's size; the
    model's weights and BatchNorm statistics are restored afterwards."""
    import torch

    state = copy.deepcopy(model.state_dict())
    model.to(device).train()
    loss_fn = torch.nn.CrossEntropyLoss()
    timings = []
    try:
        batches = iter(dls.train)
        for _ in range(steps + 1):  # the first step warms up (allocations, kernel selection)
            started = time.perf_counter()
            inputs, targets = (t.as_subclass(torch.Tensor) for t in next(batches))  # plain tensors, not fastai's
            loss_fn(model(inputs), targets).backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            timings.append(time.perf_counter() - started)
            model.zero_grad(set_to_none=True)
    except StopIteration:
        pass
    finally:
        model.load_state_dict(state)
    return min(timings[1:] or timings)
