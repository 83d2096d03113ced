"""What the training pages show of a run: one row per progressive-resizing stage (from the trainer's
stage summaries, else the epoch events), the elapsed time with an estimate, and whether pretrained
weights were really used."""

from __future__ import annotations

from django.utils import timezone

from portal.models import TrainingRun
from portal.rates import percent

LOG_TAIL_CHARS = 20_000  # the progress endpoint sends the end of the log; the page shows all of it


def stage_rows(events: list[dict] | None, summaries: list[dict] | None) -> list[dict]:
    """One row per stage, in stage order: a stage the trainer summarised (`TrainingRun.stages`, written
    when a run succeeds) from its summary, any other from its "epoch_end" events (`TrainingRun.history`):
    the stages of a running run, or of one that failed or was cancelled."""
    rows: dict[int, dict] = {}
    for event in events or []:
        _count_epoch(rows.setdefault(int(event["stage"]), _row_from_events(event)), event)
    for summary in summaries or []:
        rows[int(summary["stage"])] = _row_from_summary(summary)
    return [rows[stage] for stage in sorted(rows)]


def _row_from_summary(summary: dict) -> dict:
    return {
        "stage": int(summary["stage"]),
        "number": int(summary["stage"]) + 1,
        "size": summary.get("size"),
        "batch_size": summary.get("batch_size"),
        "lr": summary.get("lr"),
        "epochs_done": summary["epochs"],
        "epochs_planned": summary["epochs"],
        "best_epoch": summary.get("best_epoch"),
        "best_valid_loss": summary.get("best_valid_loss"),
        "duration_s": summary.get("duration_s"),
        "finished": True,
    }


def _row_from_events(event: dict) -> dict:
    """The row of a stage before its first epoch is counted; the trainer's batch size and learning rate
    are known only from its summary."""
    return {
        "stage": int(event["stage"]),
        "number": int(event["stage"]) + 1,
        "size": event.get("size"),
        "batch_size": None,
        "lr": None,
        "epochs_done": 0,
        "epochs_planned": None,
        "best_epoch": None,
        "best_valid_loss": None,
        "duration_s": 0.0,
        "finished": False,
    }


def _count_epoch(row: dict, event: dict) -> None:
    row["epochs_done"] += 1
    row["epochs_planned"] = event.get("epochs") or row["epochs_planned"]  # re-planned stages shrink
    row["duration_s"] += float(event.get("duration_s") or 0.0)
    loss = event.get("valid_loss")
    if loss is not None and (row["best_valid_loss"] is None or loss < row["best_valid_loss"]):
        row["best_valid_loss"], row["best_epoch"] = loss, event.get("epoch")


