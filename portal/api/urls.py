"""REST API routes, mounted at /api/ by portal/urls.py."""

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from portal.api.views.catalogue import CategoryViewSet, ReviewQueueView
from portal.api.views.images import ImageViewSet
from portal.api.views.models import ModelVersionViewSet, TrainingRunViewSet
from portal.api.views.samples import ProjectViewSet, SampleViewSet
from portal.api.views.unknown import unknown_endpoint
from portal.api.views.webhooks import WebhookSubscriptionViewSet

app_name = "api"

router = DefaultRouter()
router.register("projects", ProjectViewSet, basename="project")
router.register("samples", SampleViewSet, basename="sample")
router.register("images", ImageViewSet, basename="image")
router.register("categories", CategoryViewSet, basename="category")
router.register("models", ModelVersionViewSet, basename="model")
router.register("training-runs", TrainingRunViewSet, basename="training-run")
router.register("webhooks", WebhookSubscriptionViewSet, basename="webhook")

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api:schema"), name="redoc"),
    path("review-queue/", ReviewQueueView.as_view(), name="review-queue"),
    path("", include(router.urls)),
    # Anything else under /api/ answers the JSON error body, not the HTML 404 page; [\s\S] so that paths
    # with a line break (%0A) match too (not "." : it stops at a newline).
    re_path(r"^[\s\S]*$", unknown_endpoint),
]
