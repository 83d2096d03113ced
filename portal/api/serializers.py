"""API serializers: explicit field lists, so adding a model column never leaks it into the API."""

from __future__ import annotations

from django.db.models import QuerySet
from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from portal.api.strict import StrictJSONTypes
from portal.durations import DURATION_PATTERN, parse_duration
from portal.models import (
    Category,
    Label,
    ModelVersion,
    Prediction,
    Project,
    Sample,
    SEMImage,
    TrainingRun,
    WebhookDelivery,
    WebhookSubscription,
)
from portal.permissions import visible_images, visible_projects
from portal.representations import ImageSummarySerializer
from portal.services.ingestion.metadata import TYPED_FIELDS


class CategorySerializer(serializers.ModelSerializer):
    class Meta:
        model = Category
        fields = ["id", "name", "slug", "folder_name", "description", "order", "active"]


class ProjectSerializer(serializers.ModelSerializer):
    class Meta:
        model = Project
        fields = ["id", "name", "description", "created_at"]


class CategorySlugField(serializers.SlugRelatedField):
    """Categories are named by slug in the API (stable, readable in LIMS configurations)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("queryset", Category.objects.all())
        super().__init__(slug_field="slug", **kwargs)

    def to_internal_value(self, data):
        if isinstance(data, str) and "\x00" in data:  # PostgreSQL cannot compare it: a field error, not a 500
            self.fail("invalid")
        return super().to_internal_value(data)


class VisibleProjectField(serializers.PrimaryKeyRelatedField):
    """Only the requesting user's projects are valid choices; others read as 'does not exist'."""

    def get_queryset(self):
        return visible_projects(self.context["request"].user)


class SampleSerializer(StrictJSONTypes, serializers.ModelSerializer):
    project = VisibleProjectField()
    owner = serializers.CharField(source="owner.username", read_only=True)
    lims_id = serializers.CharField(
        max_length=100,
        required=False,
        allow_null=True,
        allow_blank=True,
        help_text="External ID in the LIMS; unique when set.",
    )
    image_count = serializers.SerializerMethodField()

    class Meta:
        model = Sample
        fields = [
            "id",
            "project",
            "lab_sample_id",
            "name",
            "material",
            "description",
            "preparation",
            "owner",
            "lims_id",
            "image_count",
            "created_at",
            "updated_at",
        ]

    def get_image_count(self, sample) -> int:
        # Lists annotate the count in one query; a freshly created or updated sample is counted here.
        count = getattr(sample, "image_count", None)
        return count if count is not None else sample.images.count()

    def validate_lims_id(self, value):
        value = (value or "").strip() or None
        if value is None:
            return None
        others = Sample.objects.filter(lims_id=value)
        if self.instance is not None:
            others = others.exclude(pk=self.instance.pk)
        if others.exists():
            raise serializers.ValidationError("A sample with this LIMS ID already exists.", code="unique")
        return value

    def validate_lab_sample_id(self, value):
        value = value.strip()
        if not value:
            raise serializers.ValidationError("This field may not be blank.", code="blank")
        return value


