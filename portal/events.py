"""Domain events raised after commit. The webhook delivery (REST API issue) subscribes here.

Kept as a tiny registry so that portal code never imports Celery tasks directly on the request path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)
_listeners: dict[str, list[Callable[..., None]]] = {}


def subscribe(event: str, listener: Callable[..., None]) -> None:
    _listeners.setdefault(event, []).append(listener)


def emit(event: str, **payload) -> None:
    for listener in _listeners.get(event, []):
        try:
            listener(**payload)
        except Exception:  # an event consumer must never break the transaction that raised it
            logger.exception("listener for %s failed", event)


def emit_label_changed(
    label_id: int | None, *, image_id: int | None = None, withdrawn_label_id: int | None = None
) -> None:
    """A curated label changed: `label_id` is the image's current label (None when an undo left the image
    unlabelled); an undo also names the image and the withdrawn label."""
    emit("label.changed", label_id=label_id, image_id=image_id, withdrawn_label_id=withdrawn_label_id)
