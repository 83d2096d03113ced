"""Role checks for the web UI, on top of portal.permissions (the same rules as the REST API).

Every view is wrapped in exactly one of these decorators, so a page cannot forget its role check:
anonymous users are sent to the login page, signed-in users without the role get 403, and objects
outside the user's projects are looked up through visible_* querysets and answer 404.
"""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied

from portal.permissions import is_admin, is_curator


def member_required(view):
    """Any signed-in user; the visible_* querysets scope what they see."""
    return login_required(view)


SIGNED_OUT_MESSAGE = (
    "You are signed out (the session ended, perhaps in another tab). Sign in again, then retry the failed files."
)


def member_required_json(view):
    """For endpoints that the page scripts fetch: a signed-out request answers 401 JSON, not a redirect
    to the login page (which fetch would follow and hand to the script as an HTML 200)."""

    @wraps(view)
    def checked(request, *args, **kwargs):
        if not request.user.is_authenticated:
            from django.http import JsonResponse

            return JsonResponse(
                {
                    "outcome": "rejected",
                    "reason": SIGNED_OUT_MESSAGE,
                    "signed_out": True,
                    "error": {"code": "not_authenticated", "message": SIGNED_OUT_MESSAGE, "fields": {}},
                },
                status=401,
            )
        return view(request, *args, **kwargs)

    return checked


def curator_required(view=None, *, needed_for: str = "Reviewing labels"):
    """`@curator_required`, or `@curator_required(needed_for="The inbox")`: the 403 names the page refused."""
    if view is None:
        return lambda inner: curator_required(inner, needed_for=needed_for)

    @wraps(view)
    def checked(request, *args, **kwargs):
        if not is_curator(request.user):
            raise PermissionDenied(f"{needed_for} needs the curator role in a project.")
        return view(request, *args, **kwargs)

    return login_required(checked)


def admin_required(view):
    @wraps(view)
    def checked(request, *args, **kwargs):
        if not is_admin(request.user):
            raise PermissionDenied("Only administrators can do this.")
        return view(request, *args, **kwargs)

    return login_required(checked)


MAX_ID_DIGITS = 18  # every 18-digit number fits a 64-bit primary key, on PostgreSQL and SQLite alike


def parse_id(value) -> int | None:
    """An id from a query or form parameter, or None: ASCII digits only (str.isdigit() also accepts "²",
    which int() refuses) and short enough for the database (SQLite overflows on 30 digits)."""
    text = str(value or "")
    if not text.isascii() or not text.isdigit() or len(text) > MAX_ID_DIGITS:
        return None
    return int(text)


def posted_category_or_404(request):
    """The active category whose id was posted as `category`; 404 for anything else (a name, a NUL, a
    number out of range), never a 500 from the look-up."""
    from django.http import Http404

    from portal.models import Category

    value = parse_id(request.POST.get("category"))
    if value is None:
        raise Http404("No such category.")
    category = Category.objects.filter(pk=value, active=True).first()
    if category is None:
        raise Http404("No such category.")
    return category
