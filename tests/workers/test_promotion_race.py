"""A promotion and a roll-back in quick succession, with real workers: every current prediction ends up
from the production model, however the re-classification batches interleave (issue 23, item 1).

Two workers run at once, as in production. The first model change's batch is held at its insert of
predictions (a SHARE lock on the prediction table from another connection) until the second change has
been made and its own re-classification had its chance to run, which is what happened in the field:
the earlier batch finished after the later change and overwrote its result.
"""

from __future__ import annotations

import re
import threading
import time

import pytest
from django.db import connection

from portal.models import ModelVersion, SEMImage
from portal.services.learning import promotion
from tests.worker_fixtures import install_model
from tests.workers.test_worker_processes import _a_worker_waits_on_a_lock, _blocked_prediction_inserts

pytestmark = [pytest.mark.worker, pytest.mark.slow]

IMAGES = 6


def _predicted_by(ids) -> set:
    return set(SEMImage.objects.filter(pk__in=ids).values_list("predicted_by", flat=True))


def _backlog_tasks_done(workers) -> int:
    pattern = r"Task workers\.reclassify_backlog\[[^\]]+\] succeeded"
    return sum(len(re.findall(pattern, worker.log())) for worker in workers)


def _in_thread(action) -> threading.Thread:
    """Run a model change on its own connection: with the fix it waits for the held batch's commit."""

    def run():
        try:
            action()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _second_change_while_first_batch_is_held(workers, ids, second_change) -> None:
    with _blocked_prediction_inserts():
        workers[0].wait_until(_a_worker_waits_on_a_lock, what="the first change's batch held at its insert")
        assert SEMImage.objects.filter(pk__in=ids, claimed_at__isnull=False).count() == IMAGES
        backlog_runs = _backlog_tasks_done(workers)
        thread = _in_thread(second_change)
        # Give the second change's re-classification time to run (without the fix it returns at once,
        # finding every image claimed); with the fix the change itself waits for the held batch.
        deadline = time.monotonic() + 8
        while _backlog_tasks_done(workers) == backlog_runs and time.monotonic() < deadline:
            time.sleep(0.2)
    thread.join(timeout=30)
    assert not thread.is_alive()


def test_a_promotion_rolled_back_at_once_leaves_no_prediction_of_the_demoted_model(
    worker_factory, production_model, trained_artifact, sample, user, upload_images
):
    workers = [worker_factory(), worker_factory()]
    ids = [image.pk for image in upload_images(sample, user, IMAGES)]
    workers[0].wait_until(lambda: _predicted_by(ids) == {production_model.pk}, what="uploads classified by v1")
    v2 = install_model(trained_artifact, 2, status=ModelVersion.Status.CANDIDATE)

    promotion.promote(v2)
    _second_change_while_first_batch_is_held(workers, ids, promotion.rollback)

    assert promotion.production_model().pk == production_model.pk
    workers[0].wait_until(
        lambda: _predicted_by(ids) == {production_model.pk}, timeout=40, what="every image back on v1's prediction"
    )
    time.sleep(2)  # nothing late overwrites them again
    assert _predicted_by(ids) == {production_model.pk}


def test_a_roll_back_followed_at_once_by_a_promotion_leaves_only_the_new_models_predictions(
    worker_factory, trained_artifact, nffa_categories, sample, user, upload_images
):
    v1 = install_model(trained_artifact, 1, status=ModelVersion.Status.PRODUCTION)
    ModelVersion.objects.filter(pk=v1.pk).update(status=ModelVersion.Status.RETIRED)
    v2 = install_model(trained_artifact, 2, status=ModelVersion.Status.PRODUCTION)
    workers = [worker_factory(), worker_factory()]
    ids = [image.pk for image in upload_images(sample, user, IMAGES)]
    workers[0].wait_until(lambda: _predicted_by(ids) == {v2.pk}, what="uploads classified by v2")
    v3 = install_model(trained_artifact, 3, status=ModelVersion.Status.CANDIDATE)

    promotion.rollback()  # v1 has no stored predictions for these images: its batch computes them
    _second_change_while_first_batch_is_held(workers, ids, lambda: promotion.promote(v3))

    assert promotion.production_model().pk == v3.pk
    workers[0].wait_until(lambda: _predicted_by(ids) == {v3.pk}, timeout=40, what="every image on v3's prediction")
    time.sleep(2)
    assert _predicted_by(ids) == {v3.pk}
