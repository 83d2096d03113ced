"""Start a training run now (the command-line twin of the admin's "Train now").

Without --force, trains only when at least SEM_RETRAIN_MIN_NEW_LABELS curated labels changed since
the production model. The run is queued for a worker; --wait follows it to the end, and --here
runs it in this process (no worker needed, e.g. on a GPU host's shell).
"""

from __future__ import annotations

import argparse
import time

from django.core.management.base import BaseCommand, CommandError

from portal.durations import parse_duration
from portal.models import TrainingRun
from portal.services.learning import training, training_run
from portal.web.run_display import phase_text

FINISHED = {TrainingRun.Status.SUCCEEDED, TrainingRun.Status.FAILED, TrainingRun.Status.CANCELLED}


class Command(BaseCommand):
    help = "Queue a training run on the curated labels (--force to train even with no new labels)."

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true", help="Train even if too few labels changed")
        parser.add_argument(
            "--head-refit",
            action="store_true",
            help="Refit only the production model's head on its stored embeddings (seconds; frozen-feature models)",
        )
        parser.add_argument("--wait", action="store_true", help="Follow the run until it finishes")
        parser.add_argument("--here", action="store_true", help="Run the training in this process, not on a worker")
        parser.add_argument("--timeout", type=float, default=None, help="With --wait: give up after this many seconds")
        parser.add_argument(
            "--budget",
            type=_duration,
            default=None,
            help="Time budget of this run, e.g. 20min (default: SEM_TRAIN_BUDGET)",
        )

    def handle(
        self, *args, force: bool, wait: bool, here: bool, timeout: float | None, budget: float | None, **options
    ):
        if options["head_refit"]:
            requested = training.request_head_refit(trigger=TrainingRun.Trigger.COMMAND, force=force, enqueue=not here)
        else:
            config = {"budget_s": budget} if budget else None
            requested = training.request_training(
                trigger=TrainingRun.Trigger.COMMAND, force=force, enqueue=not here, config=config
            )
        run = self._queued(requested)
        self.stdout.write(f"Training run {run.pk} queued ({_describe(run)}).")
        if training.request_warning(run):
            self.stdout.write(self.style.WARNING(training.request_warning(run)))
        if here:
            run = training_run.run_training(run.pk) or TrainingRun.objects.get(pk=run.pk)
        elif wait:
            run = self._follow(run, timeout)
        else:
            return
        self._report(run)

    def _queued(self, requested) -> TrainingRun:
        if requested.refusal == "training_active":
            raise CommandError(f"{requested.reason} One at a time.")
        if requested.refusal == "refit_unavailable":
            raise CommandError(requested.reason)
        if requested.refusal == "no_new_labels":
            raise CommandError(
                f"Nothing to do: {requested.new_labels} new or changed curated labels (use --force to train anyway)."
            )
        return requested.run

    def _follow(self, run: TrainingRun, timeout: float | None) -> TrainingRun:
        deadline = time.monotonic() + timeout if timeout else None
        last = None
        while run.status not in FINISHED:
            if deadline and time.monotonic() > deadline:
                raise CommandError(f"Run {run.pk} still {run.status} after {timeout:.0f} s")
            time.sleep(2)
            run.refresh_from_db()
            line = f"{run.status} {run.progress_fraction * 100:5.1f}% {_stage(run.progress)}"
            if line != last:
                self.stdout.write(line)
                last = line
        return run

    def _report(self, run: TrainingRun) -> None:
        if run.status != TrainingRun.Status.SUCCEEDED:
            raise CommandError(f"Training run {run.pk} {run.status}: {run.error}")
        model = run.model_version
        self.stdout.write(
            self.style.SUCCESS(
                f"v{model.version}: macro-F1 {model.macro_f1 or 0:.3f}, accuracy {model.accuracy or 0:.3f}, "
                f"{run.duration_s:.0f} s on {run.device}; {model.status} ({model.gate_reason})"
            )
        )


def _stage(progress: dict) -> str:
    if (progress or {}).get("phase"):
        return phase_text(progress)
    keys = ("stage", "size", "epoch", "train_loss", "valid_loss")
    return " ".join(f"{key}={progress[key]}" for key in keys if key in (progress or {}))


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _describe(run: TrainingRun) -> str:
    """What the queued run will do, in the words of its recipe."""
    from classifier.backbones import is_backbone

    arch, sizes = run.config.get("arch"), run.config.get("sizes") or []
    if run.kind == TrainingRun.Kind.HEAD_REFIT:
        return "head refit of the production model on its stored embeddings"
    if is_backbone(arch) and sizes:
        return f"{arch}, frozen ImageNet features at {sizes[-1]} px"
    return f"{arch}, {len(sizes)} stages: {' -> '.join(f'{size}' for size in sizes)} px"
