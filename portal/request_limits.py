"""Request bodies are capped before anything reads them (issue 11, item 4).

Django reads a request body the first time something touches `request.POST` or `request.FILES`, and
the CSRF check does so for every POST (it looks for the form's token there before the header): a
multipart body larger than FILE_UPLOAD_MAX_MEMORY_SIZE is then spooled to disk, whoever sent it. So
before any view or the CSRF check runs (`process_view`, placed before CsrfViewMiddleware), on the
declared Content-Length (Django never reads past it, and reads nothing without it):

- a client that is not logged in (no session, no valid API token) may send at most
  ANONYMOUS_MAX_BODY_BYTES (a login form is a few hundred bytes), and its files are kept in memory
  only: an anonymous request never writes a file;
- an upload (the web upload endpoint, POST /api/images/) at most SEM_MAX_UPLOAD_BYTES plus
  MULTIPART_ALLOWANCE_BYTES for the form's other fields and the multipart framing;
- anything else at most DATA_UPLOAD_MAX_MEMORY_SIZE plus the same allowance;

else 413 with a clear reason, before a byte of the body is read. The web upload endpoint is also
throttled here, per user, with the REST API's upload rate (SEM_API_UPLOAD_RATE; the same counter as
session uploads through the API), so a refused upload is never read either.

`limit_wsgi_body` does the same at the WSGI layer for gunicorn (portal/wsgi.py): no body longer than the
largest upload reaches Django, and a chunked body (no Content-Length, which Django would silently read
as empty) is refused with 411.
"""

from __future__ import annotations

import functools
import json
import logging

from django.conf import settings
from django.core.files.uploadhandler import MemoryFileUploadHandler
from django.http import HttpResponse, JsonResponse

from portal.byte_sizes import human_bytes
from portal.request_guard import api_error, is_api_path

logger = logging.getLogger(__name__)

ANONYMOUS_MAX_BODY_BYTES = 64 * 1024
MULTIPART_ALLOWANCE_BYTES = 1024 * 1024
# Views whose POST carries one image file (URL names).
UPLOAD_VIEWS = frozenset({"web:upload_file", "api:image-list"})
WEB_UPLOAD_VIEWS = frozenset({"web:upload_file"})


def declared_length(meta) -> int:
    try:
        return max(0, int(meta.get("CONTENT_LENGTH") or 0))
    except (TypeError, ValueError):
        return 0  # what Django reads then: nothing


def max_upload_body_bytes() -> int:
    return settings.SEM_MAX_UPLOAD_BYTES + MULTIPART_ALLOWANCE_BYTES


class RequestBodyLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        length = declared_length(request.META)
        view_name = getattr(request.resolver_match, "view_name", "")
        user = self._user(request, length)
        if user is None:
            request.upload_handlers = [MemoryFileUploadHandler()]  # never a file on disk
            if length > ANONYMOUS_MAX_BODY_BYTES:
                return too_large(
                    request,
                    f"Requests from clients that are not logged in may carry at most "
                    f"{human_bytes(ANONYMOUS_MAX_BODY_BYTES)}; this one declares {human_bytes(length)}. "
                    f"Log in (or send your API token) first.",
                )
            return None
        is_upload = request.method == "POST" and view_name in UPLOAD_VIEWS
        limit = (
            max_upload_body_bytes() if is_upload else settings.DATA_UPLOAD_MAX_MEMORY_SIZE + MULTIPART_ALLOWANCE_BYTES
        )
        if length > limit:
            what = (
                f"the largest accepted file is {human_bytes(settings.SEM_MAX_UPLOAD_BYTES)}"
                if is_upload
                else f"this endpoint accepts at most {human_bytes(limit)}"
            )
            return too_large(request, f"The request body is {human_bytes(length)}; {what}. Nothing was read or stored.")
        if is_upload and view_name in WEB_UPLOAD_VIEWS:
            return web_upload_throttled(request) or web_upload_with_several_files(request)
        return None

    @staticmethod
    def _user(request, length: int):
        """The logged-in user or the API token's user; None for anyone else. The token is only looked up
        when the body is larger than an anonymous one may be (DRF authenticates it again in the view)."""
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return user
        if length <= ANONYMOUS_MAX_BODY_BYTES:
            return None
        from portal.services.delivery.tokens import authenticate_secret

        parts = request.META.get("HTTP_AUTHORIZATION", "").split()
        if len(parts) == 2 and parts[0].lower() in ("bearer", "token"):
            token = authenticate_secret(parts[1])
            if token is not None:
                return token.user
        return None


