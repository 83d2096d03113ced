"""Webhook delivery task (REST API issue): thin; the work and the retry policy live in
portal.services.delivery.webhooks.attempt_delivery, so they are testable without a broker."""

from celery import shared_task


@shared_task(bind=True, name="workers.webhooks.deliver", queue="default", acks_late=True, ignore_result=True)
def deliver_webhook(self, delivery_id: int) -> str:
    from portal.services.delivery.webhooks import attempt_delivery

    outcome = attempt_delivery(delivery_id)
    if outcome.retry_in_s is not None:
        # The attempt budget is counted on the delivery row (SEM_WEBHOOK_MAX_ATTEMPTS), not by Celery,
        # so that a lost message or a worker restart cannot reset it.
        raise self.retry(countdown=outcome.retry_in_s, max_retries=None)
    return outcome.status
