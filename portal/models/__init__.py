"""Data model of the SEM lab portal.

Denormalised columns on SEMImage (curated_category, predicted_*) exist so that the browse page and
the review queue filter and sort 100,000 images with indexed queries and no per-row look-ups; the
services that write Label and Prediction rows keep them in step.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class Project(models.Model):
    """A research group or facility customer; users see only the projects they belong to."""

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="projects")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        MEMBER = "member", "Member (upload, browse, metrics)"
        CURATOR = "curator", "Curator (also review and correct labels)"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="membership_unique_user_project")]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} ({self.role})"


class Sample(models.Model):
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="samples")
    lab_sample_id = models.CharField("lab sample ID", max_length=100, unique=True)
    name = models.CharField(max_length=200)
    material = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    preparation = models.TextField(blank=True, help_text="Coating, mounting, cleaning, ...")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="samples")
    lims_id = models.CharField("LIMS external ID", max_length=100, unique=True, null=True, blank=True)
    # Honest evaluation (docs/architecture.md, "Data rules"): a physical sample is wholly in train or in
    # test; a collection (a dataset import holding many samples) is split per near-duplicate group.
    # A new sample's side comes from its lab sample ID (`save`) unless it is created with one, or as a
    # collection (split="": import_folder, make_demo_data).
    AUTO_SPLIT = "auto"
    split = models.CharField(
        max_length=5,
        blank=True,
        default=AUTO_SPLIT,
        choices=[("train", "Train"), ("test", "Test"), ("", "Per near-duplicate group (a collection)")],
        help_text="Side of the split all images of this sample are on; empty for a collection of many samples "
        "(each near-duplicate group is then on one side). Changing it moves its images at the next "
        "`manage.py reassign_splits`.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.lab_sample_id} {self.name}"

    def save(self, *args, **kwargs):
        # An empty LIMS ID means "none": store NULL so the unique constraint ignores it.
        if not self.lims_id:
            self.lims_id = None
        if self.split == self.AUTO_SPLIT:
            self.split = split_for_sample_id(self.lab_sample_id)
        super().save(*args, **kwargs)


class Category(models.Model):
    """One of the classifier's classes; the NFFA-EUROPE ten are created by a data migration."""

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    folder_name = models.CharField(
        max_length=100, unique=True, help_text="Folder name in the NFFA-EUROPE dataset layout (used by import_folder)."
    )
    description = models.TextField(blank=True)
    order = models.PositiveSmallIntegerField(default=0)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["order", "name"]
        verbose_name_plural = "categories"

    def __str__(self) -> str:
        return self.name


def split_for_sha256(sha256: str) -> str:
    """Deterministic train/test side of a hex digest (an image's sha256, or a sample's key): the side of a
    near-duplicate group of a collection is that of its first image's sha256 (portal.services.ingestion.splits)."""
    bucket = int(sha256[:8], 16) % 100
    return SEMImage.Split.TEST if bucket < settings.SEM_TEST_SPLIT_PERCENT else SEMImage.Split.TRAIN


def split_for_sample_id(lab_sample_id: str) -> str:
    """The side a new physical sample is assigned to, from its lab sample ID (deterministic)."""
    import hashlib

    return split_for_sha256(hashlib.sha256(lab_sample_id.encode("utf-8")).hexdigest())


def original_upload_to(instance: SEMImage, filename: str) -> str:
    # Content-addressed paths: no user-controlled names on disk, no collisions.
    return f"originals/{instance.sha256[:2]}/{instance.sha256}{instance.extension}"