class ImageSerializer(ImageSummarySerializer):
    """The shared image representation (portal.representations) and the API's details."""

    uploaded_by = serializers.CharField(source="uploaded_by.username", read_only=True)
    near_duplicate_of = serializers.SerializerMethodField(
        help_text="Id of the closest earlier near-duplicate of this image (a re-saved copy, a neighbouring tile, "
        "a crop), whose group keeps it on the same side of the split; null when it has none, or none "
        "that you can see."
    )

    class Meta:
        model = SEMImage
        fields = [
            "id",
            "sample",
            "lab_sample_id",
            "lims_id",
            "project",
            "original_filename",
            "sha256",
            "format",
            "file_size",
            "width",
            "height",
            "bit_depth",
            "mode",
            "page_count",
            "uploaded_by",
            "uploaded_at",
            *TYPED_FIELDS,  # the instrument metadata columns
            "databar_rows",
            "split",
            "status",
            "error",
            "curated_category",
            "predicted_category",
            "predicted_confidence",
            "predicted_margin",
            "predicted_model_version",
            "predicted_set",
            "predicted_set_label",
            "out_of_scope",
            "not_classifiable",
            "near_duplicate_of",
            "links",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_near_duplicate_of(self, image) -> int | None:
        other = image.near_duplicate_of_id
        if not other:
            return None
        visible = self._visible_near_duplicates()
        if other not in visible:
            request = self.context.get("request")
            visible[other] = request is not None and visible_images(request.user).filter(pk=other).exists()
        return other if visible[other] else None

    def _visible_near_duplicates(self) -> dict[int, bool]:
        """{near-duplicate id: may the requesting user see it}, for every image this response shows: one
        query per response, shared through the context by a list's items."""
        cache = self.context.setdefault("_visible_near_duplicates", None)
        if cache is None:
            shown = self.root.instance
            images = (
                [shown] if isinstance(shown, SEMImage) else shown if isinstance(shown, (list, tuple, QuerySet)) else []
            )
            wanted = {getattr(image, "near_duplicate_of_id", None) for image in images} - {None}
            request = self.context.get("request")
            seen = (
                set(visible_images(request.user).filter(pk__in=wanted).values_list("pk", flat=True))
                if wanted and request is not None
                else set()
            )
            cache = {pk: pk in seen for pk in wanted} if request is not None else {}
            self.context["_visible_near_duplicates"] = cache
        return cache


class ImageDetailSerializer(ImageSerializer):
    class Meta(ImageSerializer.Meta):
        fields = ImageSerializer.Meta.fields + ["metadata"]
        read_only_fields = fields


class ImageUploadSerializer(StrictJSONTypes, serializers.Serializer):
    """Multipart upload. Name the sample by `sample` (id) or `lab_sample_id`."""

    # Empty files are refused by the ingestion service, with its own code ("empty").
    file = serializers.FileField(allow_empty_file=True, help_text="TIFF, PNG, JPEG or BMP; stored byte for byte.")
    sample = serializers.IntegerField(required=False, help_text="Sample id.")
    lab_sample_id = serializers.CharField(required=False, max_length=100, help_text="Or the lab sample ID.")
    curated_category = CategorySlugField(
        required=False, allow_null=True, help_text="Optional curated label (category slug)."
    )
    # Instrument metadata the LIMS knows; fills in what the file itself does not carry.
    vendor = serializers.CharField(required=False, max_length=50)
    instrument_model = serializers.CharField(required=False, max_length=100)
    accelerating_voltage_kv = serializers.FloatField(required=False, min_value=0, max_value=1000)
    working_distance_mm = serializers.FloatField(required=False, min_value=0, max_value=1000)
    magnification = serializers.FloatField(required=False, min_value=0, max_value=1e9)
    pixel_size_nm = serializers.FloatField(required=False, min_value=0, max_value=1e9)
    detector = serializers.CharField(required=False, max_length=100)
    acquired_at = serializers.DateTimeField(required=False)

    METADATA_FIELDS = [
        "vendor",
        "instrument_model",
        "accelerating_voltage_kv",
        "working_distance_mm",
        "magnification",
        "pixel_size_nm",
        "detector",
        "acquired_at",
    ]

    def validate(self, attrs):
        if attrs.get("sample") is None and not attrs.get("lab_sample_id"):
            raise serializers.ValidationError({"sample": "Give the sample id or its lab_sample_id."}, code="required")
        return attrs

    def client_metadata(self) -> dict:
        return {name: self.validated_data[name] for name in self.METADATA_FIELDS if name in self.validated_data}


class PredictionSerializer(serializers.ModelSerializer):
    category = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    model_version = serializers.IntegerField(source="model_version.version", read_only=True)

    class Meta:
        model = Prediction
        fields = [
            "id",
            "image",
            "model_version",
            "category",
            "confidence",
            "margin",
            "entropy",
            "probabilities",
            "prediction_set",
            "set_coverage",
            "ood_score",
            "out_of_scope",
            "created_at",
        ]
        read_only_fields = fields


class LabelSerializer(serializers.ModelSerializer):
    category = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True, default=None, allow_null=True)

    class Meta:
        model = Label
        fields = ["id", "image", "category", "source", "created_by", "created_at", "is_current", "note"]
        read_only_fields = fields


class LabelCorrectionSerializer(StrictJSONTypes, serializers.Serializer):
    category = CategorySlugField(help_text="Category slug, see /api/categories/.")
    note = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")

    def validate_category(self, category):
        if not category.active:
            raise serializers.ValidationError("This category is not active.", code="inactive")
        return category


class NotClassifiableSerializer(StrictJSONTypes, serializers.Serializer):
    value = serializers.BooleanField(
        help_text='true: a curator\'s "not SEM / not classifiable" mark (kept, never trained on, out of the '
        "review queue); false: withdraw it."
    )


