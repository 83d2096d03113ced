"""Token management pages for signed-in users: list, create (the secret is shown once), revoke."""

from __future__ import annotations

import secrets
from datetime import datetime, time, timedelta

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from portal.models import ApiToken
from portal.services.delivery.tokens import create_token, revoke_token

NEW_SECRET_KEY = "api_token_new_pad"
NEW_SECRET_COOKIE = "sem_new_token"


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What uses it, e.g. “LIMS production”.")
    expires = forms.DateField(
        required=False,
        label="Valid until",
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="Optional: the last day the token works (it is refused from the next midnight on); "
        "empty: until you revoke it.",
    )

    def clean_expires(self):
        day = self.cleaned_data["expires"]
        if day is not None and day < timezone.localdate():
            raise forms.ValidationError("That day is past: pick today or a later day.")
        return day

    def expires_at(self):
        """The first moment the token is refused: midnight after its last valid day."""
        day = self.cleaned_data.get("expires")
        if day is None:
            return None
        return timezone.make_aware(datetime.combine(day + timedelta(days=1), time.min))


@never_cache  # the page that shows a new secret must not be cached anywhere
@login_required
def token_list(request):
    """Post/redirect/get: a reload after creating a token creates no second one. The new secret goes
    through the session to the next page view, which shows it once and forgets it."""
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        created = create_token(request.user, form.cleaned_data["name"], expires_at=form.expires_at())
        response = redirect("account:tokens")
        _hand_over_secret(request, response, created.secret)
        return response
    new_secret = _take_secret(request)
    tokens = ApiToken.objects.filter(user=request.user).order_by("revoked_at", "-created_at")
    response = render(request, "account/tokens.html", {"form": form, "tokens": tokens, "new_secret": new_secret})
    if NEW_SECRET_COOKIE in request.COOKIES:
        response.delete_cookie(NEW_SECRET_COOKIE, path=request.path)
    return response


def _hand_over_secret(request, response, secret: str) -> None:
    """Split the secret between the session and a short-lived cookie (a one-time pad): neither the
    session table nor the browser alone holds it, and the next page view joins and forgets both."""
    data = secret.encode()
    pad = secrets.token_bytes(len(data))
    request.session[NEW_SECRET_KEY] = pad.hex()
    response.set_cookie(
        NEW_SECRET_COOKIE,
        bytes(a ^ b for a, b in zip(data, pad)).hex(),
        max_age=300,
        path=request.path,
        secure=settings.SESSION_COOKIE_SECURE,
        httponly=True,
        samesite="Lax",
    )


def _take_secret(request) -> str | None:
    pad, masked = request.session.pop(NEW_SECRET_KEY, None), request.COOKIES.get(NEW_SECRET_COOKIE)
    if not pad or not masked:
        return None
    try:
        pad_bytes, masked_bytes = bytes.fromhex(pad), bytes.fromhex(masked)
    except ValueError:
        return None
    if len(pad_bytes) != len(masked_bytes):
        return None
    return bytes(a ^ b for a, b in zip(masked_bytes, pad_bytes)).decode("ascii", "replace")


@login_required
@require_POST
def token_revoke(request, pk: int):
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)  # someone else's token: 404
    revoke_token(token)
    messages.success(request, f"Token “{token.name}” revoked: clients that send it are refused from now on.")
    return redirect("account:tokens")


app_name = "account"
urlpatterns = [
    path("", token_list, name="tokens"),
    path("<int:pk>/revoke/", token_revoke, name="token_revoke"),
]
