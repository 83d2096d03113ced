"""Per-token throttling: each LIMS integration gets its own budget, independent of its user's others."""

from __future__ import annotations

from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from portal.models import ApiToken


class PerTokenRateThrottle(SimpleRateThrottle):
    """Keyed on the API token when one is used, else on the user (session) or the client address."""

    scope = "api"

    def get_rate(self):
        # Read at request time (not import time) so that a settings change applies without a restart.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def get_cache_key(self, request, view):
        if isinstance(request.auth, ApiToken):
            ident = f"token-{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user-{request.user.pk}"
        else:
            ident = f"anon-{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


class UploadRateThrottle(PerTokenRateThrottle):
    """Uploads cost far more than reads (hashing, decoding, derivatives), so they get their own budget."""

    scope = "upload"

    def allow_request(self, request, view):
        if request.method != "POST":
            return True
        return super().allow_request(request, view)
