"""Webhook subscriptions: each user manages their own; the delivery log is readable per subscription."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ErrorDetail, ValidationError
from rest_framework.response import Response

from portal.api import examples as ex
from portal.api.serializers import WebhookDeliverySerializer, WebhookSubscriptionSerializer
from portal.models import WebhookSubscription
from portal.services.delivery.webhooks import new_secret

SIGNATURE_HELP = (
    "Each delivery is a POST with the JSON body `{delivery_id, event, occurred_at, data}` and the headers "
    "`X-SEM-Event`, `X-SEM-Delivery`, `X-SEM-Timestamp` and `X-SEM-Signature: sha256=<hex>`, the "
    "HMAC-SHA256 of `{timestamp}.{body}` keyed with the subscription secret. Failed deliveries "
    "(connection errors, timeouts, 429, 5xx) are retried with exponential backoff."
)


@extend_schema_view(
    list=extend_schema(
        summary="Your webhook subscriptions",
        tags=["webhooks"],
        examples=[ex.example("Subscriptions", ex.page(ex.WEBHOOK))],
    ),
    retrieve=extend_schema(
        summary="One of your subscriptions",
        tags=["webhooks"],
        examples=[ex.example("Subscription", ex.WEBHOOK), ex.NOT_FOUND],
    ),
    create=extend_schema(
        summary="Subscribe a URL to events",
        tags=["webhooks"],
        description=SIGNATURE_HELP,
        examples=[
            ex.example("Subscribe", ex.WEBHOOK_CREATE, request=True),
            ex.example("Created (the secret is shown only now)", ex.WEBHOOK_CREATED, status="201"),
        ],
    ),
    update=extend_schema(
        summary="Replace a subscription",
        tags=["webhooks"],
        examples=[ex.example("Subscription", ex.WEBHOOK_CREATE, request=True), ex.example("Updated", ex.WEBHOOK)],
    ),
    partial_update=extend_schema(
        summary="Change a subscription (e.g. pause it)",
        tags=["webhooks"],
        examples=[
            ex.example("Pause", {"active": False}, request=True),
            ex.example("Updated", ex.WEBHOOK | {"active": False}),
        ],
    ),
    destroy=extend_schema(
        summary="Delete a subscription and its delivery log", tags=["webhooks"], examples=[ex.NOT_FOUND]
    ),
)
class WebhookSubscriptionViewSet(viewsets.ModelViewSet):
    serializer_class = WebhookSubscriptionSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return WebhookSubscription.objects.none()
        return WebhookSubscription.objects.filter(owner=self.request.user).order_by("-id")

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        secret = serializer.validated_data.get("secret") or new_secret()
        with transaction.atomic():
            # The owner's row is locked so that concurrent requests cannot pass the cap together.
            get_user_model().objects.select_for_update().filter(pk=request.user.pk).first()
            limit = settings.SEM_WEBHOOK_MAX_SUBSCRIPTIONS_PER_USER
            if WebhookSubscription.objects.filter(owner=request.user).count() >= limit:
                raise ValidationError(
                    {
                        "url": [
                            ErrorDetail(
                                f"You already have {limit} webhook subscriptions, the most allowed; delete one first.",
                                code="too_many_subscriptions",
                            )
                        ]
                    }
                )
            subscription = serializer.save(owner=request.user, secret=secret)
        data = dict(self.get_serializer(subscription).data, secret=secret)  # shown once, like API tokens
        return Response(data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Delivery log of a subscription, newest first",
        tags=["webhooks"],
        responses=WebhookDeliverySerializer(many=True),
        examples=[ex.example("Deliveries", ex.page(ex.DELIVERY))],
    )
    @action(detail=True, methods=["get"])
    def deliveries(self, request, pk=None):
        subscription = self.get_object()
        page = self.paginate_queryset(subscription.deliveries.order_by("-id"))
        serializer = WebhookDeliverySerializer(page, many=True, context=self.get_serializer_context())
        return self.get_paginated_response(serializer.data)
