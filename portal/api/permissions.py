"""DRF permission classes over the shared roles in portal/permissions.py.

Project scoping is done by the querysets (visible_*), so another project's object is a 404, never a
403 that would confirm it exists; these classes only add the role checks on top.
"""

from rest_framework.permissions import SAFE_METHODS, BasePermission

from portal.permissions import is_admin


class IsPortalAdmin(BasePermission):
    message = "Only portal administrators may do this."

    def has_permission(self, request, view):
        return is_admin(request.user)


class ReadOnlyOrPortalAdmin(BasePermission):
    message = "Only portal administrators may change this."

    def has_permission(self, request, view):
        return request.method in SAFE_METHODS or is_admin(request.user)