class ModelVersionSerializer(serializers.ModelSerializer):
    promoted_by = serializers.CharField(source="promoted_by.username", read_only=True, default=None, allow_null=True)
    accuracy = serializers.FloatField(read_only=True, allow_null=True)
    macro_f1 = serializers.FloatField(read_only=True, allow_null=True)
    training_run = serializers.SerializerMethodField()
    pretrained = serializers.SerializerMethodField(
        help_text="Where the ImageNet weights came from: source (package or file), package, version, file, "
        "sha256, licence; null when the model was trained from scratch."
    )

    class Meta:
        model = ModelVersion
        fields = [
            "version",
            "status",
            "arch",
            "classes",
            "accuracy",
            "macro_f1",
            "gate_passed",
            "gate_reason",
            "train_image_count",
            "test_image_count",
            "data_fingerprint",
            "artifact_sha256",
            "created_at",
            "promoted_at",
            "promoted_by",
            "training_run",
            "pretrained",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.JSONField(allow_null=True))
    def get_pretrained(self, model) -> dict | None:
        return (model.metadata or {}).get("pretrained")

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_training_run(self, model) -> int | None:
        run = getattr(model, "training_run", None)
        return run.pk if run else None


class ModelVersionDetailSerializer(ModelVersionSerializer):
    evaluation = serializers.JSONField(
        source="metrics", read_only=True, help_text="Evaluation on the fixed test split (classifier.metrics.evaluate)."
    )
    metadata = serializers.JSONField(read_only=True, help_text="Training config, history and library versions.")

    class Meta(ModelVersionSerializer.Meta):
        fields = ModelVersionSerializer.Meta.fields + ["evaluation", "metadata"]
        read_only_fields = fields


class PerClassMetricsSerializer(serializers.Serializer):
    name = serializers.CharField()
    precision = serializers.FloatField(allow_null=True)
    recall = serializers.FloatField(allow_null=True)
    f1 = serializers.FloatField(allow_null=True)
    support = serializers.IntegerField(allow_null=True)


class ConfusionMatrixSerializer(serializers.Serializer):
    labels = serializers.ListField(child=serializers.CharField())
    counts = serializers.ListField(child=serializers.ListField(child=serializers.IntegerField()))
    row_percent = serializers.ListField(child=serializers.ListField(child=serializers.FloatField()))


class ModelMetricsSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    accuracy = serializers.FloatField(allow_null=True)
    top2_accuracy = serializers.FloatField(allow_null=True)
    ece = serializers.FloatField(allow_null=True)
    macro_avg = serializers.DictField(child=serializers.FloatField(allow_null=True))
    weighted_avg = serializers.DictField(child=serializers.FloatField(allow_null=True))
    per_class = PerClassMetricsSerializer(many=True)
    confusion_matrix = ConfusionMatrixSerializer(allow_null=True)


class TrainingRunSerializer(serializers.ModelSerializer):
    requested_by = serializers.CharField(source="requested_by.username", read_only=True, default=None, allow_null=True)
    model_version = serializers.IntegerField(
        source="model_version.version", read_only=True, default=None, allow_null=True
    )

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "status",
            "kind",
            "trigger",
            "requested_by",
            "forced",
            "progress_fraction",
            "progress",
            "device",
            "train_image_count",
            "test_image_count",
            "error",
            "cancel_requested",
            "created_at",
            "started_at",
            "heartbeat_at",
            "finished_at",
            "duration_s",
            "model_version",
        ]
        read_only_fields = fields


class TrainingRunDetailSerializer(TrainingRunSerializer):
    budget_warning = serializers.SerializerMethodField(
        help_text="Said when the run was requested: its budget is smaller than its training set needs "
        "(estimated from the image count and an earlier run's measured cost), or null."
    )

    class Meta(TrainingRunSerializer.Meta):
        fields = TrainingRunSerializer.Meta.fields + [
            "config",
            "history",
            "stages",
            "log",
            "data_fingerprint",
            "budget_warning",
        ]
        read_only_fields = fields

    @extend_schema_field({"type": "string", "nullable": True})
    def get_budget_warning(self, run) -> str | None:
        from portal.services.learning.training import request_warning

        return request_warning(run)


@extend_schema_field({"type": "string", "pattern": DURATION_PATTERN, "maxLength": 32})
class DurationTextField(serializers.CharField):
    pass


class TrainingStartSerializer(StrictJSONTypes, serializers.Serializer):
    force = serializers.BooleanField(default=False, help_text="Train even when the curated data is unchanged.")
    kind = serializers.ChoiceField(
        choices=TrainingRun.Kind.choices,
        default=TrainingRun.Kind.FULL,
        help_text="`full`: features computed again, the whole recipe (minutes). `head_refit`: the production "
        "model's head fitted again on the embeddings it stored (seconds; a frozen-feature production model only).",
    )
    budget = DurationTextField(
        required=False,
        allow_blank=True,
        max_length=32,
        help_text="Wall-clock budget of this run, e.g. `20min`, `90s`, `1h` (default: "
        "SEM_TRAIN_BUDGET); the epochs are planned to fit it.",
    )

    def validate_budget(self, value: str) -> float | None:
        if not value.strip():
            return None
        try:
            return parse_duration(value)
        except ValueError as error:
            raise serializers.ValidationError(str(error)) from None


