"""Webhooks for LIMS systems: fan domain events out to subscriptions and deliver them, signed.

Flow: portal.events emits after commit -> a listener here writes one WebhookDelivery row per matching
subscription -> on commit, the task workers.webhooks.deliver is sent by name per row -> attempt_delivery()
POSTs the JSON and records the outcome. The delivery rows are the log shown in the admin.

Signature: X-SEM-Signature = "sha256=" + hex HMAC-SHA256(secret, f"{timestamp}.{body}"), with the
timestamp from X-SEM-Timestamp, so a receiver can reject both forged and replayed requests.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from portal import events
from portal.models import Label, ModelVersion, SEMImage, TrainingRun, WebhookDelivery, WebhookSubscription
from portal.permissions import visible_projects
from portal.representations import SUMMARY_RELATED, image_summary
from portal.services.delivery import broker_queue, outbound, queueing

logger = logging.getLogger(__name__)

EVENTS = [choice.value for choice in WebhookSubscription.Event]
USER_AGENT = "SEM-Portal-Webhooks/1"
RESPONSE_EXCERPT_CHARS = 500


# --- Signing -----------------------------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: str, body: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, timestamp: str, body: str, signature: str, *, tolerance_s: int = 300) -> bool:
    """What a receiver does: constant-time comparison, and refuse stale timestamps (replays)."""
    try:
        age = abs(time.time() - int(timestamp))
    except (TypeError, ValueError):
        return False
    return age <= tolerance_s and hmac.compare_digest(sign(secret, timestamp, body), signature or "")


# --- Fan-out: events -> delivery rows ------------------------------------------------------------

_registered = False


def register_listeners() -> None:
    """Idempotent, so that a second AppConfig.ready() (some test runners) does not double-deliver."""
    global _registered
    if _registered:
        return
    _registered = True
    events.subscribe("label.changed", on_label_changed)
    events.subscribe("image.classified", on_image_classified)
    events.subscribe("model.promoted", on_model_promoted)
    events.subscribe("training.finished", on_training_finished)


def on_label_changed(
    label_id: int | None = None, image_id: int | None = None, withdrawn_label_id: int | None = None, **_ignored
) -> None:
    """A new current label, or an undo: then `withdrawn_label_id` names the label taken back and `label`
    is the image's label again (the previous one), or None when the image has no label any more."""
    label = None
    if label_id is not None:
        label = Label.objects.select_related("category", "created_by", "image__sample").filter(pk=label_id).first()
        if label is None:  # undone before the event ran (the undo sends its own event)
            return
        image = label.image
    else:
        image = SEMImage.objects.select_related(*SUMMARY_RELATED).filter(pk=image_id).first()
        if image is None:
            return
    data = {"label": label_data(label) if label else None, "image": image_data(image)}
    if withdrawn_label_id is not None:
        data["withdrawn_label_id"] = withdrawn_label_id
    dispatch("label.changed", data, project_id=image.sample.project_id)


def on_image_classified(image_id: int | None = None, image_ids: list[int] | None = None, **_ignored) -> None:
    """One delivery per image and subscriber; a batch shares one subscription look-up per project."""
    ids = list(image_ids or []) + ([image_id] if image_id is not None else [])
    images = SEMImage.objects.filter(pk__in=ids).select_related(*SUMMARY_RELATED).order_by("pk")
    subscribers: dict[int, list[WebhookSubscription]] = {}
    messages = []
    for image in images:
        project_id = image.sample.project_id
        if project_id not in subscribers:
            subscribers[project_id] = matching_subscriptions("image.classified", project_id)
        messages += [(subscription, {"image": image_data(image)}) for subscription in subscribers[project_id]]
    create_deliveries("image.classified", messages)


def on_model_promoted(model_version_id: int | None = None, **payload) -> None:
    model_version_id = model_version_id or payload.get("model_id") or payload.get("version_id")
    model = ModelVersion.objects.select_related("promoted_by").filter(pk=model_version_id).first()
    if model is not None:
        dispatch("model.promoted", {"model": model_data(model), "previous_version": payload.get("previous_version")})


def on_training_finished(run_id: int | None = None, **payload) -> None:
    run_id = run_id or payload.get("training_run_id")
    run = TrainingRun.objects.select_related("model_version").filter(pk=run_id).first()
    if run is not None:
        dispatch("training.finished", {"training_run": training_run_data(run)})


