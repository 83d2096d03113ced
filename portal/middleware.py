"""A database that restarts or fails over answers 503 "retry shortly", never a 500 "bug" page.

The REST API does the same in its exception handler (portal/api/exceptions.py); this covers the web
UI. The request's transaction has rolled back (ingestion also removed its files), so retrying is safe.
"""

from __future__ import annotations

import logging

from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 5
MESSAGE = "The database is temporarily unavailable. Nothing was changed; retry in a few seconds."


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        logger.warning("database unavailable during %s %s: %s", request.method, request.path, exception)
        if "text/html" in request.headers.get("Accept", ""):
            response = HttpResponse(f"<!doctype html><title>Unavailable</title><p>{MESSAGE}</p>", status=503)
        else:
            # Scripts (the upload page shows `reason` of a rejected file) and API-style clients.
            response = JsonResponse({"outcome": "rejected", "reason": MESSAGE,
                                     "error": {"code": "unavailable", "message": MESSAGE, "fields": {}}}, status=503)
        response["Retry-After"] = str(RETRY_AFTER_S)
        return response
