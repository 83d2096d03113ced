"""Samples and projects: CRUD scoped to the user's projects; look-up by lab sample ID or LIMS ID."""

from django.db.models import Count
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from portal.api import examples as ex
from portal.api.filters import SampleFilter
from portal.api.schema import ErrorSerializer
from portal.api.serializers import ProjectSerializer, SampleSerializer
from portal.permissions import curated_projects, visible_projects, visible_samples

PROJECT = {"id": 1, "name": "Thin films group", "description": "", "created_at": "2025-01-01T00:00:00Z"}
DUPLICATE_SAMPLE = ex.error_example(
    "Duplicate",
    "duplicate",
    "sample with this lab sample ID already exists.",
    "409",
    {"lab_sample_id": ["sample with this lab sample ID already exists."]},
)
SAMPLE_HAS_IMAGES = "This object is still referenced (for example a sample with images) and cannot be deleted."


@extend_schema_view(
    list=extend_schema(
        summary="List your projects", tags=["samples"], examples=[ex.example("Projects", ex.page(PROJECT))]
    ),
    retrieve=extend_schema(summary="One project", tags=["samples"], examples=[ex.NOT_FOUND]),
)
class ProjectViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = ProjectSerializer

    def get_queryset(self):
        return visible_projects(self.request.user)


@extend_schema_view(
    list=extend_schema(
        summary="List samples",
        tags=["samples"],
        description="Filter with `?lab_sample_id=` or `?lims_id=` for an exact look-up.",
        examples=[ex.example("Samples", ex.page(ex.SAMPLE))],
    ),
    retrieve=extend_schema(
        summary="One sample", tags=["samples"], examples=[ex.example("Sample", ex.SAMPLE), ex.NOT_FOUND]
    ),
    create=extend_schema(
        summary="Create a sample in one of your projects",
        tags=["samples"],
        examples=[
            ex.example("New sample", ex.SAMPLE_CREATE, request=True),
            ex.example("Created", ex.SAMPLE, status="201"),
            DUPLICATE_SAMPLE,
        ],
    ),
    update=extend_schema(
        summary="Replace a sample",
        tags=["samples"],
        examples=[ex.example("Sample", ex.SAMPLE_CREATE, request=True), ex.example("Sample", ex.SAMPLE)],
    ),
    partial_update=extend_schema(
        summary="Change fields of a sample",
        tags=["samples"],
        examples=[ex.example("New LIMS ID", {"lims_id": "LIMS-9"}, request=True), ex.example("Sample", ex.SAMPLE)],
    ),
    destroy=extend_schema(
        summary="Delete a sample without images (owner, curator or admin)",
        tags=["samples"],
        examples=[ex.error_example("Has images", "protected", SAMPLE_HAS_IMAGES, "409")],
        responses={204: None, 409: ErrorSerializer},
    ),
)
class SampleViewSet(viewsets.ModelViewSet):
    serializer_class = SampleSerializer
    filterset_class = SampleFilter

    def get_queryset(self):
        return (
            visible_samples(self.request.user)
            .select_related("owner")
            .annotate(image_count=Count("images"))
            .order_by("-id")
        )

    def perform_create(self, serializer):
        serializer.save(owner=self.request.user)

    def perform_destroy(self, sample):
        may_delete = (
            sample.owner_id == self.request.user.pk
            or curated_projects(self.request.user).filter(pk=sample.project_id).exists()
        )
        if not may_delete:
            raise PermissionDenied("Only the sample's owner or a curator of its project may delete it.")
        sample.delete()

    @extend_schema(
        summary="Find a sample by its LIMS ID",
        tags=["samples"],
        parameters=[OpenApiParameter("lims_id", str, OpenApiParameter.PATH)],
        examples=[ex.example("Sample", ex.SAMPLE), ex.NOT_FOUND],
    )
    @action(detail=False, methods=["get"], url_path=r"by-lims/(?P<lims_id>[^/]+)")
    def by_lims(self, request, lims_id: str):
        sample = get_object_or_404(self.get_queryset(), lims_id=lims_id)
        return Response(self.get_serializer(sample).data)