def dispatch(event: str, data: dict, *, project_id: int | None = None) -> list[WebhookDelivery]:
    """Create a pending delivery per matching subscription and enqueue them once committed."""
    return create_deliveries(
        event, [(subscription, data) for subscription in matching_subscriptions(event, project_id)]
    )


def create_deliveries(event: str, messages: list[tuple[WebhookSubscription, dict]]) -> list[WebhookDelivery]:
    occurred_at = timezone.now().isoformat()
    with transaction.atomic():
        # bulk_create sets the primary keys on PostgreSQL and SQLite, which the enqueue needs.
        deliveries = WebhookDelivery.objects.bulk_create(
            [
                WebhookDelivery(
                    subscription=subscription,
                    event=event,
                    payload={"event": event, "occurred_at": occurred_at, "data": data},
                )
                for subscription, data in messages
            ]
        )
        ids = [delivery.pk for delivery in deliveries]
        if ids:
            transaction.on_commit(lambda: enqueue_deliveries(ids))
    return deliveries


def matching_subscriptions(event: str, project_id: int | None) -> list[WebhookSubscription]:
    """Active subscriptions to `event` whose owner may see the project the event belongs to.

    Filtered in Python because JSON containment is not portable to SQLite (the quick start), and a
    portal has tens of subscriptions, not thousands.
    """
    candidates = WebhookSubscription.objects.filter(active=True, owner__is_active=True).select_related("owner")
    matches = []
    for subscription in candidates:
        if event not in (subscription.events or []):
            continue
        if project_id is not None and not _may_see(subscription, project_id):
            continue
        matches.append(subscription)
    return matches


def _may_see(subscription: WebhookSubscription, project_id: int) -> bool:
    if subscription.project_id not in (None, project_id):
        return False
    return visible_projects(subscription.owner).filter(pk=project_id).exists()


def sweep_unsent_deliveries(limit: int = 500) -> int:
    """Re-send deliveries that were never attempted and whose message is not waiting in the broker:
    it was lost (the broker was down when they were queued, say). A delivery merely waiting behind
    others is left alone. Attempted ones carry their own retry messages."""
    cutoff = timezone.now() - timedelta(seconds=settings.SEM_PENDING_SWEEP_AFTER_S)
    candidates = list(
        WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING, attempts=0, created_at__lt=cutoff)
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    if not candidates:
        return 0
    waiting = broker_queue.waiting_ids(queueing.DELIVER_WEBHOOK) or set()
    ids = [pk for pk in candidates if pk not in waiting]
    enqueue_deliveries(ids)
    return len(ids)


def enqueue_deliveries(delivery_ids: list[int]) -> None:
    queueing.enqueue_webhook_deliveries(delivery_ids)


# --- Payload data ------------------------------------------------------------------------------


def image_data(image: SEMImage) -> dict:
    """The shared image representation (portal.representations: the API's names and values)."""
    return image_summary(image)


def label_data(label: Label) -> dict:
    return {
        "id": label.pk,
        "image_id": label.image_id,
        "category": label.category.slug,
        "source": label.source,
        "created_by": label.created_by.get_username() if label.created_by else None,
        "created_at": label.created_at.isoformat(),
        "is_current": label.is_current,
    }


def model_data(model: ModelVersion) -> dict:
    return {
        "version": model.version,
        "url": f"/api/models/{model.version}/",
        "status": model.status,
        "arch": model.arch,
        "accuracy": model.accuracy,
        "macro_f1": model.macro_f1,
        "promoted_at": model.promoted_at.isoformat() if model.promoted_at else None,
        "promoted_by": model.promoted_by.get_username() if model.promoted_by else None,
    }


