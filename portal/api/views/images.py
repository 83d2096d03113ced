"""Images: idempotent multipart upload, filtered list, detail, file downloads, predictions and labels."""

from __future__ import annotations

import logging
from pathlib import PurePath
from types import SimpleNamespace

from django.db import InterfaceError, OperationalError
from django.http import FileResponse, Http404, HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from portal.api import examples as ex
from portal.api.exceptions import Conflict, IngestRejected, InsufficientStorage, StoredButUnavailable
from portal.api.filters import ImageFilter
from portal.api.parsers import JSONParser
from portal.api.serializers import (
    HeatMapQuerySerializer,
    HeatMapSerializer,
    ImageDetailSerializer,
    ImageSerializer,
    ImageUploadSerializer,
    LabelCorrectionSerializer,
    LabelSerializer,
    NotClassifiableSerializer,
    PredictionSerializer,
    SimilarImagesSerializer,
    SimilarQuerySerializer,
)
from portal.downloads import stored_file_response
from portal.models import HeatMap, Label, SEMImage
from portal.permissions import can_curate_image, can_upload_to, curated_projects, visible_images, visible_samples
from portal.request_limits import several_files_message
from portal.services.curation.labels import mark_not_classifiable, set_label
from portal.storage import media_storage

logger = logging.getLogger(__name__)

ORIGINAL_TYPES = {"TIFF": "image/tiff", "PNG": "image/png", "JPEG": "image/jpeg", "BMP": "image/bmp"}
THUMBNAIL_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
# Client keys are namespaced per user, so two LIMS users can never collide or see each other's uploads.
MAX_IDEMPOTENCY_KEY = 150
IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="Retry-safe uploads: the same key (per user) returns the image stored by the first request.",
)


