"""API token authentication: `Authorization: Bearer <secret>` (or `Token <secret>`)."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from portal.services.delivery.tokens import authenticate_secret, token_for_secret

KEYWORDS = {"bearer", "token"}


class ApiTokenAuthentication(authentication.BaseAuthentication):
    """Sets request.auth to the ApiToken, which the per-token throttle keys on."""

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].decode("latin-1").lower() not in KEYWORDS:
            return None  # not ours: let session authentication try
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header: use 'Bearer <token>'.")
        try:
            secret = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("The token contains invalid characters.") from None
        token = authenticate_secret(secret)
        if token is None:
            raise exceptions.AuthenticationFailed(_refusal(secret))
        return token.user, token

    def authenticate_header(self, request):
        # Makes DRF answer 401 (not 403) to anonymous requests.
        return 'Bearer realm="api"'


def _refusal(secret: str) -> str:
    """Why a token was refused: an expired one says when it expired and where to get a new one."""
    token = token_for_secret(secret)
    if token is not None and token.is_expired:
        when = timezone.localtime(token.expires_at).strftime("%Y-%m-%d %H:%M %Z")
        return f"This token expired on {when}; create a new one at /account/tokens/."
    return "Invalid or revoked token."


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "portal.api.authentication.ApiTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A personal API token from /account/tokens/, sent as `Authorization: Bearer sem_...`.",
        }
