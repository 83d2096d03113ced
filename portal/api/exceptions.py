"""One error body for every 4xx: {"error": {"code": ..., "message": ..., "fields": {...}}}.

LIMS clients branch on `code` (stable, machine-readable) and show `message`; `fields` carries the
per-field messages of a 400 so that a form or a log line can say which value was wrong.
"""

from __future__ import annotations

import errno
import logging

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFilesSent
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.db.models import ProtectedError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "too_large"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


class Duplicate(Conflict):
    """A unique value (lab sample ID, LIMS ID) that is taken: 409, the field named in `fields`."""

    default_code = "duplicate"

    def __init__(self, message: str, fields: dict):
        super().__init__(message)
        self.fields = fields


class ReferenceNotFound(exceptions.NotFound):
    """The body names an object that does not exist or that you cannot see (a sample, a project, a
    category): 404, like the same object in the path, the field named in `fields`."""

    default_code = "not_found"

    def __init__(self, message: str, fields: dict):
        super().__init__(message)
        self.fields = fields


class InsufficientStorage(exceptions.APIException):
    status_code = status.HTTP_507_INSUFFICIENT_STORAGE
    default_detail = "The server has no storage space left for uploads. Nothing was stored; try again later."
    default_code = "insufficient_storage"


class ServiceUnavailable(exceptions.APIException):
    """A service the portal depends on (the database, the cache, the task broker) is down or
    restarting: 503 with Retry-After. Uploads are safe to retry (same Idempotency-Key or same bytes)."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "A service the portal depends on is temporarily unavailable; retry in a few seconds."
    default_code = "unavailable"
    retry_after_s = 5


class DatabaseUnavailable(ServiceUnavailable):
    """The database dropped or refused the connection (a restart, a failover): retry shortly.
    The request's transaction rolled back; an upload that had already committed says so itself
    (`StoredButUnavailable`)."""

    default_detail = "The database is temporarily unavailable; retry in a few seconds."


class StoredButUnavailable(ServiceUnavailable):
    """The upload was stored (committed), then the database failed before the answer was complete."""

    default_detail = (
        "The image was stored, but the database became unavailable before the answer was complete; "
        "retry in a few seconds (with the same Idempotency-Key or file) to get it."
    )


def dependency_errors() -> tuple[type[BaseException], ...]:
    """Connection errors of the cache (Redis), the task broker (kombu) and the object store: an outage, not a bug.
    Database errors are handled on their own (OperationalError, InterfaceError)."""
    errors: list[type[BaseException]] = [ConnectionError]  # the builtin: refused, reset, aborted
    try:
        import redis.exceptions

        errors += [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]
    except ImportError:  # pragma: no cover - redis is a dependency
        pass
    try:
        import botocore.exceptions  # the object store (MEDIA_STORAGE_URL=s3://...) unreachable or too slow

        errors += [botocore.exceptions.ConnectionError, botocore.exceptions.ReadTimeoutError]
    except ImportError:  # pragma: no cover - boto3 is a dependency
        pass
    try:
        import kombu.exceptions

        errors.append(kombu.exceptions.OperationalError)
    except ImportError:  # pragma: no cover - kombu comes with Celery
        pass
    return tuple(errors)


DEPENDENCY_ERRORS = dependency_errors()


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def api_exception_handler(exc, context):
    exc = _translate(exc)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a real bug: let Django log it and answer 500
    response.data = _body_for(exc, response)
    if isinstance(exc, ServiceUnavailable):
        response["Retry-After"] = str(exc.retry_after_s)
    return response


def _translate(exc):
    """Django-level exceptions that are the client's fault become DRF exceptions."""
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    if isinstance(exc, exceptions.ValidationError):
        return _conflict_or_missing_reference(exc)
    if isinstance(exc, ProtectedError):
        return Conflict(
            "This object is still referenced (for example a sample with images) and cannot be deleted.",
            code="protected",
        )
    if isinstance(exc, (RequestDataTooBig, TooManyFilesSent)):
        return PayloadTooLarge(str(exc) or None)
    if isinstance(exc, (OperationalError, InterfaceError)):
        logger.warning("database unavailable: %s", exc)
        return DatabaseUnavailable()
    if isinstance(exc, DEPENDENCY_ERRORS):
        logger.warning("a dependency is unavailable: %s: %s", type(exc).__name__, exc)
        return ServiceUnavailable()
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        logger.warning("no storage space left: %s", exc)
        return InsufficientStorage()
    if isinstance(exc, SuspiciousOperation):
        return exceptions.ParseError("The request could not be parsed.")
    return exc