class SEMImage(models.Model):
    class Split(models.TextChoices):
        TRAIN = "train", "Train"
        TEST = "test", "Test"

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for classification"
        NO_MODEL = "no_model", "Waiting for a first model"
        CLASSIFIED = "classified", "Classified"
        # Classified, but unlike anything the model learnt from (classifier.ood) or a blank frame: the
        # prediction is kept for the record and never counts as confident.
        OUT_OF_SCOPE = "out_of_scope", "Out of scope"
        FAILED = "failed", "Classification failed"

    sample = models.ForeignKey(Sample, on_delete=models.PROTECT, related_name="images")
    original = models.FileField(upload_to=original_upload_to, max_length=300)
    sha256 = models.CharField(max_length=64, unique=True)
    original_filename = models.CharField(max_length=255)
    extension = models.CharField(max_length=8, help_text="Canonical extension of the stored original, with the dot.")
    format = models.CharField(max_length=16, help_text="TIFF, PNG, JPEG or BMP")
    file_size = models.BigIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    bit_depth = models.PositiveSmallIntegerField()
    mode = models.CharField(max_length=16, help_text="Pillow mode of the original, e.g. L, I;16, RGB, P")
    page_count = models.PositiveSmallIntegerField(default=1)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="uploads")
    uploaded_at = models.DateTimeField(auto_now_add=True, db_index=True)
    idempotency_key = models.CharField(max_length=200, unique=True, null=True, blank=True)

    # Instrument metadata: everything parsed in `metadata`, the common fields typed for filtering.
    metadata = models.JSONField(default=dict, blank=True)
    vendor = models.CharField(max_length=50, blank=True, db_index=True)
    instrument_model = models.CharField(max_length=100, blank=True)
    accelerating_voltage_kv = models.FloatField(null=True, blank=True)
    working_distance_mm = models.FloatField(null=True, blank=True)
    magnification = models.FloatField(null=True, blank=True)
    pixel_size_nm = models.FloatField(null=True, blank=True)
    detector = models.CharField(max_length=100, blank=True)
    acquired_at = models.DateTimeField(null=True, blank=True)

    # Derived files: never decode the full-resolution original again for training or inference.
    thumbnail = models.FileField(upload_to="thumbnails/", max_length=300)
    derivative = models.FileField(upload_to="derivatives/", max_length=300)
    databar_rows = models.PositiveIntegerField(default=0, help_text="Rows cropped off the bottom as the data bar")
    blank = models.BooleanField(
        default=False, help_text="The model-input derivative is near-constant (an all-black or empty frame)"
    )
    colourfulness = models.FloatField(
        null=True,
        blank=True,
        help_text="Hasler & Süsstrunk colourfulness of the decoded original (classifier.colour): 0 for greyscale, "
        "out of scope above SEM_COLOUR_OUT_OF_SCOPE; empty for images stored before it was measured",
    )

    split = models.CharField(max_length=5, choices=Split.choices, db_index=True)
    # Near-duplicates (portal.services.ingestion.near_duplicates): the closest earlier image when this one was
    # stored, and the group (the id of its first image; empty for an image without near-duplicates).
    near_duplicate_of = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    duplicate_group = models.PositiveIntegerField(null=True, blank=True, db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    status_changed_at = models.DateTimeField(auto_now_add=True)
    claimed_at = models.DateTimeField(null=True, blank=True, help_text="Set while a worker holds the image")
    classify_attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)

    # Denormalised from Label and Prediction for fast browsing and the review queue.
    curated_category = models.ForeignKey(
        Category, on_delete=models.PROTECT, null=True, blank=True, related_name="curated_images"
    )
    predicted_category = models.ForeignKey(
        Category, on_delete=models.PROTECT, null=True, blank=True, related_name="predicted_images"
    )
    predicted_confidence = models.FloatField(null=True, blank=True)
    predicted_margin = models.FloatField(null=True, blank=True)
    predicted_by = models.ForeignKey("ModelVersion", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    # The current prediction's conformal set (category slugs, most probable first) and its size; null size:
    # the model has no conformal calibration.
    predicted_set = models.JSONField(default=list, blank=True)
    predicted_set_size = models.PositiveSmallIntegerField(null=True, blank=True)
    predicted_set_label = models.CharField(max_length=500, blank=True, help_text='As read: "Particles or Powder"')
    # A curator's verdict "not SEM / not classifiable": kept, never trained on, out of the review queue.
    not_classifiable = models.BooleanField(default=False)

    class Meta:
        ordering = ["-uploaded_at", "-id"]
        verbose_name = "SEM image"
        indexes = [
            models.Index(fields=["status", "status_changed_at"], name="semimage_status_idx"),
            models.Index(fields=["sample", "-uploaded_at"], name="semimage_sample_idx"),
            models.Index(fields=["predicted_category", "predicted_confidence"], name="semimage_pred_idx"),
            models.Index(fields=["curated_category", "split"], name="semimage_curated_idx"),
            models.Index(
                fields=["predicted_margin"], name="semimage_margin_idx", condition=Q(curated_category__isnull=True)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.original_filename} ({self.sha256[:10]})"

    @property
    def out_of_scope(self) -> bool:
        return self.status == self.Status.OUT_OF_SCOPE

    @staticmethod
    def nothing_to_classify() -> Q:
        """Rows out of scope whatever a model says: a blank frame, or a colour image (the rule of
        colour_image as a query; SEM_COLOUR_OUT_OF_SCOPE of 0 or below turns it off)."""
        rule = Q(blank=True)
        if settings.SEM_COLOUR_OUT_OF_SCOPE > 0:
            rule |= Q(colourfulness__gt=settings.SEM_COLOUR_OUT_OF_SCOPE)
        return rule

    @property
    def colour_image(self) -> bool:
        """A colour picture, not an SEM detector's greyscale: colourfulness above SEM_COLOUR_OUT_OF_SCOPE."""
        threshold = settings.SEM_COLOUR_OUT_OF_SCOPE
        return threshold > 0 and self.colourfulness is not None and self.colourfulness > threshold

    @property
    def out_of_scope_reason(self) -> str:
        """Why an out-of-scope image is so, in words (the image page and the Review page)."""
        if self.blank:
            return "a blank frame"
        if self.colour_image:
            return (
                f"colour image (colourfulness {self.colourfulness:.0f}): SEM detectors give greyscale "
                "— a photo, a map or a colourised picture?"
            )
        return "unlike every image the model learnt from"

    @property
    def prediction_uncertain(self) -> bool:
        """The current prediction is not to be trusted: a blank or out-of-scope frame, a model no better
        than guessing, or else a prediction set of other than one category (at SEM_PREDICTION_SET_COVERAGE);
        a model without a conformal calibration: a confidence below what it reaches reliably
        (ModelVersion.uncertain_below). Select predicted_by with the image."""
        if self.predicted_category_id is None:
            return False
        if self.blank or self.out_of_scope or self.predicted_by is None:
            return True
        if self.predicted_by.uncertain_below > 1.0:  # no better than always answering the largest class
            return True
        if self.predicted_set_size is not None:
            return self.predicted_set_size != 1
        return (self.predicted_confidence or 0.0) < self.predicted_by.uncertain_below


class PerceptualHash(models.Model):
    """A 64-bit perceptual hash of an image's derivative or of one window of it (classifier.perceptual),
    with its four 16-bit bands indexed for the near-duplicate lookup (multi-index hashing)."""

    image = models.ForeignKey(SEMImage, on_delete=models.CASCADE, related_name="perceptual_hashes")
    region = models.PositiveSmallIntegerField(help_text="0: the whole derivative; 1-10: centre and corner windows")
    value = models.BigIntegerField(help_text="phash as a signed 64-bit integer")
    band0 = models.IntegerField()
    band1 = models.IntegerField()
    band2 = models.IntegerField()
    band3 = models.IntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["image", "region"], name="phash_unique_image_region")]
        indexes = [models.Index(fields=[f"band{i}"], name=f"phash_band{i}_idx") for i in range(4)] + [
            models.Index(fields=[f"band{i}"], name=f"phash_full_band{i}_idx", condition=Q(region=0)) for i in range(4)
        ]


