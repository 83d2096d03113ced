"""Stored files in responses, after the caller's access check: streamed from the storage (the file system,
or the object store's response body, nothing spooled first), or with SEM_SIGNED_DOWNLOADS on object storage
a redirect to a signed URL that expires after SEM_SIGNED_URL_EXPIRY_S. Either way only a request that
passed the check learns where the bytes are: a member of another project gets the view's 404, never a URL.
"""

from __future__ import annotations

from django.conf import settings
from django.http import FileResponse, HttpResponse, HttpResponseRedirect


def open_stored(storage, name: str):
    """A readable stream of a stored file; raises FileNotFoundError when it is not stored."""
    opener = getattr(storage, "open_stream", None)
    return opener(name) if opener else storage.open(name, "rb")


def stored_file_response(storage, name: str, *, content_type: str, filename: str, attachment: bool) -> HttpResponse:
    if settings.SEM_SIGNED_DOWNLOADS and hasattr(storage, "signed_url"):
        url = storage.signed_url(
            name,
            expire_s=settings.SEM_SIGNED_URL_EXPIRY_S,
            filename=filename,
            content_type=content_type,
            attachment=attachment,
        )
        response = HttpResponseRedirect(url)
        response["Cache-Control"] = "private, no-store"  # the URL expires; the browser must ask again
        return response
    return FileResponse(
        open_stored(storage, name), content_type=content_type, as_attachment=attachment, filename=filename
    )