def training_run_data(run: TrainingRun) -> dict:
    return {
        "id": run.pk,
        "url": f"/api/training-runs/{run.pk}/",
        "status": run.status,
        "trigger": run.trigger,
        "model_version": run.model_version.version if run.model_version else None,
        "duration_s": run.duration_s,
        "error": run.error,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


# --- Delivery ----------------------------------------------------------------------------------


def refused_destination(url: str) -> str | None:
    """Why the portal must not POST to this URL, or None: portal.services.delivery.outbound's strict parser and
    destination check (link-local, multicast, reserved and unspecified addresses always; loopback and
    this host's own addresses unless SEM_WEBHOOK_ALLOW_LOOPBACK). A name that does not resolve is
    not refused here; its delivery fails as a connection error and is retried."""
    return outbound.destination_refusal(url)


@dataclass(frozen=True)
class DeliveryOutcome:
    status: str  # WebhookDelivery.Status value, or "skipped" when there was nothing to do
    retry_in_s: float | None = None  # set when the caller should try again after this delay


def backoff_seconds(attempt: int) -> float:
    """Exponential: base, 2x base, 4x base, ... capped, so a receiver that is down for an hour is not hammered."""
    return min(settings.SEM_WEBHOOK_BACKOFF_S * 2 ** (attempt - 1), settings.SEM_WEBHOOK_BACKOFF_MAX_S)


def attempt_delivery(delivery_id: int) -> DeliveryOutcome:
    """One attempt. Transient failures (connection, timeout, 429, 5xx) ask for a retry until the
    attempt budget is spent; any other answer is final."""
    delivery = _claim(delivery_id)
    if delivery is None:
        return DeliveryOutcome("skipped")
    subscription = delivery.subscription
    if not subscription.active or not subscription.owner.is_active:
        # Paused, or its owner was deactivated: nothing more is sent, not even retries of older events.
        reason = "the subscription is paused" if not subscription.active else "the subscription's owner is deactivated"
        return _record_final(delivery, WebhookDelivery.Status.FAILED, None, "", f"Not sent: {reason}.")
    try:
        # Parsed, resolved and checked at every attempt (the name may resolve elsewhere than when it was
        # subscribed), and sent to the address that was checked.
        response = _post(delivery)
    except outbound.RefusedURL as exc:
        return _record_final(
            delivery, WebhookDelivery.Status.FAILED, None, "", f"Webhooks may not be sent there: {exc}"
        )
    except outbound.DeliveryConnectionError as exc:
        return _record_transient(delivery, None, f"{type(exc).__name__}: {exc}")
    excerpt = response.text[:RESPONSE_EXCERPT_CHARS]
    status = response.status
    if 200 <= status < 300:
        return _record_final(delivery, WebhookDelivery.Status.DELIVERED, status, excerpt, "")
    if status == 429 or status >= 500:
        return _record_transient(delivery, status, f"HTTP {status}", excerpt)
    return _record_final(
        delivery, WebhookDelivery.Status.FAILED, status, excerpt, f"HTTP {status}: the receiver refused the delivery"
    )


def _claim(delivery_id: int) -> WebhookDelivery | None:
    """Count the attempt with UPDATE ... WHERE status = pending: a duplicate task message for a
    delivery that is already delivered, failed or deleted does nothing."""
    claimed = WebhookDelivery.objects.filter(pk=delivery_id, status=WebhookDelivery.Status.PENDING).update(
        attempts=F("attempts") + 1
    )
    if not claimed:
        return None
    return WebhookDelivery.objects.select_related("subscription__owner").get(pk=delivery_id)


def request_body(delivery: WebhookDelivery) -> str:
    return json.dumps({"delivery_id": delivery.pk, **delivery.payload}, separators=(",", ":"), sort_keys=True)


def _post(delivery: WebhookDelivery) -> outbound.Answer:
    body = request_body(delivery)
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-SEM-Event": delivery.event,
        "X-SEM-Delivery": str(delivery.pk),
        "X-SEM-Timestamp": timestamp,
        "X-SEM-Signature": sign(delivery.subscription.secret, timestamp, body),
    }
    # No redirects (a signed POST must not be replayed to wherever a 30x points), no proxies, and the
    # connection goes to the address that was checked.
    return outbound.post(
        delivery.subscription.url, body.encode("utf-8"), headers, timeout_s=settings.SEM_WEBHOOK_TIMEOUT_S
    )


def _record_transient(delivery, status_code, error, excerpt="") -> DeliveryOutcome:
    if delivery.attempts >= settings.SEM_WEBHOOK_MAX_ATTEMPTS:
        return _record_final(
            delivery,
            WebhookDelivery.Status.FAILED,
            status_code,
            excerpt,
            f"{error} (gave up after {delivery.attempts} attempts)",
        )
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        response_status=status_code, response_excerpt=excerpt, error=error
    )
    return DeliveryOutcome(WebhookDelivery.Status.PENDING, retry_in_s=backoff_seconds(delivery.attempts))


def _record_final(delivery, status, status_code, excerpt, error) -> DeliveryOutcome:
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=status,
        response_status=status_code,
        response_excerpt=excerpt,
        error=error,
        delivered_at=timezone.now() if status == WebhookDelivery.Status.DELIVERED else None,
    )
    if status == WebhookDelivery.Status.FAILED:
        logger.warning("webhook delivery %s to %s failed: %s", delivery.pk, delivery.subscription.url, error)
    return DeliveryOutcome(status)