class Label(models.Model):
    """Curated ground truth with history: the newest row per image is current."""

    class Source(models.TextChoices):
        UPLOAD = "upload", "Given at upload"
        REVIEW = "review", "Review queue"
        IMAGE_PAGE = "page", "Image page"  # a curator's correction on the image page
        CONFUSION_CELL = "dashboard", "Dashboard (confusion cell)"  # a relabel from a confusion-matrix cell
        IMPORT = "import", "Folder import"
        API = "api", "REST API"

    image = models.ForeignKey(SEMImage, on_delete=models.CASCADE, related_name="labels")
    category = models.ForeignKey(Category, on_delete=models.PROTECT, related_name="labels")
    source = models.CharField(max_length=10, choices=Source.choices)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    is_current = models.BooleanField(default=True)
    note = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["image"], condition=Q(is_current=True), name="label_one_current_per_image")
        ]

    def __str__(self) -> str:
        return f"{self.image_id}: {self.category} ({self.source})"


# The learning loop's models, API tokens and webhooks, and the watch folders (issue 16) live in their own
# modules beside this one; imported here so they belong to this app and every caller imports them from
# portal.models like the others.
from portal.models.delivery import ApiToken, WebhookDelivery, WebhookSubscription  # noqa: E402, F401
from portal.models.learning import Embedding, HeatMap, ModelVersion, Prediction, TrainingRun  # noqa: E402, F401
from portal.models.watch import WatchedFile, WatchFolder  # noqa: E402, F401
