"""Per-token throttling: each LIMS integration gets its own budget, independent of its user's others.

The counters live in the shared cache (CACHE_URL, Redis in production). A cache outage must not take
the API down: `ThrottleCache` then counts in this process's memory instead (each web process enforces
the rate on its own share of the requests, so a client may get up to one budget per process), logs a
warning at most once a minute, and tries the shared cache again after a few seconds.
"""

from __future__ import annotations

import logging
import threading
import time

from django.core.cache import cache as shared_cache
from django.core.cache.backends.locmem import LocMemCache
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from portal.models import ApiToken

logger = logging.getLogger(__name__)


def cache_errors() -> tuple[type[BaseException], ...]:
    """What a cache backend raises when its server or disk is unavailable."""
    errors: list[type[BaseException]] = [OSError]  # file cache (disk), and socket errors
    try:
        import redis.exceptions
    except ImportError:  # pragma: no cover - redis is a dependency
        pass
    else:
        errors.append(redis.exceptions.RedisError)
    return tuple(errors)


CACHE_ERRORS = cache_errors()


class ThrottleCache:
    """The shared cache, with this process's memory as the fallback while the shared one fails.

    After a failure the shared cache is skipped for `retry_after_s` (a dead Redis host would otherwise
    cost every request a connection timeout); the next request after that tries it again.
    """

    retry_after_s = 5.0
    log_every_s = 60.0

    def __init__(self, shared=shared_cache) -> None:
        self.shared = shared
        self.local = LocMemCache("throttle-fallback", {"OPTIONS": {"MAX_ENTRIES": 10_000}})
        self._lock = threading.Lock()
        self._down_until = 0.0  # monotonic time before which the shared cache is not tried
        self._outage_started: float | None = None
        self._last_log = float("-inf")

    @property
    def degraded(self) -> bool:
        return self._outage_started is not None

    def get(self, key, default=None):
        return self._call("get", key, default)

    def set(self, key, value, timeout=None):
        return self._call("set", key, value, timeout)

    def _call(self, method: str, *args):
        if time.monotonic() >= self._down_until:
            try:
                result = getattr(self.shared, method)(*args)
            except CACHE_ERRORS as error:
                self._failed(error)
            else:
                self._recovered()
                return result
        return getattr(self.local, method)(*args)

    def _failed(self, error: BaseException) -> None:
        now = time.monotonic()
        with self._lock:
            self._down_until = now + self.retry_after_s
            if self._outage_started is None:
                self._outage_started = now
            if now - self._last_log < self.log_every_s:
                return
            self._last_log = now
            down_for = now - self._outage_started
        logger.warning(
            "API throttling: the shared cache is unavailable (%s: %s) for %.0f s; counting requests "
            "in this process until it is back",
            type(error).__name__,
            error,
            down_for,
        )

    def _recovered(self) -> None:
        if self._outage_started is None:
            return
        with self._lock:
            started, self._outage_started = self._outage_started, None
            self._last_log = float("-inf")
        if started is not None:
            logger.warning("API throttling: the shared cache is back after %.0f s", time.monotonic() - started)


throttle_cache = ThrottleCache()


class PerTokenRateThrottle(SimpleRateThrottle):
    """Keyed on the API token when one is used, else on the user (session) or the client address."""

    scope = "api"
    cache = throttle_cache

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

    def get_cache_key(self, request, view):
        # Per user, not per token: tokens are free to create, and the web upload shares this budget.
        if request.user and request.user.is_authenticated:
            return self.cache_format % {"scope": self.scope, "ident": f"user-{request.user.pk}"}
        return super().get_cache_key(request, view)

    def allow_request(self, request, view):
        if request.method != "POST":
            return True
        return super().allow_request(request, view)
