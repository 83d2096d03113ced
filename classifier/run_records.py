"""The records a training run leaves: one per finished epoch and one summary per stage.

`epochs` means the same thing everywhere: how many epochs a stage has (its planned count in a progress
event, the count it ran in a summary; the two agree for a finished stage). The per-epoch losses are a
list of their own, `epoch_results`, never a second meaning of `epochs`.

The progress event that reports an epoch (``{"event": "epoch_end", ...}``, fit_callbacks.py) carries the
EpochResult's fields beside the stage's (stage, stages, size, epochs, fraction).
"""

from __future__ import annotations

from typing import NotRequired, TypedDict


class EpochResult(TypedDict):
    epoch: int  # 0-based within its stage
    train_loss: float | None
    valid_loss: float | None
    metrics: dict  # name -> value, e.g. {"accuracy": 0.9}
    duration_s: float


class StageSummary(TypedDict):
    stage: int  # 0-based
    size: int  # input size in pixels
    lr: float | None  # None: the recipe has no learning rate (frozen features)
    batch_size: int | None
    epochs: int  # epochs the stage ran (0: the recipe has none)
    epoch_results: list[EpochResult]
    best_epoch: int | None
    best_valid_loss: float | None
    duration_s: float
    input_shape: list[int] | None
    # The frozen-feature recipe also says what it fitted and how many views per image it averaged.
    kind: NotRequired[str]
    views: NotRequired[int]
    fit_s: NotRequired[float]


def stage_summary(
    stage: int,
    size: int,
    epoch_results: list[EpochResult],
    *,
    best_epoch: int | None,
    best_valid_loss: float | None,
    duration_s: float,
    input_shape: list[int] | None,
    lr: float | None = None,
    batch_size: int | None = None,
    **extra,
) -> StageSummary:
    """A StageSummary whose `epochs` is the number of its epoch results, so the two cannot disagree."""
    return StageSummary(
        stage=stage,
        size=size,
        lr=lr,
        batch_size=batch_size,
        epochs=len(epoch_results),
        epoch_results=list(epoch_results),
        best_epoch=best_epoch,
        best_valid_loss=best_valid_loss,
        duration_s=duration_s,
        input_shape=input_shape,
        **extra,
    )