def duration_text(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def elapsed_text(run: TrainingRun) -> str:
    """ "running for 1 min 35 s of a 3 min 00 s budget · about 1 min 10 s remaining": an estimate from the
    progress so far (the plan's time before there is any), never past the budget the run honours."""
    if run.status == TrainingRun.Status.QUEUED:
        waited = (timezone.now() - run.created_at).total_seconds() if run.created_at else 0
        return f"queued for {duration_text(waited)}" + _of_budget(run)
    if run.status != TrainingRun.Status.RUNNING or not run.started_at:
        return f"took {duration_text(run.duration_s)}" + _of_budget(run) if run.duration_s else ""
    elapsed = max(0.0, (timezone.now() - run.started_at).total_seconds())
    text = f"running for {duration_text(elapsed)}" + _of_budget(run)
    if budget_s(run) and elapsed > budget_s(run):
        return text + f" · {duration_text(elapsed - budget_s(run))} over its budget"
    remaining = remaining_s(run, elapsed)
    if remaining is not None:
        text += f" · about {duration_text(remaining)} remaining"
    return text


def budget_s(run: TrainingRun) -> float | None:
    return (run.config or {}).get("budget_s")


def _of_budget(run: TrainingRun) -> str:
    return f" of a {duration_text(budget_s(run))} budget" if budget_s(run) else ""


def remaining_s(run: TrainingRun, elapsed: float) -> float | None:
    fraction = run.progress_fraction or 0.0
    planned = (run.plan or {}).get("planned_s")
    if 0.05 <= fraction < 1.0:
        remaining = elapsed * (1 - fraction) / fraction
    elif planned:
        remaining = max(0.0, planned - elapsed)
    else:
        return None
    if budget_s(run):
        remaining = min(remaining, max(0.0, budget_s(run) - elapsed))
    return remaining


def phase_text(progress: dict | None) -> str:
    """ "computing features 64/240", "evaluating 50 images × 8 views": the trainer's phase, or ""."""
    progress = progress or {}
    phase = progress.get("phase")
    if not phase:
        return ""
    if progress.get("done") and progress.get("total"):
        return f"{phase} {progress['done']}/{progress['total']}"
    if progress.get("total") and progress.get("views"):
        return f"{phase} {progress['total']} images × {progress['views']} views"
    return phase


def pretrained_fact(run: TrainingRun) -> str | None:
    """Whether the model of this run started from pretrained weights (the artifact's metadata says)."""
    model = run.model_version
    metadata = (model.metadata or {}) if model else {}
    if "pretrained_used" not in metadata:
        return None
    requested = (run.config or {}).get("pretrained", True)
    provenance = metadata.get("pretrained") or {}
    if provenance.get("package"):
        return (
            f"ImageNet weights from the package {provenance['package']} {provenance.get('version', '')} "
            f"({provenance['file']}, sha256 {provenance['sha256'][:12]}…, licence {provenance.get('licence')})"
        )
    if metadata["pretrained_used"]:
        source = metadata.get("pretrained_source") or metadata.get("weights_source")
        return "used" + (f" ({source})" if source else "")
    if requested:
        return "not used: requested, but no weights file was found, so it trained from scratch"
    return "not used: trained from scratch (not requested)"


# What training held out to score each curated image (classifier.head_training.held_out_unit), as "its ..."
HELD_OUT_WORDS = {
    "series": "series",
    "clusters of similar images": "cluster of similar images (no series known)",
    "images": "fold",
}


def trust_facts(run: TrainingRun) -> list[tuple[str, str]]:
    """How the run's model makes prediction sets and out-of-scope calls (its artifact's metadata says)."""
    metadata = (run.model_version.metadata or {}) if run.model_version else {}
    facts = []
    conformal = metadata.get("conformal")
    if conformal:
        own = sorted(conformal.get("class_scores") or {})
        pooled = sorted(set(conformal.get("class_counts") or {}) - set(own))
        unit = HELD_OUT_WORDS.get(conformal.get("held_out_by", "series"), "series")
        text = f"{conformal['mode']}: {conformal['n']} curated images, each scored by a head fitted without its {unit}"
        if own:
            text += f"; own calibration (≥ {conformal['min_per_class']} images): {', '.join(own)}"
        if pooled:
            text += f"; pooled calibration: {', '.join(pooled)}"
        facts.append(("Prediction sets", f"{text} ({conformal['method']}; {conformal.get('library') or 'NumPy'})"))
    detector = metadata.get("out_of_scope")
    if detector:
        threshold = detector.get("threshold")
        limit = f"{threshold:.3f}" if threshold is not None else "none (nothing held out)"
        facts.append(
            (
                "Out of scope",
                f"{detector['method']}, k = {detector['k']}, {detector['bank_size']} training embeddings; "
                f"threshold {limit}, set so that about {percent(detector['abstain_rate'])} of "
                f"{detector['n_held_out']} curated images (each measured against the other "
                f"{detector.get('held_out_by', 'series')}) would abstain",
            )
        )
    outliers = (detector or {}).get("outlier_classifier")
    if outliers:
        facts.append(
            (
                "Not SEM",
                f"{outliers['method']}: {outliers['n_outliers']} outlier images (made photos, screenshots, maps, "
                "blank, noise and defocused frames, and the images curators marked not SEM / not classifiable); "
                f"its threshold also lets about {percent(outliers['abstain_rate'])} of curated images abstain. "
                "An image either detector flags is out of scope",
            )
        )
    return facts
