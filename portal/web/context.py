"""Template context for the navigation bar (registered in settings.TEMPLATES)."""

from __future__ import annotations

from django.utils.functional import SimpleLazyObject

from portal.permissions import is_admin, is_curator


def navigation(request):
    user = getattr(request, "user", None)
    # Lazy: JSON endpoints and pages without the navigation bar pay no query for it.
    return {
        "nav_is_curator": SimpleLazyObject(lambda: bool(user and is_curator(user))),
        "nav_is_admin": is_admin(user),
    }
