"""Per-user API tokens: a random secret shown once; the database keeps only its SHA-256 and a prefix.

A leaked database dump therefore gives no usable credential, and the prefix lets a user recognise
which token a log line or a LIMS configuration refers to.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.utils import timezone

from portal.models import ApiToken

SECRET_MARKER = "sem_"  # makes leaked secrets easy to spot with secret scanners and grep
PREFIX_LENGTH = 12
# Writing last_used_at on every request would turn every GET into a database write; once a minute
# is precise enough for "is this token still in use?".
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class NewToken:
    token: ApiToken
    secret: str  # the only time the plain secret exists outside the client


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_token(user, name: str, expires_at=None) -> NewToken:
    secret = SECRET_MARKER + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        name=name.strip() or "API token",
        prefix=secret[:PREFIX_LENGTH],
        key_hash=hash_secret(secret),
        expires_at=expires_at,
    )
    return NewToken(token=token, secret=secret)


def revoke_token(token: ApiToken) -> ApiToken:
    """Idempotent: revoking a revoked token keeps its first revocation time."""
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    token.refresh_from_db(fields=["revoked_at"])
    return token


def active_tokens(user):
    return ApiToken.objects.filter(user=user, revoked_at__isnull=True)


def authenticate_secret(secret: str) -> ApiToken | None:
    """The active, unexpired token with this secret and an active user, or None. Marks the token as used."""
    token = token_for_secret(secret)
    if token is None or token.is_expired:
        return None
    _touch(token)
    return token


def token_for_secret(secret: str) -> ApiToken | None:
    """The unrevoked token of an active user with this secret, expired or not (to say that it expired)."""
    if not secret or not secret.startswith(SECRET_MARKER):
        return None
    return (
        ApiToken.objects.select_related("user")
        .filter(key_hash=hash_secret(secret), revoked_at__isnull=True, user__is_active=True)
        .first()
    )


def _touch(token: ApiToken) -> None:
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
