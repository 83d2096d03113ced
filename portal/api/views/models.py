"""Model versions (evaluation, metrics, promote and roll back) and training runs."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response

from portal.api import examples as ex
from portal.api.exceptions import Conflict
from portal.api.filters import PredictionFilter, TrainingRunFilter
from portal.api.permissions import IsPortalAdmin
from portal.api.serializers import (
    ModelMetricsSerializer,
    ModelVersionDetailSerializer,
    ModelVersionSerializer,
    PredictionSerializer,
    TrainingRunDetailSerializer,
    TrainingRunSerializer,
    TrainingStartSerializer,
)
from portal.models import ModelVersion, Prediction, TrainingRun
from portal.permissions import visible_images
from portal.services.learning.promotion import ModelActionError, promote, rollback
from portal.services.learning.training import request_cancel, request_head_refit, request_training

PREDICTION_FILTER_PARAMETERS = [
    OpenApiParameter("category", str, description="Predicted category slug."),
    OpenApiParameter("min_confidence", {"type": "number", "minimum": 0, "maximum": 1}),
    OpenApiParameter("max_confidence", {"type": "number", "minimum": 0, "maximum": 1}),
    OpenApiParameter("project", int, description="Only images of this project."),
]
ADMIN_ACTIONS = {"promote", "rollback", "create", "cancel"}


@extend_schema_view(
    list=extend_schema(
        summary="Model versions, newest first", tags=["models"], examples=[ex.example("Models", ex.page(ex.MODEL))]
    ),
    retrieve=extend_schema(
        summary="One model version with its evaluation on the test split",
        tags=["models"],
        examples=[ex.example("Model", ex.MODEL_DETAIL), ex.NOT_FOUND],
    ),
)
class ModelVersionViewSet(viewsets.ReadOnlyModelViewSet):
    lookup_field = "version"
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        return ModelVersion.objects.select_related("promoted_by", "training_run").order_by("-id")

    def get_serializer_class(self):
        return ModelVersionSerializer if self.action == "list" else ModelVersionDetailSerializer

    def get_permissions(self):
        if self.action in ADMIN_ACTIONS:
            return [IsPortalAdmin()]
        return super().get_permissions()

    @extend_schema(
        summary="Make this version the production model (admins)",
        tags=["models"],
        request=None,
        responses={200: ModelVersionDetailSerializer, 409: None},
        examples=[
            ex.example("Promoted", ex.MODEL),
            ex.FORBIDDEN,
            ex.error_example(
                "Artifact missing",
                "model_action_failed",
                "v3's artifact file is missing: /models/v3/model.safetensors",
                "409",
            ),
        ],
    )
    @action(detail=True, methods=["post"])
    def promote(self, request, version=None):
        model = self.get_object()
        return self._model_action(lambda: promote(model, request.user))

    @extend_schema(
        summary="Roll back to the previous production model (admins)",
        tags=["models"],
        request=None,
        responses={200: ModelVersionDetailSerializer, 409: None},
        examples=[
            ex.example("Rolled back", ex.MODEL | {"version": 3}),
            ex.FORBIDDEN,
            ex.error_example(
                "Nothing to roll back to", "model_action_failed", "No earlier production model to roll back to", "409"
            ),
        ],
    )
    @action(detail=False, methods=["post"])
    def rollback(self, request):
        return self._model_action(lambda: rollback(request.user))

    def _model_action(self, do) -> Response:
        try:
            model = do()
        except ModelActionError as error:
            raise Conflict(str(error), code="model_action_failed") from error
        model = self.get_queryset().get(pk=model.pk)
        return Response(ModelVersionDetailSerializer(model, context=self.get_serializer_context()).data)

    @extend_schema(
        summary="Per-class precision, recall, F1 and the confusion matrix",
        tags=["models"],
        responses=ModelMetricsSerializer,
        examples=[ex.example("Metrics", ex.METRICS), ex.NOT_FOUND],
    )
    @action(detail=True, methods=["get"])
    def metrics(self, request, version=None):
        model = self.get_object()
        if not model.metrics:
            raise NotFound("This model version has no evaluation.", code="no_metrics")
        return Response(ModelMetricsSerializer(metrics_view(model)).data)

    @extend_schema(
        summary="Predictions made by this model version (your projects' images)",
        tags=["predictions"],
        responses=PredictionSerializer(many=True),
        parameters=PREDICTION_FILTER_PARAMETERS,
        examples=[ex.example("Predictions", ex.page(ex.PREDICTION))],
    )
    @action(detail=True, methods=["get"])
    def predictions(self, request, version=None):
        # Not self.get_object(): that would apply the prediction filters to the model look-up.
        model = get_object_or_404(self.get_queryset(), version=version)
        predictions = (
            Prediction.objects.filter(model_version=model, image__in=visible_images(request.user))
            .select_related("category", "model_version")
            .order_by("-id")
        )
        filters = PredictionFilter(request.query_params, queryset=predictions, request=request)
        if not filters.is_valid():
            raise ValidationError(filters.errors)
        page = self.paginate_queryset(filters.qs)
        return self.get_paginated_response(PredictionSerializer(page, many=True).data)


def metrics_view(model: ModelVersion) -> dict:
    """ModelVersion.metrics (classifier.metrics.evaluate) in the API's shape: per-class rows and a
    labelled confusion matrix."""
    metrics = model.metrics
    classes = metrics.get("classes") or model.classes
    per_class = metrics.get("per_class") or {}
    matrix = metrics.get("confusion_matrix")
    if isinstance(matrix, list):
        matrix = {"labels": classes, "counts": matrix, "row_percent": metrics.get("confusion_matrix_pct") or []}
    return {
        "version": model.version,
        "accuracy": metrics.get("accuracy"),
        "top2_accuracy": metrics.get("top2_accuracy"),
        "ece": metrics.get("ece"),
        "macro_avg": metrics.get("macro_avg") or {},
        "weighted_avg": metrics.get("weighted_avg") or {},
        "per_class": [{"name": name, **values} for name, values in per_class.items()],
        "confusion_matrix": matrix,
    }


@extend_schema_view(
    list=extend_schema(
        summary="Training runs, newest first",
        tags=["training"],
        examples=[ex.example("Runs", ex.page(ex.TRAINING_RUN))],
    ),
    retrieve=extend_schema(
        summary="One training run with progress, epoch history, stage summaries and log",
        tags=["training"],
        examples=[
            ex.example(
                "Run", ex.TRAINING_RUN | {"config": {}, "history": [], "stages": [], "log": "", "data_fingerprint": ""}
            ),
            ex.NOT_FOUND,
        ],
    ),
)
class TrainingRunViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    filterset_class = TrainingRunFilter

    def get_queryset(self):
        return TrainingRun.objects.select_related("requested_by", "model_version").order_by("-id")

    def get_serializer_class(self):
        if self.action == "list":
            return TrainingRunSerializer
        if self.action == "create":
            return TrainingStartSerializer
        return TrainingRunDetailSerializer

    def get_permissions(self):
        if self.action in ADMIN_ACTIONS:
            return [IsPortalAdmin()]
        return super().get_permissions()

    @extend_schema(
        summary="Start a training run (admins)",
        tags=["training"],
        request=TrainingStartSerializer,
        responses={202: TrainingRunDetailSerializer, 409: None},
        description="Queues a run on the workers. 409 `training_active` while another run is queued or "
        "running; 409 `no_new_labels` when the curated data has not changed enough (use "
        "`force`); 409 `refit_unavailable` for a `head_refit` when production is not a frozen-feature "
        "model (or there is none).",
        examples=[
            ex.example("Start", {"force": False}, request=True),
            ex.example("Queued", ex.TRAINING_RUN | {"status": "queued"}, status="202"),
            ex.error_example("Already running", "training_active", "Training run 18 is already running.", "409"),
            ex.FORBIDDEN,
        ],
    )
    def create(self, request, *args, **kwargs):
        start = TrainingStartSerializer(data=request.data)
        start.is_valid(raise_exception=True)
        budget_s, force = start.validated_data.get("budget"), start.validated_data["force"]
        if start.validated_data["kind"] == TrainingRun.Kind.HEAD_REFIT:
            requested = request_head_refit(trigger=TrainingRun.Trigger.API, user=request.user, force=force)
        else:
            config = {"budget_s": budget_s} if budget_s else None
            requested = request_training(trigger=TrainingRun.Trigger.API, user=request.user, force=force, config=config)
        if requested.run is None:
            raise self._not_started(requested)
        run = self.get_queryset().get(pk=requested.run.pk)
        return Response(TrainingRunDetailSerializer(run).data, status=status.HTTP_202_ACCEPTED)

    @staticmethod
    def _not_started(requested) -> Conflict:
        if requested.refusal in ("training_active", "refit_unavailable"):
            return Conflict(requested.reason, code=requested.refusal)
        return Conflict(
            "Not enough new or changed curated labels since the last model; use force to train anyway.",
            code="no_new_labels",
        )

    @extend_schema(
        summary="Ask a queued or running training to stop (admins)",
        tags=["training"],
        request=None,
        responses={202: TrainingRunDetailSerializer, 409: None},
        examples=[ex.example("Cancelling", ex.TRAINING_RUN | {"cancel_requested": True}, status="202")],
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        run = self.get_object()
        if not request_cancel(run):
            raise Conflict("This run is not active.", code="not_active")
        run.refresh_from_db()
        return Response(TrainingRunDetailSerializer(run).data, status=status.HTTP_202_ACCEPTED)