class FirstRendererNegotiation(BaseContentNegotiation):
    """File downloads answer with the file whatever the Accept header says; errors stay JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None


def _file_response(field_file, *, content_type: str, filename: str, attachment: bool) -> HttpResponse:
    try:
        response = stored_file_response(
            field_file.storage, field_file.name, content_type=content_type, filename=filename, attachment=attachment
        )
    except (FileNotFoundError, ValueError):
        logger.error("stored file %s is missing", getattr(field_file, "name", "?"))
        raise Http404("The stored file is missing.") from None
    if isinstance(response, FileResponse):
        response["X-Content-Type-Options"] = "nosniff"
        # Never executed or rendered as a document, even if a browser opens the URL directly.
        response["Content-Security-Policy"] = "default-src 'none'; sandbox"
        response["Cache-Control"] = "private, max-age=86400"  # content-addressed: a URL's bytes never change
    return response


@extend_schema_view(
    list=extend_schema(
        summary="List images (the browse page's filters)",
        tags=["images"],
        examples=[ex.example("Images", ex.page(ex.IMAGE))],
    ),
    retrieve=extend_schema(
        summary="One image with its instrument metadata",
        tags=["images"],
        examples=[ex.example("Image", ex.IMAGE | {"metadata": {"FEI": {"HV": 10000}}}), ex.NOT_FOUND],
    ),
)
class ImageViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    filterset_class = ImageFilter

    def get_parsers(self):
        # An upload is multipart (it carries a file); everything else is JSON, as the schema says. (DRF asks
        # before it sets self.action: the action is looked up from the method then.)
        action = getattr(self, "action", None)
        if action is None and getattr(self, "request", None) is not None:
            action = (getattr(self, "action_map", None) or {}).get(self.request.method.lower())
        if action == "create":
            return [MultiPartParser()]
        return [JSONParser()]

    def get_queryset(self):
        images = visible_images(self.request.user).select_related(
            "sample", "uploaded_by", "curated_category", "predicted_category", "predicted_by"
        )
        if self.action not in ("retrieve", "create"):
            images = images.defer("metadata")  # can be kilobytes per image; only the detail shows it
        return images.order_by("-id")

    def get_serializer_class(self):
        return ImageDetailSerializer if self.action in ("retrieve", "create") else ImageSerializer

    # --- upload ------------------------------------------------------------------------------------

    @extend_schema(
        summary="Upload an image (idempotent)",
        tags=["images"],
        description=(
            "Multipart upload. The same bytes (sha256) or the same `Idempotency-Key` return the stored image "
            "with 200 instead of 201, never a duplicate. An optional `curated_category` records a curated label "
            "(curators only). Instrument fields fill in what the file's own tags do not say."
        ),
        request={"multipart/form-data": ImageUploadSerializer},
        parameters=[IDEMPOTENCY_HEADER],
        responses={
            201: ImageDetailSerializer,
            200: ImageDetailSerializer,
            400: OpenApiResponse(
                description="Invalid fields, or the file was refused (code: empty, too_large, not_an_image, disguised, "
                "unsupported_format, corrupt, truncated, too_many_pixels, extreme_aspect_ratio, "
                "too_many_bytes)."
            ),
            409: OpenApiResponse(description="The same bytes are stored in a project you cannot see."),
            507: OpenApiResponse(description="No storage space left (code insufficient_storage); nothing was stored."),
            503: OpenApiResponse(
                description="The database, cache or broker is restarting (code unavailable, "
                "Retry-After); retry with the same Idempotency-Key."
            ),
        },
        examples=[
            ex.example("Stored", ex.IMAGE | {"status": "pending", "predicted_category": None}, status="201"),
            ex.example("Already stored", ex.IMAGE, status="200"),
            ex.error_example(
                "Refused file",
                "disguised",
                "The file is an HTML document, not an image.",
                "400",
                {"file": ["The file is an HTML document, not an image."]},
            ),
        ],
    )
    def create(self, request, *args, **kwargs):
        several = several_files_message(request.FILES)
        if several is not None:  # one image per request: never store one of them and drop the others
            raise IngestRejected("too_many_files", several)
        upload = ImageUploadSerializer(data=request.data, context=self.get_serializer_context())
        upload.is_valid(raise_exception=True)
        sample = self._upload_sample(upload.validated_data)
        label = upload.validated_data.get("curated_category")
        if label is not None and not curated_projects(request.user).filter(pk=sample.project_id).exists():
            raise PermissionDenied("Only curators of the sample's project may give a curated label at upload.")
        result = self._ingest(upload.validated_data["file"], sample, label)
        try:
            image = self._stored_image(result, upload)
        except (OperationalError, InterfaceError) as error:
            if not result.created:
                raise
            # The image has committed: "nothing was changed" would be wrong. The retry finds it (200).
            logger.warning("image %s stored, then the database failed: %s", result.image.pk, error)
            raise StoredButUnavailable() from error
        status_code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
        headers = {"Location": ImageSerializer().get_links(image)["self"]}
        return Response(
            ImageDetailSerializer(image, context=self.get_serializer_context()).data,
            status=status_code,
            headers=headers,
        )

    def _stored_image(self, result, upload) -> SEMImage:
        image = result.image
        if not visible_images(self.request.user).filter(pk=image.pk).exists():
            raise Conflict("These bytes are already stored in a project you cannot see.", code="duplicate")
        # A retry after a 503 that came once the image had committed completes what that request missed.
        retried = image.uploaded_by_id == self.request.user.pk and "client" not in (image.metadata or {})
        if result.created or retried:
            _apply_client_metadata(image, upload.client_metadata())
        return self.get_queryset().get(pk=image.pk)

    def _upload_sample(self, data):
        samples = visible_samples(self.request.user)
        if data.get("sample") is not None:
            sample = samples.filter(pk=data["sample"]).first()
        else:
            sample = samples.filter(lab_sample_id=data["lab_sample_id"]).first()
        if sample is None or not can_upload_to(self.request.user, sample):
            raise serializers.ValidationError(
                {"sample": [serializers.ErrorDetail("No such sample in your projects.", code="does_not_exist")]}
            )
        return sample

    def _ingest(self, file, sample, label):
        from portal.services.ingestion.ingest import ingest_file
        from portal.services.ingestion.ingest_errors import IngestError, StorageFull

        try:
            return ingest_file(
                file,
                filename=file.name,
                sample=sample,
                uploaded_by=self.request.user,
                label=label,
                label_source=Label.Source.UPLOAD,
                idempotency_key=self._idempotency_key(),
            )
        except IngestError as error:
            raise IngestRejected(error.code, error.message) from error
        except StorageFull as error:
            raise InsufficientStorage() from error

    def _idempotency_key(self) -> str | None:
        key = (self.request.headers.get("Idempotency-Key") or "").strip()
        if not key:
            return None
        if len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
            raise serializers.ValidationError(
                {"Idempotency-Key": [f"Use at most {MAX_IDEMPOTENCY_KEY} printable characters."]}
            )
        return f"user-{self.request.user.pk}:{key}"

    # --- files ---------------------------------------------------------------------------------------

    @extend_schema(
        summary="Download the original file, byte for byte",
        tags=["images"],
        responses={
            (200, content_type): OpenApiTypes.BINARY
            for content_type in [*ORIGINAL_TYPES.values(), "application/octet-stream"]
        },
        examples=[ex.NOT_FOUND],
    )
    @action(detail=True, methods=["get"], content_negotiation_class=FirstRendererNegotiation)
    def original(self, request, pk=None):
        image = self.get_object()
        return _file_response(
            image.original,
            content_type=ORIGINAL_TYPES.get(image.format.upper(), "application/octet-stream"),
            filename=image.original_filename,
            attachment=True,
        )

    @extend_schema(
        summary="The thumbnail (JPEG, at most 256 px)",
        tags=["images"],
        responses={(200, "image/jpeg"): OpenApiTypes.BINARY},
        examples=[ex.NOT_FOUND],
    )
    @action(detail=True, methods=["get"], content_negotiation_class=FirstRendererNegotiation)
    def thumbnail(self, request, pk=None):
        image = self.get_object()
        if not image.thumbnail:
            raise Http404("This image has no thumbnail.")
        suffix = PurePath(image.thumbnail.name).suffix.lower()
        content_type = THUMBNAIL_TYPES.get(suffix, "application/octet-stream")
        stem = PurePath(image.original_filename).stem
        return _file_response(
            image.thumbnail,
            content_type=content_type,
            filename=f"{stem}-thumbnail{suffix}",
            attachment=content_type == "application/octet-stream",
        )

    # --- similar images ---------------------------------------------------------------------------

    @extend_schema(
        summary="The curated images most similar to this one",
        tags=["images"],
        parameters=[SimilarQuerySerializer],
        responses=SimilarImagesSerializer,
        description="Exact cosine search over the production model's embeddings of curated images, "
        "limited to the projects you may see. Empty when the production model stored no embedding for "
        "this image (not classified yet, or a model without embeddings).",
        examples=[
            ex.example(
                "Similar",
                {"model_version": 3, "results": [ex.SIMILAR_IMAGE]},
            ),
            ex.NOT_FOUND,
        ],
    )
    @action(detail=True, methods=["get"], filterset_class=None, pagination_class=None)
    def similar(self, request, pk=None):
        from portal.services.curation.similar import similar_images

        image = self.get_object()
        query = SimilarQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        model, found = similar_images(request.user, image, query.validated_data["k"])
        results = [
            {
                "id": other.pk,
                "label": other.curated_category.slug,
                "similarity": round(score, 4),
                "thumbnail_url": reverse("api:image-thumbnail", args=[other.pk]),
            }
            for other, score in found
        ]
        return Response(SimilarImagesSerializer({"model_version": model and model.version, "results": results}).data)

    # --- where the model looked ------------------------------------------------------------------

    @extend_schema(
        methods=["GET"],
        summary="The heat map of where the model looked (PNG), or its status while a worker computes it",
        tags=["images"],
        parameters=[HeatMapQuerySerializer],
        responses={
            (200, "image/png"): OpenApiTypes.BINARY,
            202: HeatMapSerializer,
            409: OpenApiResponse(
                description="Not requested yet (code heatmap_not_requested: POST first), it failed "
                "(heatmap_failed, with the reason), or there is no production model (no_model)."
            ),
        },
        description="An RGBA PNG of the derivative's aspect (the image less its data bar): a colour map whose "
        "opacity rises with the Grad-CAM value, over the centred square the model classifies; transparent "
        "elsewhere. For the production model unless `version` names another.",
        examples=[ex.example("Pending", ex.HEATMAP | {"status": "pending", "finished_at": None}, status="202")],
    )
    @extend_schema(
        methods=["POST"],
        summary="Request the heat map of where the model looked (computed once per image and model version)",
        tags=["images"],
        parameters=[HeatMapQuerySerializer],
        request=None,
        responses={200: HeatMapSerializer, 202: HeatMapSerializer},
        description="Queues a worker to compute it (202) unless it is stored already (200, instant). "
        "A failed one is queued again. Then GET `url`.",
        examples=[ex.example("Ready", ex.HEATMAP, status="200"), ex.NOT_FOUND],
    )
    @action(
        detail=True,
        methods=["get", "post"],
        filterset_class=None,
        pagination_class=None,
        content_negotiation_class=FirstRendererNegotiation,
    )
    def heatmap(self, request, pk=None):
        from portal.services.learning import heatmaps

        image = self.get_object()
        query = HeatMapQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        model = heatmaps.model_for(query.validated_data.get("version"))
        if model is None:
            if "version" in query.validated_data:
                raise Http404("No such model version.")
            raise Conflict("There is no production model to explain yet.", code="no_model")
        if request.method == "POST":
            found = heatmaps.request_heatmap(image, model)
            ready = found.status == HeatMap.Status.READY
            return Response(HeatMapSerializer(found).data, status=status.HTTP_200_OK if ready else 202)
        return self._heatmap_answer(image, heatmaps.find(image, model))

    def _heatmap_answer(self, image: SEMImage, found: HeatMap | None):
        if found is None:
            raise Conflict(
                "No heat map was requested for this model version: POST first.", code="heatmap_not_requested"
            )
        if found.status == HeatMap.Status.FAILED:
            raise Conflict(f"The heat map could not be computed: {found.error}", code="heatmap_failed")
        if found.status != HeatMap.Status.READY:
            return Response(HeatMapSerializer(found).data, status=status.HTTP_202_ACCEPTED)
        stem = PurePath(image.original_filename).stem
        stored = SimpleNamespace(storage=media_storage(), name=found.file)
        return _file_response(
            stored,
            content_type="image/png",
            filename=f"{stem}-heatmap-v{found.model_version.version}.png",
            attachment=False,
        )

    # --- predictions and labels --------------------------------------------------------------------

    @extend_schema(
        summary="Predictions of every model version for this image",
        tags=["predictions"],
        responses=PredictionSerializer(many=True),
        examples=[ex.example("Predictions", ex.page(ex.PREDICTION))],
    )
    @action(detail=True, methods=["get"], filterset_class=None)
    def predictions(self, request, pk=None):
        image = self.get_object()
        predictions = image.predictions.select_related("category", "model_version").order_by("-id")
        return self._paginated(predictions, PredictionSerializer)

    @extend_schema(
        methods=["GET"],
        summary="Label history of this image (newest first)",
        tags=["labels"],
        responses=LabelSerializer(many=True),
        examples=[ex.example("History", ex.page(ex.LABEL))],
    )
    @extend_schema(
        methods=["POST"],
        summary="Correct the curated label (curators only)",
        tags=["labels"],
        request=LabelCorrectionSerializer,
        responses={201: LabelSerializer, 200: LabelSerializer},
        description="Records a new current label with source `api`. Re-stating the current category "
        "changes nothing and answers 200.",
        examples=[
            ex.example("Correction", {"category": "fibres", "note": "Checked at 50k x"}, request=True),
            ex.example("Recorded", ex.LABEL, status="201"),
            ex.FORBIDDEN,
        ],
    )
    @action(detail=True, methods=["get", "post"], filterset_class=None)
    def labels(self, request, pk=None):
        image = self.get_object()
        if request.method == "GET":
            history = image.labels.select_related("category", "created_by").order_by("-id")
            return self._paginated(history, LabelSerializer)
        return self._correct_label(image)

    def _correct_label(self, image: SEMImage) -> Response:
        if not can_curate_image(self.request.user, image):
            raise PermissionDenied("Correcting labels needs the curator role in the image's project.")
        correction = LabelCorrectionSerializer(data=self.request.data)
        correction.is_valid(raise_exception=True)
        before = image.labels.filter(is_current=True).values_list("pk", flat=True).first()
        label = set_label(
            image,
            correction.validated_data["category"],
            source=Label.Source.API,
            user=self.request.user,
            note=correction.validated_data["note"],
        )
        created = label.pk != before
        return Response(LabelSerializer(label).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(
        summary='Mark the image "not SEM / not classifiable", or withdraw the mark (curators only)',
        tags=["labels"],
        request=NotClassifiableSerializer,
        responses=ImageSerializer,
        description='`{"value": true}` marks it: the image and its labels are kept, training leaves it out '
        'and the review queue no longer offers it; `{"value": false}` withdraws the mark. Answers the image '
        "(`not_classifiable`); setting the value it already has changes nothing.",
        examples=[
            ex.example("Mark", {"value": True}, request=True),
            ex.example("Marked", ex.IMAGE | {"status": "out_of_scope", "out_of_scope": True, "not_classifiable": True}),
            ex.FORBIDDEN,
        ],
    )
    @action(detail=True, methods=["post"], url_path="not-classifiable", filterset_class=None, pagination_class=None)
    def not_classifiable(self, request, pk=None):
        image = self.get_object()
        if not can_curate_image(request.user, image):
            raise PermissionDenied("Marking images needs the curator role in the image's project.")
        verdict = NotClassifiableSerializer(data=request.data)
        verdict.is_valid(raise_exception=True)
        mark_not_classifiable(image, verdict.validated_data["value"])
        return Response(ImageSerializer(image, context=self.get_serializer_context()).data)

    def _paginated(self, queryset, serializer_class) -> Response:
        page = self.paginate_queryset(queryset)
        serializer = serializer_class(page, many=True, context=self.get_serializer_context())
        return self.get_paginated_response(serializer.data)


def _apply_client_metadata(image: SEMImage, values: dict) -> None:
    """Fill typed instrument columns the file left empty; keep everything the client sent in metadata."""
    if not values:
        return
    changes = {name: value for name, value in values.items() if getattr(image, name) in (None, "")}
    metadata = dict(image.metadata or {})
    metadata["client"] = {
        name: (value.isoformat() if hasattr(value, "isoformat") else value) for name, value in values.items()
    }
    SEMImage.objects.filter(pk=image.pk).update(metadata=metadata, **changes)
