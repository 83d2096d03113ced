"""Brute-force protection of the password logins, /login/ and /admin/login/ (issue 11, item 3).

django-axes counts failed logins in the database (not the cache: logins keep working, and keep being
counted, while the cache Redis is down) and locks out, for SEM_LOGIN_LOCKOUT_MINUTES after the last
failure:

- an account after SEM_LOGIN_FAILURE_LIMIT failures from anywhere (password guessing spread over
  many addresses), and
- a client address after as many failures on any accounts (password spraying from one address).

A success does not reset the counts (else an attacker with an account of their own could log into it
between guesses and guess forever). Staff unlock at once in the admin (Axes > Access attempts: delete the
entry) or with `manage.py axes_reset_username NAME` / `axes_reset_ip ADDRESS`. The locked-out answer is
429 with Retry-After and a page that says what happened and what to do.
"""

from __future__ import annotations

import math

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.shortcuts import render


class LoginGuardBackend(AxesStandaloneBackend):
    """Axes' lockout check, for the logins that come with a request (every web login does). Code that
    authenticates without one (the shell, the test client's login()) has no client to count."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def client_ip(request) -> str | None:
    """The client's address: REMOTE_ADDR, or behind SEM_PROXY_COUNT reverse proxies the address the
    outermost of them saw (the entry it appended to X-Forwarded-For; entries further left are the
    client's own claims and are ignored)."""
    count = getattr(settings, "SEM_PROXY_COUNT", 0)
    if count:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if len(forwarded) >= count:
            return forwarded[-count]
    return request.META.get("REMOTE_ADDR") or None


def lockout_response(request, original_response=None, credentials=None):
    minutes = lockout_minutes()
    response = render(
        request,
        "registration/locked_out.html",
        {
            "minutes": minutes,
            "failure_limit": settings.AXES_FAILURE_LIMIT,
        },
        status=429,
    )
    response["Retry-After"] = str(minutes * 60)
    return response


def lockout_minutes() -> int:
    return max(1, math.ceil(settings.AXES_COOLOFF_TIME.total_seconds() / 60))