# A request that is well-formed but names a taken unique value is a conflict with the server's state (409),
# one that names an object that is not there is a 404: the schema cannot express either, so a 400 ("your
# request is malformed") would be wrong. Only when every field error is of that one kind.
_CONFLICT_CODES = {"unique", "too_many_subscriptions"}
_MISSING_CODES = {"does_not_exist"}


def _conflict_or_missing_reference(exc: exceptions.ValidationError):
    if not isinstance(exc.detail, dict):
        return exc
    codes = set(_leaf_codes(exc.get_codes()))
    if not codes or not codes <= _CONFLICT_CODES | _MISSING_CODES:
        return exc
    fields = {key: _messages(value) for key, value in exc.detail.items()}
    first = next(iter(fields.values()))
    message = first[0] if isinstance(first, list) and first and isinstance(first[0], str) else str(first)
    if codes & _MISSING_CODES:  # a missing object explains the rest (nothing to conflict with)
        return ReferenceNotFound(message, fields)
    conflict = Duplicate(message, fields)
    if codes != {"unique"}:
        conflict.detail = exceptions.ErrorDetail(message, code=sorted(codes - {"unique"})[0])
    return conflict


def _leaf_codes(codes):
    if isinstance(codes, dict):
        for value in codes.values():
            yield from _leaf_codes(value)
    elif isinstance(codes, list):
        for value in codes:
            yield from _leaf_codes(value)
    else:
        yield codes


def _body_for(exc, response) -> dict:
    if isinstance(exc, exceptions.ValidationError):
        return _validation_body(exc)
    if isinstance(exc, Http404):
        return error_body("not_found", "Not found.")
    detail = getattr(exc, "detail", None)
    code = _first_code(exc)
    message = str(detail) if detail is not None else response.status_text
    return error_body(code, message, getattr(exc, "fields", None))


def _validation_body(exc: exceptions.ValidationError) -> dict:
    detail = exc.detail
    if isinstance(detail, dict):
        fields = {key: _messages(value) for key, value in detail.items()}
        general = fields.pop("non_field_errors", None)
        message = general[0] if general else "Invalid input: see the fields for details."
        code = _codes(exc).get("non_field_errors", ["invalid"])[0] if general else "invalid"
        return error_body(code if isinstance(code, str) else "invalid", message, fields)
    messages = _messages(detail)
    return error_body("invalid", messages[0] if messages else "Invalid input.")


def _messages(value):
    if isinstance(value, dict):
        return {key: _messages(item) for key, item in value.items()}
    if isinstance(value, list):
        flat = [_messages(item) for item in value]
        return flat
    return str(value)


def _codes(exc) -> dict:
    codes = exc.get_codes()
    return codes if isinstance(codes, dict) else {}


def _first_code(exc) -> str:
    codes = exc.get_codes() if hasattr(exc, "get_codes") else getattr(exc, "default_code", "error")
    while isinstance(codes, (list, dict)):
        codes = next(iter(codes.values() if isinstance(codes, dict) else codes), "error")
    return str(codes or "error")


class IngestRejected(exceptions.APIException):
    """An upload the ingestion service refused: 400 with its code, the message on the `file` field."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "rejected"

    def __init__(self, code: str, message: str):
        super().__init__(message, code=code)
        self.fields = {"file": [message]}
