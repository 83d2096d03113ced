"""No 500 from any input, and JSON errors for every /api/ answer (issue 11, items 5 and 6).

- `HostileInputMiddleware` refuses NUL characters in the path and the query string before any view
  uses them as a look-up (PostgreSQL cannot store or compare text with NUL: Django raises DataError),
  and turns a DataError that a request body still causes (a NUL in a JSON string or a form field) into
  a 400 instead of a 500.
- The error handlers (`handler400` ... `handler500`, wired in portal/urls.py) and `csrf_failure`
  (CSRF_FAILURE_VIEW) answer the API's JSON error body `{"error": {"code", "message", "fields"}}`
  for paths under /api/, and Django's usual pages everywhere else.
"""

from __future__ import annotations

import logging

from django.db import DataError
from django.http import HttpResponse, JsonResponse
from django.views import defaults
from django.views.csrf import csrf_failure as django_csrf_failure

logger = logging.getLogger(__name__)

NUL = "\x00"
NUL_MESSAGE = "NUL characters are not allowed in a request."
DATA_MESSAGE = "The request contains a value that cannot be stored or compared (for example a NUL character)."


def is_api_path(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def api_error(status: int, code: str, message: str) -> JsonResponse:
    from portal.api.exceptions import error_body

    return JsonResponse(error_body(code, message), status=status)


def _bad_request(request, message: str):
    if is_api_path(request.path):
        return api_error(400, "invalid", message)
    if "text/html" in request.headers.get("Accept", ""):
        return HttpResponse(
            f"<!doctype html><title>Bad request</title><h1>Bad request</h1><p>{message}</p>", status=400
        )
    # The upload page's scripts read `reason`; other clients the API-style body.
    return JsonResponse(
        {"outcome": "rejected", "reason": message, "error": {"code": "invalid", "message": message, "fields": {}}},
        status=400,
    )


def _has_nul(request) -> bool:
    if NUL in request.path or NUL in request.path_info:
        return True
    return any(NUL in key or any(NUL in value for value in values) for key, values in request.GET.lists())


class HostileInputMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if _has_nul(request):
            return _bad_request(request, NUL_MESSAGE)
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, DataError):
            # Raised for values the database refuses (a NUL in text, a number out of range): the
            # client's input, not the server's state. Logged, since a bug can cause it too.
            logger.warning("400 for a value the database refused in %s %s: %s", request.method, request.path, exception)
            return _bad_request(request, DATA_MESSAGE)
        return None


# --- Error pages: JSON under /api/ --------------------------------------------------------------------


def handler400(request, exception=None):
    if is_api_path(request.path):
        return api_error(400, "bad_request", "The request could not be understood.")
    return defaults.bad_request(request, exception)


def handler403(request, exception=None):
    if is_api_path(request.path):
        return api_error(403, "permission_denied", "You do not have permission to perform this action.")
    return defaults.permission_denied(request, exception)


def handler404(request, exception=None):
    if is_api_path(request.path):
        return api_error(404, "not_found", "No such API endpoint; see /api/docs/.")
    return defaults.page_not_found(request, exception)


def handler500(request):
    if is_api_path(request.path):
        return api_error(500, "server_error", "Internal server error; it has been logged.")
    return defaults.server_error(request)


def csrf_failure(request, reason: str = ""):
    if is_api_path(request.path):
        return api_error(
            403,
            "csrf_failed",
            "CSRF check failed: send the X-CSRFToken header with a session, "
            "or authenticate with an API token (Authorization: Bearer ...).",
        )
    return django_csrf_failure(request, reason=reason)