def several_files_message(files) -> str | None:
    """The refusal of a single-file upload request that carries several files (issue 11, item 8), or None."""
    names = [upload.name for _field, uploads in files.lists() for upload in uploads]
    if len(names) <= 1:
        return None
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (
        f"This request carries {len(names)} files ({shown}); an upload request takes exactly one file. "
        f"Send one request per file; nothing was stored."
    )


def web_upload_with_several_files(request):
    """The web upload endpoint stores one file per request: 400 for several, before any is stored."""
    message = several_files_message(request.FILES)
    if message is None:
        return None
    return JsonResponse(
        {
            "outcome": "rejected",
            "code": "too_many_files",
            "reason": message,
            "error": {"code": "too_many_files", "message": message, "fields": {"file": [message]}},
        },
        status=400,
    )


def too_large(request, message: str):
    logger.info("413 for %s %s: %s", request.method, request.path, message)
    if is_api_path(request.path):
        response = api_error(413, "too_large", message)
    elif "text/html" in request.headers.get("Accept", ""):
        response = HttpResponse(
            f"<!doctype html><title>Request too large</title><h1>Request too large</h1><p>{message}</p>", status=413
        )
    else:  # the upload page's script shows `reason`
        response = JsonResponse(
            {
                "outcome": "rejected",
                "code": "too_large",
                "reason": message,
                "error": {"code": "too_large", "message": message, "fields": {}},
            },
            status=413,
        )
    response["Connection"] = "close"  # the unread body is not ours to skip
    return response


def web_upload_throttled(request):
    """The REST API's upload throttle for the web upload endpoint: None when allowed, else 429."""
    throttle = _web_upload_throttle_class()()
    if throttle.allow_request(request, None):
        return None
    wait = max(1, round(throttle.wait() or 1))
    message = f"Too many uploads: at most {throttle.rate} per user. Retry in {wait} s; nothing was read or stored."
    response = JsonResponse(
        {
            "outcome": "rejected",
            "code": "throttled",
            "reason": message,
            "error": {"code": "throttled", "message": message, "fields": {}},
        },
        status=429,
    )
    response["Retry-After"] = str(wait)
    response["Connection"] = "close"
    return response


@functools.cache
def _web_upload_throttle_class():
    from portal.api.throttling import UploadRateThrottle  # imports the models: not at start-up

    class WebUploadThrottle(UploadRateThrottle):
        """Keyed like a session user's API uploads: the web and the API share one upload budget."""

        def get_cache_key(self, request, view):
            return self.cache_format % {"scope": self.scope, "ident": f"user-{request.user.pk}"}

    return WebUploadThrottle


def limit_wsgi_body(application):
    """WSGI middleware: 413 for a declared body over the largest upload, 411 for a chunked body,
    before Django (or anything) reads it."""

    def limited(environ, start_response):
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked and not environ.get("CONTENT_LENGTH"):
            return _plain(
                start_response,
                "411 Length Required",
                "Send the request body with a Content-Length (chunked bodies are not accepted).",
            )
        limit = max_upload_body_bytes()
        if declared_length(environ) > limit:
            return _plain(
                start_response,
                "413 Request Entity Too Large",
                f"The request body is larger than the largest accepted upload ({human_bytes(limit)}).",
            )
        return application(environ, start_response)

    return limited


def _plain(start_response, status: str, message: str):
    code = "too_large" if status.startswith("413") else "length_required"
    body = json.dumps({"error": {"code": code, "message": message, "fields": {}}}).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Connection", "close")]
    )
    return [body]
