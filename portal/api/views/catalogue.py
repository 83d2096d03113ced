"""Categories and the review queue."""

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, viewsets
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.api import examples as ex
from portal.api.serializers import CategorySerializer, ReviewItemSerializer
from portal.models import Category
from portal.permissions import is_curator
from portal.services.curation import review

DEFAULT_QUEUE_LENGTH = 20
MAX_QUEUE_LENGTH = 200
QUEUE_RELATED = ("sample", "uploaded_by", "curated_category", "predicted_category", "predicted_by")


@extend_schema_view(
    list=extend_schema(
        summary="The classifier's categories", tags=["categories"], examples=[ex.example("Categories", [ex.CATEGORY])]
    ),
    retrieve=extend_schema(
        summary="One category", tags=["categories"], examples=[ex.example("Category", ex.CATEGORY), ex.NOT_FOUND]
    ),
)
class CategoryViewSet(viewsets.ReadOnlyModelViewSet):
    """Ten NFFA-EUROPE categories; admins edit them in the Django admin."""

    queryset = Category.objects.all()
    serializer_class = CategorySerializer
    pagination_class = None
    lookup_field = "slug"


class ReviewQueueQuery(serializers.Serializer):
    limit = serializers.IntegerField(
        min_value=1,
        max_value=MAX_QUEUE_LENGTH,
        default=DEFAULT_QUEUE_LENGTH,
        help_text=f"How many (1-{MAX_QUEUE_LENGTH}, default {DEFAULT_QUEUE_LENGTH}).",
    )
    project = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1, help_text="Only this project.")


class ReviewQueueResponse(serializers.Serializer):
    results = ReviewItemSerializer(many=True)


class ReviewQueueView(APIView):
    @extend_schema(
        summary="Next images to review (curators)",
        tags=["labels"],
        parameters=[ReviewQueueQuery],  # the schema's limits are the ones the view checks
        responses=ReviewQueueResponse,
        examples=[
            ex.example("Queue", {"results": [ex.IMAGE | {"reason": "uncertain", "predicted_margin": 0.02}]}),
            ex.FORBIDDEN,
        ],
    )
    def get(self, request):
        if not is_curator(request.user):
            raise PermissionDenied("The review queue needs the curator role in a project.")
        query = ReviewQueueQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        images = review.queue(
            request.user,
            query.validated_data["limit"],
            project_id=query.validated_data.get("project"),
            related=QUEUE_RELATED,
        )
        return Response({"results": ReviewItemSerializer(images, many=True, context={"request": request}).data})
