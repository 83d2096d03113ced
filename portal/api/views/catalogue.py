"""Categories and the review queue."""

from django.db.models import F
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers, viewsets
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.api import examples as ex
from portal.api.serializers import CategorySerializer, ReviewItemSerializer
from portal.models import Category, SEMImage
from portal.permissions import curated_projects, is_curator

DEFAULT_QUEUE_LENGTH = 20
MAX_QUEUE_LENGTH = 200


@extend_schema_view(
    list=extend_schema(summary="The classifier's categories", tags=["categories"],
                       examples=[ex.example("Categories", [ex.CATEGORY])]),
    retrieve=extend_schema(summary="One category", tags=["categories"],
                           examples=[ex.example("Category", ex.CATEGORY), ex.NOT_FOUND]),
)
class CategoryViewSet(viewsets.ReadOnlyModelViewSet):
    """Ten NFFA-EUROPE categories; admins edit them in the Django admin."""

    queryset = Category.objects.all()
    serializer_class = CategorySerializer
    pagination_class = None
    lookup_field = "slug"


class ReviewQueueQuery(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=MAX_QUEUE_LENGTH, default=DEFAULT_QUEUE_LENGTH)
    project = serializers.IntegerField(required=False, min_value=1)


class ReviewQueueResponse(serializers.Serializer):
    results = ReviewItemSerializer(many=True)


def review_queue(user, limit: int, project_id: int | None = None) -> list[SEMImage]:
    """Most useful to review first: unlabelled images the model is least sure about (smallest margin
    between its top two classes, unclassified last), then curated images the model disagrees with
    (most confident disagreement first: likely label mistakes)."""
    projects = curated_projects(user)
    if project_id is not None:
        projects = projects.filter(pk=project_id)
    images = SEMImage.objects.filter(sample__project__in=projects).select_related(
        "sample", "uploaded_by", "curated_category", "predicted_category", "predicted_by").defer("metadata")
    uncertain = list(images.filter(curated_category__isnull=True)
                     .order_by(F("predicted_margin").asc(nulls_last=True), "id")[:limit])
    remaining = limit - len(uncertain)
    if remaining <= 0:
        return uncertain
    disagreements = (images.filter(curated_category__isnull=False, predicted_category__isnull=False)
                     .exclude(curated_category=F("predicted_category"))
                     .order_by(F("predicted_confidence").desc(nulls_last=True), "id")[:remaining])
    return uncertain + list(disagreements)


class ReviewQueueView(APIView):
    @extend_schema(
        summary="Next images to review (curators)", tags=["labels"],
        parameters=[OpenApiParameter("limit", int, description=f"How many (1-{MAX_QUEUE_LENGTH}, "
                                                                f"default {DEFAULT_QUEUE_LENGTH})."),
                    OpenApiParameter("project", int, description="Only this project.")],
        responses=ReviewQueueResponse,
        examples=[ex.example("Queue", {"results": [ex.IMAGE | {"reason": "uncertain", "predicted_margin": 0.02}]}),
                  ex.FORBIDDEN],
    )
    def get(self, request):
        if not is_curator(request.user):
            raise PermissionDenied("The review queue needs the curator role in a project.")
        query = ReviewQueueQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        images = review_queue(request.user, query.validated_data["limit"], query.validated_data.get("project"))
        return Response({"results": ReviewItemSerializer(images, many=True, context={"request": request}).data})