class WebhookSubscriptionSerializer(StrictJSONTypes, serializers.ModelSerializer):
    project = VisibleProjectField(
        required=False, allow_null=True, help_text="Only this project's events; null for every project you can see."
    )
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=WebhookSubscription.Event.choices),
        allow_empty=False,
        min_length=1,
        help_text="Event names to deliver.",
    )
    secret = serializers.CharField(
        write_only=True,
        required=False,
        min_length=16,
        max_length=128,
        help_text="HMAC-SHA256 key; generated when omitted and shown only in the creation response.",
    )

    class Meta:
        model = WebhookSubscription
        fields = ["id", "url", "events", "project", "secret", "active", "created_at"]
        read_only_fields = ["id", "created_at"]

    def validate_url(self, url: str) -> str:
        """The strict parser of portal.services.delivery.outbound decides, and its normalised URL is stored: the
        URL that was checked is the URL that is delivered to."""
        from portal.services.delivery.outbound import RefusedURL, parse_url
        from portal.services.delivery.webhooks import refused_destination

        if not url.lower().startswith(("https://", "http://")):
            raise serializers.ValidationError("Use an http:// or https:// URL.", code="invalid_scheme")
        try:
            url = parse_url(url).url
        except RefusedURL as exc:
            raise serializers.ValidationError(f"Not a usable webhook URL: {exc}.", code="invalid_url") from None
        refusal = refused_destination(url)
        if refusal:
            raise serializers.ValidationError(f"Webhooks may not be sent there: {refusal}.", code="refused_destination")
        return url

    def validate_events(self, events):
        return sorted(set(events))


class WebhookDeliverySerializer(serializers.ModelSerializer):
    response_excerpt = serializers.SerializerMethodField(
        help_text="The start of the receiver's answer: shown to staff only (null for everyone else), since a "
        "member must not be able to read what the portal's network answers."
    )

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event",
            "status",
            "attempts",
            "response_status",
            "response_excerpt",
            "error",
            "payload",
            "created_at",
            "delivered_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_response_excerpt(self, delivery) -> str | None:
        request = self.context.get("request")
        user = getattr(request, "user", None)
        return delivery.response_excerpt if user is not None and user.is_staff else None


class ReviewItemSerializer(ImageSerializer):
    reason = serializers.SerializerMethodField()

    class Meta(ImageSerializer.Meta):
        fields = ImageSerializer.Meta.fields + ["reason"]
        read_only_fields = fields

    @extend_schema_field(serializers.ChoiceField(choices=["out_of_scope", "uncertain", "disagreement"]))
    def get_reason(self, image) -> str:
        if image.curated_category_id:
            return "disagreement"
        return "out_of_scope" if image.out_of_scope else "uncertain"


class SimilarQuerySerializer(serializers.Serializer):
    k = serializers.IntegerField(
        min_value=1, max_value=50, default=6, help_text="How many similar curated images (1 to 50)"
    )


class HeatMapQuerySerializer(serializers.Serializer):
    version = serializers.IntegerField(
        min_value=1, required=False, help_text="The model version to explain (default: the production model)"
    )


class HeatMapSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["pending", "ready", "failed"])
    model_version = serializers.IntegerField(source="model_version.version")
    target_class = serializers.CharField(help_text="The class explained: the model's prediction (once ready)")
    target_layer = serializers.CharField(help_text="The layer whose activations and gradients make the map")
    views = serializers.IntegerField(help_text="Dihedral views whose maps were mapped back and averaged")
    seconds = serializers.FloatField(allow_null=True, help_text="Time the worker took")
    error = serializers.CharField(help_text="Why it failed (status failed)")
    requested_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    url = serializers.SerializerMethodField(help_text="GET it: the PNG once ready, this status meanwhile")

    def get_url(self, heatmap) -> str:
        base = reverse("api:image-heatmap", args=[heatmap.image_id])
        return f"{base}?version={heatmap.model_version.version}"


class SimilarImageSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    label = serializers.CharField(help_text="The image's curated category (slug, see /api/categories/)")
    similarity = serializers.FloatField(help_text="Cosine similarity of the embeddings, -1 to 1")
    thumbnail_url = serializers.CharField(help_text="Path of the thumbnail (JPEG), like the image's links")


class SimilarImagesSerializer(serializers.Serializer):
    model_version = serializers.IntegerField(
        allow_null=True, help_text="Version of the production model whose embeddings were searched"
    )
    results = SimilarImageSerializer(many=True, help_text="Most similar first; only images you may see")
