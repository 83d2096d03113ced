"""Token management pages for signed-in users: list, create (the secret is shown once), revoke."""

from __future__ import annotations

from django import forms
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from portal.models import ApiToken
from portal.services.tokens import create_token, revoke_token


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What uses it, e.g. “LIMS production”.")


@never_cache  # the page that shows a new secret must not be cached anywhere
@login_required
def token_list(request):
    form = TokenForm(request.POST or None)
    new_secret = None
    if request.method == "POST" and form.is_valid():
        created = create_token(request.user, form.cleaned_data["name"])
        new_secret, form = created.secret, TokenForm()
    tokens = ApiToken.objects.filter(user=request.user).order_by("revoked_at", "-created_at")
    return render(request, "account/tokens.html", {"form": form, "tokens": tokens, "new_secret": new_secret})


@login_required
@require_POST
def token_revoke(request, pk: int):
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)  # someone else's token: 404
    revoke_token(token)
    return redirect("account:tokens")


app_name = "account"
urlpatterns = [
    path("", token_list, name="tokens"),
    path("<int:pk>/revoke/", token_revoke, name="token_revoke"),
]
