"""Brute-force protection of the password logins (issue 11, item 3).

The class: unlimited password guesses at a login form (before: 40 wrong passwords on /login/, then the
right one logged in). Guesses are now counted per account (from any address) and per client address
(on any accounts), in the database, so the protection holds while the cache is down; the lockout is a
clear 429 page with Retry-After, and staff unlock in the admin.
"""

from __future__ import annotations

import datetime

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

pytestmark = pytest.mark.django_db

PASSWORD = "right-horse-battery-staple"
LOGINS = {"web": "/login/", "admin": "/admin/login/"}


@pytest.fixture(autouse=True)
def _small_limit(settings):
    settings.AXES_FAILURE_LIMIT = 5
    settings.AXES_COOLOFF_TIME = datetime.timedelta(minutes=15)


@pytest.fixture
def victim(django_user_model):
    return django_user_model.objects.create_user("victim", "victim@example.org", PASSWORD, is_staff=True)


def attempt(client: Client, url: str, username: str, password: str, address: str = "198.51.100.7"):
    return client.post(url, {"username": username, "password": password, "next": "/"}, REMOTE_ADDR=address)


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def assert_locked_out(response):
    assert response.status_code == 429, (response.status_code, response.content[:300])
    text = response.content.decode()
    assert "Too many failed sign-in attempts" in text and "15 minutes" in text and "administrator" in text
    assert response["Retry-After"] == "900"


@pytest.mark.parametrize("where", LOGINS)
def test_guessing_one_account_is_locked_out_even_with_the_right_password_afterwards(where, victim):
    client = Client()
    for _ in range(4):
        response = attempt(client, LOGINS[where], "victim", "wrong")
        assert response.status_code == 200  # the form again, with its error
    assert_locked_out(attempt(client, LOGINS[where], "victim", "wrong"))  # the limit's failure locks
    response = attempt(client, LOGINS[where], "victim", PASSWORD)
    assert_locked_out(response)
    assert not logged_in(client)


def test_an_account_is_locked_whatever_the_addresses_the_guesses_come_from(victim):
    for index in range(5):
        attempt(Client(), "/login/", "victim", f"wrong-{index}", address=f"203.0.113.{index + 1}")
    client = Client()
    assert_locked_out(attempt(client, "/login/", "victim", PASSWORD, address="192.0.2.99"))
    assert not logged_in(client)


def test_an_address_spraying_many_accounts_is_locked_out(django_user_model, victim):
    for index in range(5):
        attempt(Client(), "/login/", f"user{index}", "Winter2025!")
    client = Client()
    assert_locked_out(attempt(client, "/admin/login/", "victim", PASSWORD))
    # The account itself is not locked: its owner logs in from elsewhere.
    owner = Client()
    assert attempt(owner, "/login/", "victim", PASSWORD, address="192.0.2.1").status_code == 302
    assert logged_in(owner)


def test_logging_into_ones_own_account_between_guesses_does_not_reset_the_count(django_user_model, victim):
    django_user_model.objects.create_user("mallory", "m@example.org", "mallory-own-password")
    for index in range(6):
        attempt(Client(), "/login/", "victim", f"wrong-{index}")
        attempt(Client(), "/login/", "mallory", "mallory-own-password")
    assert_locked_out(attempt(Client(), "/login/", "victim", PASSWORD, address="192.0.2.50"))


def test_an_admin_unlocks_in_the_admin(django_user_model, victim):
    from axes.models import AccessAttempt

    for _ in range(5):
        attempt(Client(), "/login/", "victim", "wrong")
    assert_locked_out(attempt(Client(), "/login/", "victim", PASSWORD))
    admin = django_user_model.objects.create_superuser("boss", "boss@example.org", "boss-password")
    staff = Client()
    staff.force_login(admin)
    listing = staff.get("/admin/axes/accessattempt/")
    assert listing.status_code == 200 and "victim" in listing.content.decode()
    ids = [str(pk) for pk in AccessAttempt.objects.filter(username="victim").values_list("pk", flat=True)]
    response = staff.post(
        "/admin/axes/accessattempt/", {"action": "delete_selected", "_selected_action": ids, "post": "yes"}
    )
    assert response.status_code == 302
    client = Client()
    assert attempt(client, "/login/", "victim", PASSWORD).status_code == 302
    assert logged_in(client)


def test_the_lockout_ends_after_the_cool_off_and_a_command_unlocks_too(victim):
    from axes.models import AccessAttempt

    for _ in range(5):
        attempt(Client(), "/login/", "victim", "wrong")
    assert_locked_out(attempt(Client(), "/login/", "victim", PASSWORD))
    AccessAttempt.objects.update(attempt_time=timezone.now() - datetime.timedelta(minutes=16))
    assert attempt(Client(), "/login/", "victim", PASSWORD).status_code == 302
    for _ in range(5):
        attempt(Client(), "/login/", "victim", "wrong")
    call_command("axes_reset_username", "victim")
    assert attempt(Client(), "/login/", "victim", PASSWORD).status_code == 302


def test_logins_work_and_are_counted_while_the_cache_is_down(settings, victim):
    """The counts live in the database: a dead cache Redis neither blocks logins nor lifts the limit."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:9/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    client = Client()
    assert attempt(client, "/login/", "victim", PASSWORD).status_code == 302
    assert logged_in(client)
    for _ in range(5):
        attempt(Client(), "/login/", "victim", "wrong")
    assert_locked_out(attempt(Client(), "/login/", "victim", PASSWORD))


def test_the_client_address_behind_a_proxy_is_the_one_the_proxy_saw(settings, rf):
    from portal.login_guard import client_ip

    request = rf.get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="1.2.3.4, 198.51.100.7")
    assert client_ip(request) == "10.0.0.2"  # no proxy configured: the header is the client's own claim
    settings.SEM_PROXY_COUNT = 1
    assert client_ip(request) == "198.51.100.7"  # what our proxy appended; "1.2.3.4" is a forgery
