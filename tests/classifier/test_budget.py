"""The budget planner: the progressive schedule fitted into a wall-clock budget from measured step times."""

from classifier.budget import MAX_SCALE, StageCost, plan_epochs


def stages(*step_s):
    return [StageCost(size, 16, 10, 2, s) for size, s in zip((64, 128, 224), step_s)]


def test_the_plan_fits_the_budget_and_keeps_the_schedule_shape():
    costs = stages(0.1, 0.4, 1.2)  # 64 px is cheap, 224 px dear
    plan = plan_epochs(600, (15, 10, 10), costs, reserved_s=30)
    assert plan.planned_s <= 600
    e64, e128, e224 = plan.epochs
    assert e64 >= e128 >= 1 and e224 >= 1
    assert abs(e64 / e224 - 1.5) < 0.35  # the 15/10/10 shape, scaled
    # one more epoch at every stage would no longer fit
    bigger = plan_epochs(600, [e + 1 for e in plan.epochs], costs, reserved_s=30)
    assert sum((e + 1) * c.epoch_s for e, c in zip(plan.epochs, costs)) + 30 > 600 or bigger.epochs != plan.epochs


def test_a_slower_machine_gets_fewer_epochs_for_the_same_budget():
    fast = plan_epochs(600, (15, 10, 10), stages(0.05, 0.2, 0.6), reserved_s=10)
    slow = plan_epochs(600, (15, 10, 10), stages(0.2, 0.8, 2.4), reserved_s=10)
    assert sum(slow.epochs) < sum(fast.epochs)
    assert slow.planned_s <= 600 and fast.planned_s <= 600


def test_a_fast_gpu_is_capped_rather_than_training_forever():
    plan = plan_epochs(3600, (15, 10, 10), stages(0.001, 0.002, 0.004), reserved_s=5)
    assert plan.epochs == tuple(int(MAX_SCALE * e) for e in (15, 10, 10))


def test_a_budget_too_small_still_trains_one_epoch_per_stage_and_says_so():
    plan = plan_epochs(10, (15, 10, 10), stages(1.0, 4.0, 12.0), reserved_s=5)
    assert plan.epochs == (1, 1, 1)
    assert "too small" in plan.note


def test_a_machine_that_turns_slower_gets_fewer_epochs_in_the_later_stages():
    from classifier.budget import replan_remaining

    costs = stages(0.1, 0.4, 1.2)
    plan = plan_epochs(600, (15, 10, 10), costs, reserved_s=20, reserved_s_final=10)
    planned_first = plan.epochs[0] * costs[0].epoch_s
    elapsed = 10 + 2 * planned_first  # stage 1 took twice as long as measured
    epochs = replan_remaining(plan, 1, planned_first, 2 * planned_first, remaining_s=600 - elapsed)
    assert epochs[0] == plan.epochs[0] and epochs[1] < plan.epochs[1] and epochs[2] < plan.epochs[2]
    rest_s = sum(e * c.epoch_s * 2 for e, c in zip(epochs[1:], costs[1:]))
    assert rest_s + 2 * 10 <= 600 - elapsed


def test_a_machine_as_fast_as_measured_keeps_its_plan():
    from classifier.budget import replan_remaining

    costs = stages(0.1, 0.4, 1.2)
    plan = plan_epochs(600, (15, 10, 10), costs, reserved_s=20, reserved_s_final=10)
    done = plan.epochs[0] * costs[0].epoch_s
    assert replan_remaining(plan, 1, done, done, remaining_s=600 - 10 - done) == plan.epochs
