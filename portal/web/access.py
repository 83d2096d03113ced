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


def curator_required(view):
    @wraps(view)
    def checked(request, *args, **kwargs):
        if not is_curator(request.user):
            raise PermissionDenied("Reviewing labels needs the curator role in a project.")
        return view(request, *args, **kwargs)

    return login_required(checked)


def admin_required(view):
    @wraps(view)
    def checked(request, *args, **kwargs):
        if not is_admin(request.user):
            raise PermissionDenied("Only administrators can do this.")
        return view(request, *args, **kwargs)

    return login_required(checked)
