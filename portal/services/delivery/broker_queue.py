"""What is waiting in the broker: the sweeper's way to tell a lost message from a late one.

The sweeper re-sends work whose message may have been lost (the broker restarted empty, the send
failed). Under load the same work is often merely waiting behind thousands of other messages; a
re-send then doubles the queue (issue 12 counted 4,751 redundant tasks after a few backlogs). So before
re-sending, the sweeper asks the broker which messages of a task are still there.

Waiting means: in one of the queue's lists (Redis: one list per priority step), or delivered to a
worker and not acknowledged yet (Redis `unacked` hash: running, reserved, or held for a retry's
countdown). kombu returns an unacknowledged message to its queue after the visibility timeout, so a
message held by a worker that died is not lost either: it runs again once that timeout has passed.

`waiting_args(task_name)` returns the argument lists of those messages, or None when the broker
cannot be read (then callers fall back to re-sending: a duplicate is harmless, a lost task is not).
Supported: Redis and the quick start's filesystem broker.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterable, Iterator

from django.conf import settings

logger = logging.getLogger(__name__)

# kombu's Redis transport: one list per priority step, named queue + separator + step (step 0: the
# queue's own name); delivered, unacknowledged messages in a hash.
REDIS_PRIORITY_SEPARATOR = "\x06\x16"
REDIS_UNACKED_KEY = "unacked"
# A scan reads at most this many messages per queue (a backlog beyond it is not scanned: the sweeper
# then re-sends nothing for that task this time, as the queue is evidently far from empty).
SCAN_LIMIT = 200_000


class QueueTooLong(Exception):
    pass


def waiting_args(task_name: str) -> list[list] | None:
    """The positional arguments of every message of `task_name` waiting in the broker, or None when
    the broker cannot be inspected."""
    try:
        return [args for name, args in _waiting_messages() if name == task_name]
    except QueueTooLong:
        return None
    except Exception as error:  # noqa: BLE001 - an unreadable broker must not stop the sweep
        logger.warning("could not inspect the broker's queues: %s", error)
        return None


def waiting_ids(task_name: str) -> set[int] | None:
    """The ids named by waiting messages of a task whose first argument is an id or a list of ids."""
    found = waiting_args(task_name)
    if found is None:
        return None
    ids: set[int] = set()
    for args in found:
        first = args[0] if args else None
        ids.update(first if isinstance(first, list) else [first])
    return {int(pk) for pk in ids if isinstance(pk, int | str) and str(pk).isdigit()}


def _waiting_messages() -> Iterator[tuple[str, list]]:
    url = settings.CELERY_BROKER_URL
    if url.startswith("filesystem"):
        raw = _filesystem_messages(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
    elif url.startswith(("redis://", "rediss://", "unix://")):
        raw = _redis_messages(url, _queue_names())
    else:
        raise ValueError(f"cannot inspect the broker {url.split(':', 1)[0]}")
    for payload in raw:
        parsed = _task_and_args(payload)
        if parsed:
            yield parsed


def _queue_names() -> list[str]:
    from portal.celery_app import app

    return [queue.name for queue in app.conf.task_queues]


def _redis_messages(url: str, queues: Iterable[str]) -> Iterator[bytes]:
    import redis

    client = redis.Redis.from_url(url)
    try:
        for queue in queues:
            for step in settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("priority_steps", [0]):
                key = f"{queue}{REDIS_PRIORITY_SEPARATOR}{step}" if step else queue
                if client.llen(key) > SCAN_LIMIT:
                    raise QueueTooLong(key)
                yield from client.lrange(key, 0, -1)
        for value in client.hvals(REDIS_UNACKED_KEY):
            yield json.dumps(json.loads(value)[0]).encode()  # [message, exchange, routing key]
    finally:
        client.close()


def _filesystem_messages(folder: str) -> Iterator[bytes]:
    try:
        entries = [entry for entry in os.scandir(folder) if entry.name.endswith(".msg")]
    except FileNotFoundError:
        return
    if len(entries) > SCAN_LIMIT:
        raise QueueTooLong(folder)
    for entry in entries:
        try:
            with open(entry.path, "rb") as message:
                yield message.read()
        except FileNotFoundError:
            continue  # a worker took it meanwhile


def _task_and_args(payload: bytes) -> tuple[str, list] | None:
    """(task name, positional args) of a Celery protocol 2 message in kombu's JSON envelope."""
    try:
        message = json.loads(payload)
        name = message["headers"]["task"]
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return name, list(args)
    except (ValueError, KeyError, TypeError, IndexError) as error:
        logger.debug("not a task message: %s", error)
        return None
