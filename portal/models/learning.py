"""What the learning loop stores: model versions, training runs, and each version's predictions,
embeddings and heat maps per image. Part of the portal app's models (imported by portal/models/__init__.py);
import them from portal.models."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        CANDIDATE = "candidate", "Candidate"
        PRODUCTION = "production", "Production"
        RETIRED = "retired", "Retired"
        REJECTED = "rejected", "Rejected by the gate"

    version = models.PositiveIntegerField(unique=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.CANDIDATE, db_index=True)
    artifact_path = models.CharField(max_length=500)
    artifact_sha256 = models.CharField(max_length=64)
    arch = models.CharField(max_length=50)
    classes = models.JSONField(default=list, help_text="Class names in the model's output order")
    data_fingerprint = models.CharField(max_length=64, blank=True)
    train_image_count = models.PositiveIntegerField(default=0)
    test_image_count = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True, help_text="Evaluation on the fixed test split")
    metadata = models.JSONField(default=dict, blank=True, help_text="Artifact metadata (config, history, versions)")
    gate_passed = models.BooleanField(null=True)
    gate_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    promoted_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)

    class Meta:
        ordering = ["-version"]
        constraints = [
            models.UniqueConstraint(fields=["status"], condition=Q(status="production"), name="one_production_model")
        ]

    def __str__(self) -> str:
        return f"v{self.version} ({self.status})"

    @property
    def macro_f1(self) -> float | None:
        return (self.metrics.get("macro_avg") or {}).get("f1") if self.metrics else None

    @property
    def accuracy(self) -> float | None:
        return self.metrics.get("accuracy") if self.metrics else None

    @property
    def status_display(self) -> str:
        """The status as shown: a rejected version that had been in production was rolled back, not refused
        by the gate (the gate decides before a promotion, so a gate-rejected version was never promoted)."""
        if self.status == self.Status.REJECTED and self.promoted_at is not None:
            return "Rolled back"
        return self.get_status_display()

    @property
    def uncertain_below(self) -> float:
        """Confidence below which this model's prediction is shown as "uncertain".

        SEM_UNCERTAIN_BELOW, raised by the model's expected calibration error on its test split (its
        confidences may overstate by that much). A model without an evaluation, or one that does not beat
        always answering the test split's largest class by SEM_GATE_BASELINE_MARGIN, is no better than a
        guess: every prediction of it is uncertain (the threshold is above any confidence).
        """
        metrics = self.metrics or {}
        supports = [int(v.get("support") or 0) for v in (metrics.get("per_class") or {}).values()]
        if self.accuracy is None or not sum(supports):
            return 1.01
        if self.accuracy < max(supports) / sum(supports) + settings.SEM_GATE_BASELINE_MARGIN:
            return 1.01
        return min(settings.SEM_UNCERTAIN_BELOW + float(metrics.get("ece") or 0.0), 1.01)


class TrainingRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        SKIPPED = "skipped", "Skipped (nothing new)"

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Schedule"
        MANUAL = "manual", "Web UI"
        API = "api", "REST API"
        COMMAND = "command", "manage.py train_now"
        BOOTSTRAP = "bootstrap", "Quick start"
        REVIEW = "review", "After a review session"

    class Kind(models.TextChoices):
        FULL = "full", "Full training"
        HEAD_REFIT = "head_refit", "Head refit"

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    # The training lock: True while queued or running, NULL otherwise. The unique constraint makes a
    # second simultaneous trigger fail in the database, so it survives worker and web restarts.
    active = models.BooleanField(null=True, unique=True, editable=False, default=True)
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    # A head refit fits only the frozen-feature model's head on the production model's stored embeddings
    # (seconds; classifier/head_refit.py); a full training computes the features again.
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.FULL)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    forced = models.BooleanField(default=False)
    config = models.JSONField(default=dict, blank=True)
    progress = models.JSONField(default=dict, blank=True, help_text="Last progress event from the trainer")
    progress_fraction = models.FloatField(default=0.0)
    # Two fields, one shape each (classifier/run_records.py): `history` grows while the run trains and is
    # kept when it ends; `stages` is written once, from the trainer's result, when the run succeeds.
    history = models.JSONField(
        default=list,
        blank=True,
        help_text='The "epoch_end" progress events, in order: stage, stages, size, epoch, epochs (the '
        "stage's epoch count), train_loss, valid_loss, metrics, duration_s, fraction",
    )
    stages = models.JSONField(
        default=list,
        blank=True,
        help_text="The trainer's summary of each stage of a succeeded run: stage, size, lr, batch_size, epochs "
        "(the count it ran), epoch_results, best_epoch, best_valid_loss, duration_s, input_shape",
    )
    plan = models.JSONField(
        default=dict, blank=True, help_text="The time budget and the epochs planned from measured step times"
    )
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    device = models.CharField(max_length=50, blank=True)
    celery_task_id = models.CharField(max_length=64, blank=True)
    train_image_count = models.PositiveIntegerField(default=0)
    test_image_count = models.PositiveIntegerField(default=0)
    data_fingerprint = models.CharField(max_length=64, blank=True)
    cancel_requested = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_s = models.FloatField(null=True, blank=True)
    model_version = models.OneToOneField(
        ModelVersion, on_delete=models.SET_NULL, null=True, blank=True, related_name="training_run"
    )

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Training run {self.pk} ({self.status})"


class Prediction(models.Model):
    image = models.ForeignKey("SEMImage", on_delete=models.CASCADE, related_name="predictions")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="predictions")
    category = models.ForeignKey("Category", on_delete=models.PROTECT, related_name="predictions")
    confidence = models.FloatField()
    margin = models.FloatField(help_text="Top probability minus the second")
    entropy = models.FloatField()
    probabilities = models.JSONField(help_text="{category name: probability}, calibrated")
    prediction_set = models.JSONField(
        default=list, blank=True, help_text="Conformal set at SEM_PREDICTION_SET_COVERAGE: category slugs"
    )
    set_coverage = models.FloatField(null=True, blank=True, help_text="The coverage the set was made at")
    ood_score = models.FloatField(null=True, blank=True, help_text="kNN distance to the training embeddings")
    out_of_scope = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["image", "model_version"], name="prediction_unique_image_model")]

    def __str__(self) -> str:
        return f"{self.image_id}: {self.category} {self.confidence:.2f} (v{self.model_version_id})"


class Embedding(models.Model):
    """The model's input features for one image (the same forward pass as its prediction), used for
    similar-image search. One row per image and model version, like Prediction, so a roll-back finds
    the older model's embeddings still in place. A separate table keeps the bytes out of Prediction queries."""

    image = models.ForeignKey("SEMImage", on_delete=models.CASCADE, related_name="embeddings")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="embeddings")
    dimension = models.PositiveIntegerField()
    vector = models.BinaryField(help_text="float16, little-endian, `dimension` values")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["image", "model_version"], name="embedding_unique_image_model")]

    def __str__(self) -> str:
        return f"{self.image_id}: {self.dimension} dims (v{self.model_version_id})"


class HeatMap(models.Model):
    """Where one model version looked in one image (Grad-CAM, classifier.saliency), computed by a worker
    on request and kept as a PNG in the media storage: a second request is answered from it. Another
    model version is another row, so a promotion never shows the previous model's map."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    image = models.ForeignKey("SEMImage", on_delete=models.CASCADE, related_name="heatmaps")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="heatmaps")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    file = models.CharField(max_length=300, blank=True, help_text="The PNG's name in the media storage")
    target_class = models.CharField(max_length=100, blank=True, help_text="The class explained (the prediction)")
    target_layer = models.CharField(max_length=100, blank=True)
    views = models.PositiveSmallIntegerField(default=1, help_text="Dihedral views whose maps were averaged")
    seconds = models.FloatField(null=True, blank=True, help_text="Time the worker took")
    error = models.TextField(blank=True)
    requested_at = models.DateTimeField(help_text="The last request that queued it")
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["image", "model_version"], name="heatmap_unique_image_model")]

    def __str__(self) -> str:
        return f"{self.image_id}: heat map {self.status} (v{self.model_version_id})"
