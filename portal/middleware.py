"""A dependency that restarts or fails over answers 503 "retry shortly", never a 500 "bug" page.

The database (OperationalError, InterfaceError) and the connection errors of the cache and the task
broker are outages, not bugs. The REST API does the same in its exception handler
(portal/api/exceptions.py); this covers the web UI and anything raised outside a DRF view. The
request's transaction has rolled back (ingestion also removed its files), so retrying is safe; an
upload that had committed is recognised by its bytes on the retry, never stored twice.
"""

from __future__ import annotations

import logging

from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse

from portal.api.exceptions import DEPENDENCY_ERRORS

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 5
MESSAGE = "The database is temporarily unavailable; retry in a few seconds."
DEPENDENCY_MESSAGE = "A service the portal depends on is temporarily unavailable; retry in a few seconds."


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, (OperationalError, InterfaceError)):
            message = MESSAGE
            logger.warning("database unavailable during %s %s: %s", request.method, request.path, exception)
        elif isinstance(exception, DEPENDENCY_ERRORS):
            message = DEPENDENCY_MESSAGE
            logger.warning(
                "a dependency is unavailable during %s %s: %s: %s",
                request.method,
                request.path,
                type(exception).__name__,
                exception,
            )
        else:
            return None
        if "text/html" in request.headers.get("Accept", ""):
            response = HttpResponse(f"<!doctype html><title>Unavailable</title><p>{message}</p>", status=503)
        else:
            # Scripts (the upload page shows `reason` of a rejected file) and API-style clients.
            response = JsonResponse(
                {
                    "outcome": "rejected",
                    "reason": message,
                    "error": {"code": "unavailable", "message": message, "fields": {}},
                },
                status=503,
            )
        response["Retry-After"] = str(RETRY_AFTER_S)
        return response
